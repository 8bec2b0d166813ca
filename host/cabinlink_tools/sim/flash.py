"""The ESP32's SPI flash as the world keeps it: partitions, OTA boot selection, NVS.

What the simulated ``esp32`` module (``platform/esp32.py``) asks for is answered here, by
the ``esp32_*`` operations :func:`install_esp32` registers with the world.

Flash
=====
:class:`SimFlash` is NOR flash in a **sparse file** on the host, one per board, so its
contents survive a power cut and a restart of the firmware process (and of the world, if
it is given the same directory). Erased flash reads 0xFF; a write can only clear bits
(``new = old & data``); only an erase (4096-byte sectors) sets them again. The file stores
every byte **inverted**, so an erased sector is a hole of zeros in the file and an
untouched 4 MiB flash costs no disk space; :meth:`SimFlash.read` and
:meth:`SimFlash.image` give the real bytes.

Partition tables (MicroPython ``ports/esp32/partitions-4MiB*.csv``)
====================================================================
* ``ESP32_GENERIC``: nvs 0x9000/0x6000, phy_init 0xf000/0x1000, factory 0x10000/0x1F0000,
  vfs 0x200000/0x200000 - a single app, **no OTA** (the table the facts file gives;
  newer MicroPython trees shrink factory to 0x1D0000 and add a romfs partition).
* ``ESP32_GENERIC-OTA``: nvs 0x9000/0x4000, otadata 0xd000/0x2000, phy_init 0xf000/0x1000,
  ota_0 0x10000/0x180000, ota_1 0x190000/0x180000, vfs 0x310000/0x0F0000.

A new flash file is "flashed" like a board fresh from ``esptool``: a stub app image
(magic byte 0xE9) in the first app partition (factory, else ota_0); everything else erased.

OTA and rollback (ESP-IDF ``app_update/esp_ota_ops.c``, ``bootloader_utility.c``)
================================================================================
The otadata partition holds two ``esp_ota_select_entry_t`` (32 bytes each, one per 4 KiB
sector: u32 ota_seq, 20-byte label, u32 ota_state, u32 crc = crc32_le(0xFFFFFFFF, seq)),
stored in flash exactly in that format. :meth:`Esp32Flash.boot` runs the bootloader's
selection at every boot of the board (the world's ``hello``): entries still
PENDING_VERIFY become ABORTED (**rollback**: the app that was booted did not call
``mark_app_valid_cancel_rollback()`` before the reset); the valid entry with the highest
sequence number picks slot ``(seq - 1) % n_ota``; a NEW entry becomes PENDING_VERIFY; with
no valid entry the factory app boots, else ota_0 (and on blank otadata the bootloader
writes seq 1 VALID for it). A slot without the image magic is skipped the way the
bootloader tries the next partition. ``set_boot()`` rewrites the other otadata sector with
the next sequence number in state NEW (``esp_rewrite_ota_data``); setting factory erases
otadata. ``mark_app_valid_cancel_rollback()`` sets the active entry VALID; without an
otadata partition it fails with ESP_ERR_NOT_FOUND (OSError(-261)), with no active entry
ESP_FAIL (OSError(1)). Simplified: image validation is the magic byte only (no segment,
checksum or SHA-256 check); no anti-rollback, secure boot or flash encryption.

Errors are raised as MicroPython's esp32 port does (``check_esp_err``): ``OSError(-code,
name)`` for an ESP-IDF error code, except ENOENT (2) for a missing partition.

NVS
===
``esp32.NVS``: per namespace, keys of at most 15 characters, int32 and blob values. A get
of a missing key raises ESP_ERR_NVS_NOT_FOUND as OSError(-4354) (0x1102), of a key of the
other type ESP_ERR_NVS_TYPE_MISMATCH (-4355), a blob into a too small buffer
ESP_ERR_NVS_INVALID_LENGTH (-4364); a too long key or namespace ESP_ERR_NVS_KEY_TOO_LONG
(-4361); a store that no longer fits the partition ESP_ERR_NVS_NOT_ENOUGH_SPACE (-4357).
Changes are visible at once but **persist only once committed** (the API contract:
"nvs_commit() must be called to ensure changes are written to flash"); uncommitted
changes are lost at the next boot or power cut, which is stricter than ESP-IDF 5 (it
writes at once) and catches a missing ``commit()``. The committed store lives in the nvs
partition of the flash file, in a format of this simulation (magic ``SIMNVS1``, length,
JSON), not ESP-IDF's page format: erasing the nvs partition erases it.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .world import OpError, SimBoard, World

SECTOR = 4096
FLASH_4MB = 4 * 1024 * 1024

# esp_partition_type_t / subtypes
TYPE_APP, TYPE_DATA = 0x00, 0x01
SUBTYPE_FACTORY, SUBTYPE_OTA_0, SUBTYPE_TEST = 0x00, 0x10, 0x20
SUBTYPE_DATA_OTA, SUBTYPE_DATA_PHY, SUBTYPE_DATA_NVS, SUBTYPE_DATA_FAT = 0x00, 0x01, 0x02, 0x81
SUBTYPE_ANY = 0xFF
IMAGE_MAGIC = 0xE9

# esp_ota_img_states_t
OTA_NEW, OTA_PENDING_VERIFY, OTA_VALID, OTA_INVALID, OTA_ABORTED = 0, 1, 2, 3, 4
OTA_UNDEFINED = 0xFFFFFFFF
_SEQ_NONE = 0xFFFFFFFF

# ESP-IDF error codes (esp_err.h, nvs.h, esp_ota_ops.h)
ESP_FAIL = -1
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_NVS_NOT_FOUND = 0x1102
ESP_ERR_NVS_TYPE_MISMATCH = 0x1103
ESP_ERR_NVS_NOT_ENOUGH_SPACE = 0x1105
ESP_ERR_NVS_KEY_TOO_LONG = 0x1109
ESP_ERR_NVS_INVALID_LENGTH = 0x110C
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ENOENT = 2
EINVAL = 22
ERR_NAMES = {
    ESP_FAIL: "ESP_FAIL", ESP_ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
    ESP_ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE", ESP_ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND",
    ESP_ERR_NVS_NOT_FOUND: "ESP_ERR_NVS_NOT_FOUND",
    ESP_ERR_NVS_TYPE_MISMATCH: "ESP_ERR_NVS_TYPE_MISMATCH",
    ESP_ERR_NVS_NOT_ENOUGH_SPACE: "ESP_ERR_NVS_NOT_ENOUGH_SPACE",
    ESP_ERR_NVS_KEY_TOO_LONG: "ESP_ERR_NVS_KEY_TOO_LONG",
    ESP_ERR_NVS_INVALID_LENGTH: "ESP_ERR_NVS_INVALID_LENGTH",
    ESP_ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED",
}


class EspError(OpError):
    """An ESP-IDF error as MicroPython's ``check_esp_err`` raises it: OSError(-code, name)."""

    def __init__(self, code: int) -> None:
        super().__init__(-code, ERR_NAMES.get(code, f"ESP_ERR 0x{code:X}"))
        self.code = code


_INVERT = bytes(255 - i for i in range(256))


# ---------------------------------------------------------------------------------------
# NOR flash in a sparse file
# ---------------------------------------------------------------------------------------


class SimFlash:
    """NOR flash of ``size`` bytes kept in the sparse file ``path`` (created if missing).

    Erased = 0xFF, a write ANDs (``new = old & data``), erase works on whole 4096-byte
    sectors. Counts :attr:`erases` (sectors) and :attr:`writes` (calls)."""

    def __init__(self, path: str | Path, size: int = FLASH_4MB) -> None:
        if size <= 0 or size % SECTOR:
            raise ValueError("flash size must be a positive multiple of 4096")
        self.path = Path(path)
        self.size = size
        self.created = not self.path.exists()
        if self.created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:
                f.truncate(size)  # a hole: all erased
        elif self.path.stat().st_size != size:
            raise ValueError(f"{self.path}: holds {self.path.stat().st_size} bytes, not {size}")
        self._fd = os.open(self.path, os.O_RDWR)  # unbuffered: pread/pwrite only
        self.erases = 0
        self.writes = 0

    def _check(self, addr: int, n: int) -> None:
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError(f"flash access 0x{addr:X}+{n} outside 0..0x{self.size:X}")

    def _raw(self, addr: int, n: int) -> bytes:
        raw = os.pread(self._fd, n, addr)
        return raw + bytes(n - len(raw))

    def read(self, addr: int, n: int) -> bytes:
        self._check(addr, n)
        return self._raw(addr, n).translate(_INVERT)

    def write(self, addr: int, data: bytes) -> None:
        """Program: bits can only go from 1 to 0 (stored inverted: OR)."""
        data = bytes(data)
        self._check(addr, len(data))
        if not data:
            return
        old = int.from_bytes(self._raw(addr, len(data)), "big")
        new = old | int.from_bytes(data.translate(_INVERT), "big")
        os.pwrite(self._fd, new.to_bytes(len(data), "big"), addr)
        self.writes += 1

    def _has_data(self, addr: int, n: int) -> bool:
        # False when the whole range is a hole of the sparse file (already erased).
        try:
            pos = os.lseek(self._fd, addr, os.SEEK_DATA)
        except (OSError, AttributeError):
            return True  # no SEEK_DATA (or past the last data): fall back to writing
        return pos < addr + n

    def erase(self, addr: int, n: int) -> None:
        """Erase whole sectors: ``addr`` and ``n`` must be multiples of 4096."""
        if addr % SECTOR or n % SECTOR:
            raise ValueError("flash erase must be 4096-byte aligned")
        self._check(addr, n)
        for a in range(addr, addr + n, SECTOR):
            if self._has_data(a, SECTOR):
                os.pwrite(self._fd, bytes(SECTOR), a)
            self.erases += 1

    def image(self) -> bytes:
        """The whole flash as a real image would read (for esptool-style inspection)."""
        return self.read(0, self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------------------------------
# Partition tables
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionInfo:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    encrypted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "type": self.type, "subtype": self.subtype,
                "addr": self.offset, "size": self.size, "encrypted": self.encrypted}


PARTITION_TABLES: dict[str, tuple[PartitionInfo, ...]] = {
    "ESP32_GENERIC": (
        PartitionInfo("nvs", TYPE_DATA, SUBTYPE_DATA_NVS, 0x9000, 0x6000),
        PartitionInfo("phy_init", TYPE_DATA, SUBTYPE_DATA_PHY, 0xF000, 0x1000),
        PartitionInfo("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000),
        PartitionInfo("vfs", TYPE_DATA, SUBTYPE_DATA_FAT, 0x200000, 0x200000),
    ),
    "ESP32_GENERIC-OTA": (
        PartitionInfo("nvs", TYPE_DATA, SUBTYPE_DATA_NVS, 0x9000, 0x4000),
        PartitionInfo("otadata", TYPE_DATA, SUBTYPE_DATA_OTA, 0xD000, 0x2000),
        PartitionInfo("phy_init", TYPE_DATA, SUBTYPE_DATA_PHY, 0xF000, 0x1000),
        PartitionInfo("ota_0", TYPE_APP, SUBTYPE_OTA_0, 0x10000, 0x180000),
        PartitionInfo("ota_1", TYPE_APP, SUBTYPE_OTA_0 + 1, 0x190000, 0x180000),
        PartitionInfo("vfs", TYPE_DATA, SUBTYPE_DATA_FAT, 0x310000, 0x0F0000),
    ),
}
# A stub app image header: magic, segment count 0, SPI mode/speed/size, entry point.
STUB_IMAGE = bytes([IMAGE_MAGIC, 0x00, 0x02, 0x20]) + struct.pack("<I", 0x40080000) + bytes(16)


# ---------------------------------------------------------------------------------------
# otadata entries
# ---------------------------------------------------------------------------------------


def ota_crc(seq: int) -> int:
    """bootloader_common_ota_select_crc: esp_rom_crc32_le(UINT32_MAX, &seq, 4)."""
    return zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


@dataclass
class OtaEntry:
    """``esp_ota_select_entry_t``: u32 ota_seq, u8 seq_label[20], u32 ota_state, u32 crc."""

    seq: int = _SEQ_NONE
    label: bytes = b"\xff" * 20
    state: int = OTA_UNDEFINED
    crc: int = 0xFFFFFFFF
    _fmt = struct.Struct("<I20sII")

    @classmethod
    def unpack(cls, raw: bytes) -> OtaEntry:
        seq, label, state, crc = cls._fmt.unpack(raw[: cls._fmt.size])
        return cls(seq, label, state, crc)

    def pack(self) -> bytes:
        return self._fmt.pack(self.seq, self.label, self.state, self.crc)

    def crc_ok(self) -> bool:
        return self.crc == ota_crc(self.seq)

    def valid(self) -> bool:  # bootloader_common_ota_select_valid
        return self.seq != _SEQ_NONE and self.crc_ok() and self.state not in (OTA_INVALID, OTA_ABORTED)

    def invalid(self) -> bool:  # bootloader_common_ota_select_invalid
        return self.seq == _SEQ_NONE or self.state in (OTA_INVALID, OTA_ABORTED)

    def blank(self) -> bool:  # initial contents, or a bad CRC
        return self.seq == _SEQ_NONE or not self.crc_ok()


def active_entry(e: list[OtaEntry]) -> int:
    """bootloader_common_get_active_otadata: the valid entry with the higher sequence, or -1."""
    v = [x.valid() for x in e]
    if v[0] and v[1]:
        return 0 if e[0].seq >= e[1].seq else 1
    return 0 if v[0] else 1 if v[1] else -1


# ---------------------------------------------------------------------------------------
# One board's flash: partitions, bootloader, OTA, NVS
# ---------------------------------------------------------------------------------------

NVS_MAGIC = b"SIMNVS1\x00"
NVS_KEY_MAX = 15
_DELETED = object()


@dataclass
class _NvsPending:
    conn: object  # the connection (boot) that made the changes
    changes: dict[tuple[str, str], Any] = field(default_factory=dict)


class Esp32Flash:
    """A board's 4 MiB flash with the partition table of its MicroPython ``variant``."""

    def __init__(self, path: str | Path, variant: str = "ESP32_GENERIC",
                 size: int = FLASH_4MB) -> None:
        if variant not in PARTITION_TABLES:
            raise ValueError(f"unknown MicroPython variant {variant!r} "
                             f"(known: {', '.join(PARTITION_TABLES)})")
        self.variant = variant
        self.table = PARTITION_TABLES[variant]
        self.flash = SimFlash(path, size)
        self.running: PartitionInfo | None = None
        self.boots = 0
        self._nvs_pending: _NvsPending | None = None
        if self.flash.created:
            first = self.default_app()
            if first is not None:
                self.flash.write(first.offset, STUB_IMAGE)

    # --- partitions ------------------------------------------------------------------
    def find(self, type: int = SUBTYPE_ANY, subtype: int = SUBTYPE_ANY,
             label: str | None = None) -> list[PartitionInfo]:
        return [p for p in self.table
                if (type == SUBTYPE_ANY or p.type == type)
                and (subtype == SUBTYPE_ANY or p.subtype == subtype)
                and (label is None or p.label == label)]

    def first(self, type: int, subtype: int = SUBTYPE_ANY, label: str | None = None) -> PartitionInfo | None:
        found = self.find(type, subtype, label)
        return found[0] if found else None

    def by_label(self, label: str) -> PartitionInfo:
        """``Partition(label)``: app partitions are searched first, then data."""
        p = self.first(TYPE_APP, label=label) or self.first(TYPE_DATA, label=label)
        if p is None:
            raise OpError(ENOENT, "ENOENT")
        return p

    def ota_apps(self) -> list[PartitionInfo]:
        out = []
        for i in range(16):
            p = self.first(TYPE_APP, SUBTYPE_OTA_0 + i)
            if p is None:
                break
            out.append(p)
        return out

    def otadata(self) -> PartitionInfo | None:
        return self.first(TYPE_DATA, SUBTYPE_DATA_OTA)

    def default_app(self) -> PartitionInfo | None:
        """find_default_boot_partition: factory, else the first OTA slot, else test."""
        return (self.first(TYPE_APP, SUBTYPE_FACTORY)
                or next(iter(self.ota_apps()), None)
                or self.first(TYPE_APP, SUBTYPE_TEST))

    def has_image(self, p: PartitionInfo) -> bool:
        return self.flash.read(p.offset, 1)[0] == IMAGE_MAGIC

    # --- partition-relative flash access (esp_partition_read/write/erase_range) --------
    def read(self, p: PartitionInfo, off: int, n: int) -> bytes:
        self._bounds(p, off, n)
        return self.flash.read(p.offset + off, n)

    def write(self, p: PartitionInfo, off: int, data: bytes) -> None:
        self._bounds(p, off, len(data))
        self.flash.write(p.offset + off, data)

    def erase_range(self, p: PartitionInfo, off: int, n: int) -> None:
        self._bounds(p, off, n)
        if n % SECTOR:
            raise EspError(ESP_ERR_INVALID_SIZE)
        if off % SECTOR:
            raise EspError(ESP_ERR_INVALID_ARG)
        self.flash.erase(p.offset + off, n)

    @staticmethod
    def _bounds(p: PartitionInfo, off: int, n: int) -> None:
        if off < 0 or off > p.size:
            raise EspError(ESP_ERR_INVALID_ARG)
        if off + n > p.size:
            raise EspError(ESP_ERR_INVALID_SIZE)

    # --- otadata ------------------------------------------------------------------------
    def read_otadata(self) -> list[OtaEntry]:
        od = self.otadata()
        assert od is not None
        return [OtaEntry.unpack(self.flash.read(od.offset + i * SECTOR, 32)) for i in (0, 1)]

    def write_otadata(self, i: int, e: OtaEntry) -> None:
        od = self.otadata()
        assert od is not None
        self.flash.erase(od.offset + i * SECTOR, SECTOR)
        self.flash.write(od.offset + i * SECTOR, e.pack())

    def _rewrite_seq(self, e: list[OtaEntry], i: int, seq: int) -> None:
        e[i].seq = seq
        e[i].crc = ota_crc(seq)
        self.write_otadata(i, e[i])

    # --- the second-stage bootloader ------------------------------------------------------
    def boot(self) -> PartitionInfo | None:
        """Select and "load" the app for this boot (bootloader_utility.c, rollback enabled).
        Returns the running partition (None: nothing bootable, the board would loop)."""
        self.boots += 1
        apps = self.ota_apps()
        factory = self.first(TYPE_APP, SUBTYPE_FACTORY)
        od = self.otadata()
        initial = False
        index = -1  # FACTORY_INDEX
        if od is not None:
            e = self.read_otadata()
            for i in (0, 1):
                if e[i].state == OTA_PENDING_VERIFY:  # never confirmed: roll back
                    e[i].state = OTA_ABORTED
                    self.write_otadata(i, e[i])
            if (e[0].invalid() and e[1].invalid()) or not apps:
                if factory is None:
                    index = 0
                    initial = e[0].blank() and e[1].blank()
            else:
                a = active_entry(e)
                if a != -1:
                    index = (e[a].seq - 1) % len(apps)
                    if e[a].state == OTA_NEW:
                        e[a].state = OTA_PENDING_VERIFY
                        self.write_otadata(a, e[a])
        # load_boot_image: from the chosen index down to factory, then the later slots
        order = list(range(index, -2, -1)) + list(range(index + 1, len(apps)))
        self.running = None
        for i in order:
            p = factory if i == -1 else apps[i] if 0 <= i < len(apps) else None
            if p is None or not self.has_image(p):
                continue
            if initial and i >= 0:  # set_actual_ota_seq
                self.write_otadata(0, OtaEntry(i + 1, b"\xff" * 20, OTA_VALID, ota_crc(i + 1)))
            self.running = p
            break
        self._nvs_pending = None  # uncommitted NVS changes die with the old boot
        return self.running

    # --- esp_ota_ops ------------------------------------------------------------------------
    def get_boot_partition(self) -> PartitionInfo:
        if self.otadata() is None:
            raise OpError(ENOENT, "ENOENT")  # esp_ota_get_boot_partition() returns NULL
        e = self.read_otadata()
        apps = self.ota_apps()
        if (e[0].invalid() and e[1].invalid()) or not apps:
            p = self.default_app()
        else:
            a = active_entry(e)
            p = apps[(e[a].seq - 1) % len(apps)] if a != -1 else self.default_app()
        if p is None:
            raise OpError(ENOENT, "ENOENT")
        return p

    def get_running_partition(self) -> PartitionInfo:
        if self.running is None:
            self.boot()
        if self.running is None:
            raise OpError(ENOENT, "ENOENT")
        return self.running

    def get_next_update_partition(self, start: PartitionInfo) -> PartitionInfo:
        default = None
        next_is_result = False
        for p in self.ota_apps():
            if default is None:
                default = p
            if p == start:
                next_is_result = True
            elif next_is_result:
                return p
        if default is None:
            raise OpError(ENOENT, "ENOENT")
        return default

    def set_boot_partition(self, p: PartitionInfo) -> None:
        if not self.has_image(p):
            raise EspError(ESP_ERR_OTA_VALIDATE_FAILED)
        if p.type != TYPE_APP:
            raise EspError(ESP_ERR_INVALID_ARG)
        od = self.otadata()
        if od is None:
            raise EspError(ESP_ERR_NOT_FOUND)
        if p.subtype == SUBTYPE_FACTORY:
            self.flash.erase(od.offset, od.size)
            return
        apps = self.ota_apps()
        sub = p.subtype & 0x0F
        if not SUBTYPE_OTA_0 <= p.subtype < SUBTYPE_TEST or sub >= len(apps):
            raise EspError(ESP_ERR_INVALID_ARG)
        n = len(apps)
        e = self.read_otadata()
        a = active_entry(e)
        if a != -1:
            seq = e[a].seq
            i = 0
            while seq > (sub + 1) % n + i * n:
                i += 1
            nxt = 1 - a
            e[nxt].state = OTA_NEW
            self._rewrite_seq(e, nxt, (sub + 1) % n + i * n)
        else:
            e[0].state = OTA_NEW
            self._rewrite_seq(e, 0, sub + 1)

    def mark_app_valid(self) -> None:
        """esp_ota_mark_app_valid_cancel_rollback()."""
        if self.otadata() is None:
            raise EspError(ESP_ERR_NOT_FOUND)
        e = self.read_otadata()
        a = active_entry(e)
        if a == -1 or not self.ota_apps():
            raise EspError(ESP_FAIL)  # "Running firmware is factory"
        if e[a].state != OTA_VALID:
            e[a].state = OTA_VALID
            self._rewrite_seq(e, a, e[a].seq)

    def ota_states(self) -> list[tuple[int, int]]:
        """(seq, state) of both otadata entries - for tests and tools."""
        return [(x.seq, x.state) for x in self.read_otadata()] if self.otadata() else []

    # --- NVS ------------------------------------------------------------------------------------
    def _nvs_part(self) -> PartitionInfo:
        p = self.first(TYPE_DATA, SUBTYPE_DATA_NVS)
        if p is None:
            raise EspError(0x1101)  # ESP_ERR_NVS_NOT_INITIALIZED
        return p

    def nvs_committed(self) -> dict[str, dict[str, tuple[str, Any]]]:
        p = self._nvs_part()
        head = self.flash.read(p.offset, 12)
        if head[:8] != NVS_MAGIC:
            return {}
        n = struct.unpack("<I", head[8:12])[0]
        if n > p.size - 12:
            return {}
        try:
            raw = json.loads(self.flash.read(p.offset + 12, n))
        except ValueError:
            return {}
        return {ns: {k: (v[0], v[1]) for k, v in keys.items()} for ns, keys in raw.items()}

    @staticmethod
    def _nvs_blob(store: dict[str, dict[str, tuple[str, Any]]]) -> bytes:
        body = json.dumps(store, sort_keys=True, separators=(",", ":")).encode()
        return NVS_MAGIC + struct.pack("<I", len(body)) + body

    def _pending(self, conn: object) -> _NvsPending:
        if self._nvs_pending is None or self._nvs_pending.conn is not conn:
            self._nvs_pending = _NvsPending(conn)
        return self._nvs_pending

    def _merged(self, conn: object) -> dict[str, dict[str, tuple[str, Any]]]:
        store = self.nvs_committed()
        for (ns, key), v in self._pending(conn).changes.items():
            if v is _DELETED:
                store.get(ns, {}).pop(key, None)
            else:
                store.setdefault(ns, {})[key] = v
        return {ns: keys for ns, keys in store.items() if keys}

    @staticmethod
    def _name(name: str) -> None:
        if not isinstance(name, str) or len(name) > NVS_KEY_MAX:
            raise EspError(ESP_ERR_NVS_KEY_TOO_LONG)

    def nvs_open(self, ns: str) -> None:
        self._nvs_part()
        self._name(ns)

    def nvs_set(self, conn: object, ns: str, key: str, kind: str, value: Any) -> None:
        self._name(ns)
        self._name(key)
        pend = self._pending(conn)
        old = pend.changes.get((ns, key))
        pend.changes[(ns, key)] = (kind, value)
        if len(self._nvs_blob(self._merged(conn))) > self._nvs_part().size:
            if old is None:
                del pend.changes[(ns, key)]
            else:
                pend.changes[(ns, key)] = old
            raise EspError(ESP_ERR_NVS_NOT_ENOUGH_SPACE)

    def nvs_get(self, conn: object, ns: str, key: str, kind: str) -> Any:
        self._name(key)
        v = self._merged(conn).get(ns, {}).get(key)
        if v is None:
            raise EspError(ESP_ERR_NVS_NOT_FOUND)
        if v[0] != kind:
            raise EspError(ESP_ERR_NVS_TYPE_MISMATCH)
        return v[1]

    def nvs_erase_key(self, conn: object, ns: str, key: str) -> None:
        self._name(key)
        if key not in self._merged(conn).get(ns, {}):
            raise EspError(ESP_ERR_NVS_NOT_FOUND)
        self._pending(conn).changes[(ns, key)] = _DELETED

    def nvs_commit(self, conn: object, ns: str) -> None:
        pend = self._pending(conn)
        mine = {k: v for k, v in pend.changes.items() if k[0] == ns}
        if not mine:
            return
        store = self.nvs_committed()
        for (n, key), v in mine.items():
            if v is _DELETED:
                store.get(n, {}).pop(key, None)
            else:
                store.setdefault(n, {})[key] = v
            del pend.changes[(n, key)]
        store = {n: keys for n, keys in store.items() if keys}
        blob = self._nvs_blob(store)
        p = self._nvs_part()
        need = -(-len(blob) // SECTOR) * SECTOR
        self.flash.erase(p.offset, min(p.size, max(need, SECTOR)))
        self.flash.write(p.offset, blob)

    def close(self) -> None:
        self.flash.close()


# ---------------------------------------------------------------------------------------
# The world's esp32_* operations
# ---------------------------------------------------------------------------------------


class Esp32Services:
    """Every board's :class:`Esp32Flash`, created on first use as ``<dir>/<board>.flash``.

    A board's MicroPython variant (its partition table) comes from ``variants[name]``, else
    a ``variant`` attribute of its :class:`SimBoard`, else ``default_variant``."""

    def __init__(self, directory: str | Path, variants: dict[str, str] | None = None,
                 default_variant: str = "ESP32_GENERIC") -> None:
        self.directory = Path(directory)
        self.variants = dict(variants or {})
        self.default_variant = default_variant
        self.flashes: dict[str, Esp32Flash] = {}
        self._booted: dict[str, object] = {}  # board -> the connection it last booted for

    def flash(self, board: SimBoard) -> Esp32Flash:
        f = self.flashes.get(board.name)
        if f is None:
            variant = self.variants.get(board.name) or getattr(board, "variant", None) \
                or self.default_variant
            if variant not in PARTITION_TABLES:
                # ESP32_GENERIC_S3/_C3/_C6 images use the same factory + vfs layout as
                # ESP32_GENERIC (larger flash only grows vfs); the simulation keeps 4 MiB.
                variant = "ESP32_GENERIC-OTA" if variant.endswith("-OTA") else "ESP32_GENERIC"
            f = self.flashes[board.name] = Esp32Flash(self.directory / f"{board.name}.flash", variant)
        return f

    def on_boot(self, board: SimBoard) -> None:
        """A firmware process of ``board`` has started: run the bootloader."""
        self.flash(board).boot()
        self._booted[board.name] = board.conn

    def _ready(self, board: SimBoard) -> Esp32Flash:
        f = self.flash(board)
        if self._booted.get(board.name) is not board.conn:  # booted before install
            self.on_boot(board)
        return f

    def close(self) -> None:
        for f in self.flashes.values():
            f.close()
        self.flashes.clear()

    # --- operation handlers: (board, request) -> reply -----------------------------------
    def _part(self, f: Esp32Flash, req: dict[str, Any]) -> PartitionInfo:
        return f.by_label(req["label"])

    def op_partition(self, b: SimBoard, req: dict[str, Any]) -> Any:
        f = self._ready(b)
        which = req.get("which")
        if which == 0:
            return f.get_boot_partition().as_dict()
        if which == 1:
            return f.get_running_partition().as_dict()
        return f.by_label(req["label"]).as_dict()

    def op_find(self, b: SimBoard, req: dict[str, Any]) -> Any:
        f = self._ready(b)
        return [p.as_dict() for p in f.find(req["type"], req["subtype"], req.get("label"))]

    def op_read(self, b: SimBoard, req: dict[str, Any]) -> Any:
        f = self._ready(b)
        return f.read(self._part(f, req), req["off"], req["n"]).hex()

    def op_write(self, b: SimBoard, req: dict[str, Any]) -> Any:
        # writeblocks(blk, buf) erases first; writeblocks(blk, buf, off) never does.
        f = self._ready(b)
        p = self._part(f, req)
        off = req["off"]
        data = bytes.fromhex(req["data"])
        if req.get("erase"):
            if req.get("block_size", SECTOR) >= SECTOR:
                f.erase_range(p, off, len(data))
                f.write(p, off, data)
            else:
                # Blocks smaller than a sector: read-modify-erase-write the sectors touched.
                f._bounds(p, off, len(data))
                lo = off // SECTOR * SECTOR
                hi = -(-(off + len(data)) // SECTOR) * SECTOR
                buf = bytearray(f.read(p, lo, hi - lo))
                buf[off - lo: off - lo + len(data)] = data
                f.erase_range(p, lo, hi - lo)
                f.write(p, lo, bytes(buf))
        else:
            f.write(p, off, data)

    def op_erase(self, b: SimBoard, req: dict[str, Any]) -> Any:
        f = self._ready(b)
        f.erase_range(self._part(f, req), req["off"], req["n"])

    def op_set_boot(self, b: SimBoard, req: dict[str, Any]) -> Any:
        f = self._ready(b)
        f.set_boot_partition(self._part(f, req))

    def op_next_update(self, b: SimBoard, req: dict[str, Any]) -> Any:
        f = self._ready(b)
        return f.get_next_update_partition(self._part(f, req)).as_dict()

    def op_mark_valid(self, b: SimBoard, req: dict[str, Any]) -> Any:
        self._ready(b).mark_app_valid()

    def op_nvs_open(self, b: SimBoard, req: dict[str, Any]) -> Any:
        self._ready(b).nvs_open(req["ns"])

    def op_nvs_set(self, b: SimBoard, req: dict[str, Any]) -> Any:
        self._ready(b).nvs_set(b.conn, req["ns"], req["key"], req["kind"], req["value"])

    def op_nvs_get(self, b: SimBoard, req: dict[str, Any]) -> Any:
        return self._ready(b).nvs_get(b.conn, req["ns"], req["key"], req["kind"])

    def op_nvs_erase(self, b: SimBoard, req: dict[str, Any]) -> Any:
        self._ready(b).nvs_erase_key(b.conn, req["ns"], req["key"])

    def op_nvs_commit(self, b: SimBoard, req: dict[str, Any]) -> Any:
        self._ready(b).nvs_commit(b.conn, req["ns"])

    def handlers(self) -> Iterator[tuple[str, Callable[[SimBoard, dict[str, Any]], Any]]]:
        for name in ("partition", "find", "read", "write", "erase", "set_boot", "next_update",
                     "mark_valid", "nvs_open", "nvs_set", "nvs_get", "nvs_erase", "nvs_commit"):
            yield "esp32_" + name, getattr(self, "op_" + name)


def install_esp32(world: World, flash_dir: str | Path | None = None, *,
                  variants: dict[str, str] | None = None,
                  default_variant: str = "ESP32_GENERIC") -> Esp32Services:
    """Serve the ``esp32_*`` operations from ``world``; flash files go to ``flash_dir``
    (a fresh temporary directory when None). The bootloader runs at every boot of a board
    (the world's ``on_boot`` hook)."""
    services = Esp32Services(flash_dir if flash_dir is not None
                             else tempfile.mkdtemp(prefix="cabinlink-flash-"),
                             variants, default_variant)
    for name, handler in services.handlers():
        world.register_op(name, handler)
    world.on_boot.append(services.on_boot)
    return services
