"""A simulated ESP32-family ROM serial bootloader (and esptool's flasher stub) on a pty.

Real ``esptool`` talks to :class:`RomBootloader` exactly as it talks to a board held in
download mode: ``esptool --port <rom.port> ...`` or the ``esptool.cmds`` API. The bytes it
writes land in a :class:`~cabinlink_tools.sim.flash.SimFlash` (NOR semantics: erase sets
0xFF per 4 KiB sector, programming can only clear bits), so a simulated board that boots
later reads the same flash.

What is modelled (sources: esptool's "Serial Protocol" documentation and the chip-specific
constants esptool itself reads - facts, not code):

* **Framing**: SLIP (0xC0 delimiters, 0xDB 0xDC / 0xDB 0xDD escapes). A malformed frame is
  dropped; a request whose size field disagrees with its payload is answered with an error.
* **Requests/responses**: ``<dir=0, op, size, checksum>`` requests; responses echo the op,
  carry the 32-bit value (READ_REG) and end with status bytes: four in ROM mode
  (``status, error, 0, 0``; error codes 0x05 invalid message, 0x06 failed to act, 0x07 bad
  checksum, 0x08 flash write error, 0x09 flash read error, 0x0B deflate error), two in stub
  mode (``code, 0`` with the stub's 0xC0..0xC9 codes, 0xFF for an unknown command).
* **SYNC** is answered eight times (value non-zero from the ROM, zero from the stub - how
  esptool tells them apart). After a reset the ROM ignores everything but SYNC.
* **Chip identity**: READ_REG of 0x40001000 gives the ESP32's magic value; ESP32-S3/C3/C6
  answer GET_SECURITY_INFO with their chip id (9, 5, 13), which the ESP32 ROM does not know
  (it answers "invalid message"). eFuse words give a plausible revision, package and MAC,
  the UART clock divider gives a 40 MHz crystal, and the SPI0 user-command registers run the
  flash commands esptool sends through them (RDID 0x9F -> a Winbond id of the flash's size,
  SFDP 0x5A -> the "SFDP" signature, RDSR -> 0, reset 0x66/0x99).
* **Flash writes**: FLASH_BEGIN/DATA/END and FLASH_DEFL_BEGIN/DATA/END (zlib). The ROM
  erases the whole region at *BEGIN* and reads every written block back (a mismatch is
  error 0x08); the stub erases sector by sector as data arrives. Blocks are checked for
  sequence number, length and the XOR checksum (seed 0xEF); a write beyond the flash is an
  error. SPI_FLASH_MD5 answers 32 hex digits (ROM) or 16 raw bytes (stub).
* **The stub**: MEM_BEGIN/MEM_DATA/MEM_END loads RAM; a MEM_END that jumps into loaded
  memory starts "the stub" (any program is taken for esptool's flasher stub), which greets
  with ``OHAI`` and adds ERASE_FLASH, ERASE_REGION and READ_FLASH (windowed, acknowledged,
  MD5 trailer). The ROM has READ_FLASH_SLOW (64 bytes per request) instead.
* **Leaving download mode**: FLASH_END/FLASH_DEFL_END with flag 1 from the ROM ("run user
  code") starts the app; the stub's RUN_USER_CODE too. A *software* reset (FLASH_END flag
  0, from the ROM or the stub) keeps the latched strapping, so the chip comes back to the
  ROM download mode (the datasheets latch strapping pins only at chip resets: power-on,
  RTC watchdog, brown-out). Arming the RTC watchdog (esptool's ``watchdog-reset`` on
  S3/C3) is such a chip reset: the BOOT button decides again.
* **CHANGE_BAUDRATE** is accepted and recorded (a pty has no line speed).

Not modelled: timing (erase/write durations, so esptool's timeouts are never approached),
flash encryption, secure boot and secure download mode, USB-OTG/USB-Serial-JTAG specifics,
NAND, and addresses wrapping round past the end of the chip (a real NOR flash ignores the
upper address bits; here that is an error).

:class:`RomProtocol` is the protocol engine without I/O (bytes in, bytes out), so the virtual
board (:mod:`cabinlink_tools.sim.virtual_board`) can speak it on its own port;
:class:`RomBootloader` serves one on a fresh pty from a thread.

Example::

    with RomBootloader("esp32s3", flash_size=8 * 1024 * 1024) as rom:
        esptool.main(["--port", rom.port, "--before", "no-reset", "write-flash", "0x0", "fw.bin"])
        assert rom.flash.read(0, 4) == open("fw.bin", "rb").read(4)

POSIX only.
"""
from __future__ import annotations

import hashlib
import os
import select
import shutil
import struct
import tempfile
import threading
import time
import tty
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .flash import FLASH_4MB, SECTOR, SimFlash
from .ptyio import service_pty

__all__ = ["CHIPS", "ChipModel", "RomBootloader", "RomProtocol", "flash_size_bytes"]

# Command opcodes (esptool's Serial Protocol documentation)
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE = 0xD0, 0xD1, 0xD2, 0xD3

OP_NAMES = {
    0x02: "FLASH_BEGIN", 0x03: "FLASH_DATA", 0x04: "FLASH_END", 0x05: "MEM_BEGIN",
    0x06: "MEM_END", 0x07: "MEM_DATA", 0x08: "SYNC", 0x09: "WRITE_REG", 0x0A: "READ_REG",
    0x0B: "SPI_SET_PARAMS", 0x0D: "SPI_ATTACH", 0x0E: "READ_FLASH_SLOW",
    0x0F: "CHANGE_BAUDRATE", 0x10: "FLASH_DEFL_BEGIN", 0x11: "FLASH_DEFL_DATA",
    0x12: "FLASH_DEFL_END", 0x13: "SPI_FLASH_MD5", 0x14: "GET_SECURITY_INFO",
    0xD0: "ERASE_FLASH", 0xD1: "ERASE_REGION", 0xD2: "READ_FLASH", 0xD3: "RUN_USER_CODE",
}

# ROM loader error codes (second status byte after a 1)
ROM_INVALID, ROM_FAILED, ROM_BAD_CRC, ROM_WRITE_ERR, ROM_READ_ERR, ROM_DEFLATE_ERR = (
    0x05, 0x06, 0x07, 0x08, 0x09, 0x0B)
# Stub loader error codes (first status byte)
STUB_BAD_LEN, STUB_BAD_CHECKSUM, STUB_BAD_BLOCKSIZE, STUB_INVALID = 0xC0, 0xC1, 0xC2, 0xC3
STUB_SPI_FAILED, STUB_NOT_IN_FLASH_MODE, STUB_INFLATE, STUB_NOT_ENOUGH, STUB_TOO_MUCH = (
    0xC4, 0xC6, 0xC7, 0xC8, 0xC9)
STUB_NOT_IMPLEMENTED = 0xFF

CHECKSUM_SEED = 0xEF
SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
ROM_SYNC_VALUE = 0x55201207  # any non-zero value tells esptool "ROM, not stub"
MAGIC_REG = 0x40001000
MAX_FRAME = 0x10000 + 64  # larger frames are dropped (the stub's largest block is 16 KiB)
SPI_CMD_USR = 1 << 18
SPI_USR_ADDR = 1 << 30
WDT_ENABLE = 1 << 31
WDT_DELAY = 0.05  # seconds from arming the RTC watchdog to the chip reset
_RESET_CAUSES = {"poweron": (0x1, "POWERON"), "sw": (0xC, "SW_CPU_RESET"),
                 "rtcwdt": (0x10, "RTCWDT_RTC_RESET")}


def flash_size_bytes(size: str | int) -> int:
    """``"4MB"`` -> 4194304 (ints pass through)."""
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("MB", 1024 * 1024), ("KB", 1024)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s, 0)


@dataclass(frozen=True)
class ChipModel:
    """What a chip's ROM shows esptool: identity, SPI0 registers, eFuses, watchdog."""

    name: str  # "esp32s3", as in boards/*.json
    display: str  # "ESP32-S3", as esptool names it
    chip_id: int | None  # GET_SECURITY_INFO chip id; None: the ROM lacks the command
    magic: int  # the word at 0x40001000
    spi_base: int
    spi_offs: tuple[int, int, int, int, int, int]  # USR, USR1, USR2, MOSI_DLEN, MISO_DLEN, W0
    spi_addr_msb: bool  # the ESP32's SPI address register is left-aligned
    uart_clkdiv_reg: int
    efuse_mac: tuple[int, str]  # (address of the first MAC word, layout "esp32" | "block1")
    registers: Mapping[int, int]  # other fixed register values (revision, package, ...)
    wdt_config0: int | None  # RTC watchdog config register (enable = bit 31)
    boot_offset: int  # where the app image (second-stage bootloader) starts
    rom_banner: str  # first line(s) the ROM prints at reset
    download_boot: str  # the "boot:" part printed in download mode


_CHIP_LIST = [
    ChipModel(
        "esp32", "ESP32", None, 0x00F01D83, 0x3FF42000, (0x1C, 0x20, 0x24, 0x28, 0x2C, 0x80),
        True, 0x3FF40014, (0x3FF5A004, "esp32"),
        {
            0x3FF5A00C: (1 << 15) | (1 << 9),  # eFuse word 3: rev bit 0, package D0WD
            0x3FF5A010: 100,  # word 4: CK8M calibration
            0x3FF5A014: (1 << 20) | (1 << 24),  # word 5: rev bit 1, minor 1
            0x3FF6607C: 0x80000000 | 0x16042000,  # APB_CTL_DATE: rev bit 2 -> v3.1
            0x3FF5F06C: 1024 << 7,  # RTC calibration: with CK8M 100 -> 40 MHz crystal
        },
        None, 0x1000, "ets Jul 29 2019 12:21:46\r\n\r\n",
        "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"),
    ChipModel(
        "esp32s3", "ESP32-S3", 9, 0x00000009, 0x60002000, (0x18, 0x1C, 0x20, 0x24, 0x28, 0x58),
        False, 0x60000014, (0x60007044, "block1"),
        {0x60007050: (1 << 24) | (2 << 18)},  # block-1 word 3: blk minor 1, chip v0.2
        0x60008098, 0x0, "ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n",
        "boot:0x0 (DOWNLOAD(USB/UART0))"),
    ChipModel(
        "esp32c3", "ESP32-C3", 5, 0x1B31506F, 0x60002000, (0x18, 0x1C, 0x20, 0x24, 0x28, 0x58),
        False, 0x60000014, (0x60008844, "block1"),
        {0x60008850: 4 << 18},  # block-1 word 3: chip v0.4
        0x60008090, 0x0, "ESP-ROM:esp32c3-api1-20210207\r\nBuild:Feb  7 2021\r\n",
        "boot:0x4 (DOWNLOAD(USB/UART0/1))"),
    ChipModel(
        "esp32c6", "ESP32-C6", 13, 0x2CE0806F, 0x60003000, (0x18, 0x1C, 0x20, 0x24, 0x28, 0x58),
        False, 0x60000014, (0x600B0844, "block1"),
        {0x600B0850: 1 << 18},  # block-1 word 3: chip v0.1, package QFN40
        0x600B1C00, 0x0, "ESP-ROM:esp32c6-20220919\r\nBuild:Sep 19 2022\r\n",
        "boot:0x4 (DOWNLOAD(USB/UART0/SDIO_FEI_FEO))"),
]
CHIPS: dict[str, ChipModel] = {c.name: c for c in _CHIP_LIST}
"""The chips the simulation serves, by board-file name (``esp32``, ``esp32s3``, ...)."""

_JEDEC_CAPACITY = {1 << 20: 0x14, 2 << 20: 0x15, 4 << 20: 0x16, 8 << 20: 0x17,
                   16 << 20: 0x18, 32 << 20: 0x19}


def checksum(data: bytes) -> int:
    """The ROM's block checksum: XOR of every byte, seeded with 0xEF."""
    state = CHECKSUM_SEED
    for b in data:
        state ^= b
    return state


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class _Error(Exception):
    """A request the chip refuses: ``rom`` / ``stub`` are the error codes of each loader."""

    def __init__(self, rom: int, stub: int) -> None:
        super().__init__(rom, stub)
        self.rom = rom
        self.stub = stub


@dataclass
class _Download:
    """One FLASH_BEGIN / FLASH_DEFL_BEGIN / MEM_BEGIN transfer in progress."""

    kind: str  # "flash", "defl" or "mem"
    offset: int
    limit: int  # bytes that may still be written (flash: declared size)
    blocks: int
    block_size: int
    seq: int = 0
    written: int = 0
    erased_to: int = 0  # stub: sectors below this address are erased
    inflate: zlib._Decompress | None = None  # type: ignore[name-defined]
    ram: bytearray = field(default_factory=bytearray)


@dataclass
class _Reading:
    """A stub READ_FLASH stream: packets out, cumulative-count acknowledgements in."""

    data: bytes
    packet: int
    window: int
    sent: int = 0
    acked: int = 0


class RomProtocol:
    """The download-mode protocol of ``chip`` over ``flash``, without I/O.

    Feed the bytes the host sent to :meth:`feed`, send what :meth:`take_output` returns, call
    :meth:`poll` now and then (the watchdog), and act on :meth:`take_exit`: ``"app"`` (the
    loader jumped to the application in flash) or ``"chip-reset"`` (a chip reset: the
    caller samples the BOOT button and either calls :meth:`reset` or runs the app).

    ``stuck_bits`` maps flash addresses to masks of bits that cannot be programmed to 0 (a
    worn cell), for verification tests. ``on_chip_erase`` runs after an ERASE_FLASH."""

    def __init__(self, chip: str | ChipModel, flash: SimFlash, *, mac: bytes | None = None,
                 stuck_bits: Mapping[int, int] | None = None,
                 on_chip_erase: Callable[[], None] | None = None) -> None:
        self.chip = chip if isinstance(chip, ChipModel) else CHIPS[chip]
        self.flash = flash
        self.mac = bytes(mac) if mac is not None else bytes([0x24, 0x0A, 0xC4, 0x5E, 0x11, 0x22])
        if len(self.mac) != 6:
            raise ValueError("mac must be 6 bytes")
        self.stuck_bits = dict(stuck_bits or {})
        self.on_chip_erase = on_chip_erase
        self.commands: Counter[str] = Counter()  # requests handled, by name (inspection)
        self.baud = 115200
        self.stub = False
        self.synced = False
        self._out = bytearray()
        self._exit: str | None = None
        self.reset("poweron")

    # -- host side -------------------------------------------------------------------

    def reset(self, cause: str = "poweron") -> None:
        """The chip (re)starts in ROM download mode: state cleared, boot log printed.
        ``cause``: ``"poweron"``, ``"sw"`` (software reset) or ``"rtcwdt"``."""
        self.stub = False
        self.synced = False
        self.attached = False
        self.chip_size = self.flash.size  # SPI_SET_PARAMS may change the ROM's notion
        self.baud = 115200
        self._regs: dict[int, int] = dict(self.chip.registers)
        self._install_mac()
        self._frame: bytearray | None = None
        self._escape = False
        self._download: _Download | None = None
        self._reading: _Reading | None = None
        self._mem: list[tuple[int, int]] = []  # RAM segments loaded (start, end)
        self._wdt_at: float | None = None
        code, name = _RESET_CAUSES[cause]
        self._out += (f"{self.chip.rom_banner}rst:0x{code:x} ({name}),{self.chip.download_boot}"
                      "\r\nwaiting for download\r\n").encode()

    def feed(self, data: bytes) -> None:
        """Bytes from the host."""
        for b in data:
            if self._frame is None:
                if b == 0xC0:
                    self._frame = bytearray()
                continue  # noise between frames is ignored
            if self._escape:
                self._escape = False
                if b == 0xDC:
                    self._frame.append(0xC0)
                elif b == 0xDD:
                    self._frame.append(0xDB)
                else:
                    self._frame = None  # invalid escape: the frame is lost
                continue
            if b == 0xDB:
                self._escape = True
            elif b == 0xC0:
                frame, self._frame = bytes(self._frame), None
                if frame:
                    self._on_frame(frame)
                else:
                    self._frame = bytearray()  # C0 C0: the second one opens a frame
            else:
                self._frame.append(b)
                if len(self._frame) > MAX_FRAME:
                    self._frame = None
            if self._exit is not None:
                return  # the program that would read the rest is gone

    def poll(self, now: float | None = None) -> None:
        """Time passes: an armed RTC watchdog resets the chip."""
        now = time.monotonic() if now is None else now
        if self._wdt_at is not None and now >= self._wdt_at and self._exit is None:
            self._wdt_at = None
            self._exit = "chip-reset"

    def take_output(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def take_exit(self) -> str | None:
        """``"app"``, ``"chip-reset"`` or None; cleared by the call."""
        ev, self._exit = self._exit, None
        return ev

    @property
    def mode(self) -> str:
        return "stub" if self.stub else "rom"

    # -- framing and dispatch ----------------------------------------------------------

    def _send(self, packet: bytes) -> None:
        self._out += slip_encode(packet)

    def _reply(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> None:
        if self.stub:
            status = bytes([error, 0])
        else:
            status = bytes([1, error, 0, 0]) if error else bytes(4)
        body = (b"" if error else data) + status
        self._send(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _on_frame(self, frame: bytes) -> None:
        if self._reading is not None:
            self._on_read_ack(frame)
            return
        if len(frame) < 8 or frame[0] != 0:
            return  # not a request
        _, op, size, chk = struct.unpack_from("<BBHI", frame)
        payload = frame[8:]
        if not self.synced and op != SYNC:
            return  # the ROM has not locked onto the host's baud rate yet
        name = OP_NAMES.get(op, f"0x{op:02X}")
        self.commands[name] += 1
        if size != len(payload):
            self._reply(op, error=STUB_BAD_LEN if self.stub else ROM_INVALID)
            return
        handler = self._handlers().get(op)
        if handler is None:
            self._reply(op, error=STUB_NOT_IMPLEMENTED if self.stub else ROM_INVALID)
            return
        try:
            handler(op, payload, chk)
        except _Error as e:
            self._reply(op, error=e.stub if self.stub else e.rom)
        except struct.error:
            self._reply(op, error=STUB_BAD_LEN if self.stub else ROM_INVALID)

    def _handlers(self) -> dict[int, Callable[[int, bytes, int], None]]:
        common = {
            SYNC: self._sync, READ_REG: self._read_reg, WRITE_REG: self._write_reg,
            SPI_SET_PARAMS: self._spi_set_params, SPI_ATTACH: self._spi_attach,
            CHANGE_BAUDRATE: self._change_baud, FLASH_BEGIN: self._flash_begin,
            FLASH_DATA: self._flash_data, FLASH_END: self._flash_end,
            FLASH_DEFL_BEGIN: self._flash_begin, FLASH_DEFL_DATA: self._flash_data,
            FLASH_DEFL_END: self._flash_end, SPI_FLASH_MD5: self._md5,
            MEM_BEGIN: self._mem_begin, MEM_DATA: self._mem_data, MEM_END: self._mem_end,
        }
        if self.chip.chip_id is not None:
            common[GET_SECURITY_INFO] = self._security_info
        if self.stub:
            common.update({ERASE_FLASH: self._erase_flash, ERASE_REGION: self._erase_region,
                           READ_FLASH: self._read_flash, RUN_USER_CODE: self._run_user_code})
        else:
            common[READ_FLASH_SLOW] = self._read_flash_slow
        return common

    def _err(self, rom: int, stub: int) -> _Error:
        return _Error(rom, stub)

    # -- commands ---------------------------------------------------------------------

    def _sync(self, op: int, payload: bytes, chk: int) -> None:
        if payload != SYNC_PAYLOAD:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        self.synced = True
        for _ in range(8):  # one answer per sync word, as the ROM does
            self._reply(op, 0 if self.stub else ROM_SYNC_VALUE)

    def _security_info(self, op: int, payload: bytes, chk: int) -> None:
        info = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.chip_id, 0)
        self._reply(op, data=info)

    def _install_mac(self) -> None:
        addr, layout = self.chip.efuse_mac
        m = self.mac
        if layout == "esp32":  # word 1 = MAC[2:6], word 2 low half = MAC[0:2]
            self._regs[addr] = int.from_bytes(m[2:6], "big")
            self._regs[addr + 4] = int.from_bytes(m[0:2], "big")
        else:  # block 1: word 0 = MAC[2:6], word 1 low half = MAC[0:2] (high half: ff:fe)
            self._regs[addr] = int.from_bytes(m[2:6], "big")
            self._regs[addr + 4] = 0xFFFE0000 | int.from_bytes(m[0:2], "big")

    def _reg_value(self, addr: int) -> int:
        if addr == MAGIC_REG:
            return self.chip.magic
        if addr == self.chip.uart_clkdiv_reg:  # the UART runs from the 40 MHz crystal
            return round(40_000_000 / max(self.baud, 1)) & 0xFFFFF
        return self._regs.get(addr, 0)

    def _read_reg(self, op: int, payload: bytes, chk: int) -> None:
        (addr,) = struct.unpack("<I", payload)
        self._reply(op, self._reg_value(addr))

    def _write_reg(self, op: int, payload: bytes, chk: int) -> None:
        if not payload or len(payload) % 16:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        for i in range(0, len(payload), 16):
            addr, value, mask, _delay_us = struct.unpack_from("<IIII", payload, i)
            new = (self._reg_value(addr) & ~mask | value & mask) & 0xFFFFFFFF
            self._regs[addr] = new
            self._on_register_write(addr, new)
        self._reply(op)

    def _on_register_write(self, addr: int, value: int) -> None:
        base = self.chip.spi_base
        if addr == base and value & SPI_CMD_USR:  # SPI0 user command: run it, clear USR
            self._spi_user_command()
            self._regs[addr] = value & ~SPI_CMD_USR
        elif addr == self.chip.wdt_config0:
            self._wdt_at = time.monotonic() + WDT_DELAY if value & WDT_ENABLE else None

    def _spi_user_command(self) -> None:
        usr_o, usr1_o, usr2_o, _mosi_o, miso_o, w0_o = self.chip.spi_offs
        base = self.chip.spi_base
        r = self._regs
        cmd = r.get(base + usr2_o, 0) & 0xFF
        usr = r.get(base + usr_o, 0)
        addr = 0
        if usr & SPI_USR_ADDR:
            addr_bits = ((r.get(base + usr1_o, 0) >> 26) & 0x3F) + 1
            raw = r.get(base + 0x04, 0)
            addr = raw >> (32 - addr_bits) if self.chip.spi_addr_msb else raw
        miso_bits = (r.get(base + miso_o, 0) & 0xFFFF) + 1
        if cmd == 0x9F:  # RDID: manufacturer, memory type, capacity
            cap = _JEDEC_CAPACITY.get(self.flash.size, 0x16)
            result = 0xEF | (0x40 << 8) | (cap << 16)
        elif cmd == 0x5A:  # read SFDP: signature at 0, zeros after
            table = b"SFDP" + bytes(60)
            result = int.from_bytes(table[addr:addr + 4].ljust(4, b"\0"), "little")
        elif cmd in (0x05, 0x35, 0x15):  # status registers: idle, unprotected
            result = 0
        else:  # write enable/disable, reset, power modes...: no data
            result = 0
        if usr & (1 << 28) and miso_bits < 32:  # only the bits read back are meaningful
            result &= (1 << miso_bits) - 1
        r[base + w0_o] = result

    def _spi_set_params(self, op: int, payload: bytes, chk: int) -> None:
        _fl_id, total, _block, sector, _page, _mask = struct.unpack("<IIIIII", payload)
        if total == 0 or sector != SECTOR:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        self.chip_size = total
        self._reply(op)

    def _spi_attach(self, op: int, payload: bytes, chk: int) -> None:
        if len(payload) not in (4, 8):
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        self.attached = True
        self._reply(op)

    def _change_baud(self, op: int, payload: bytes, chk: int) -> None:
        new, _old = struct.unpack("<II", payload)
        if new <= 0:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        self._reply(op)  # sent at the old rate, then the UART switches
        self.baud = new

    # -- flash ------------------------------------------------------------------------------

    def _check_range(self, addr: int, n: int, rom: int, stub: int) -> None:
        if addr < 0 or n < 0 or addr + n > min(self.chip_size, self.flash.size):
            raise self._err(rom, stub)

    def _flash_begin(self, op: int, payload: bytes, chk: int) -> None:
        if len(payload) not in (16, 20):
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        size, blocks, block_size, offset = struct.unpack_from("<IIII", payload)
        if len(payload) == 20 and struct.unpack_from("<I", payload, 16)[0]:
            raise self._err(ROM_FAILED, STUB_INVALID)  # encrypted writes: not modelled
        if block_size == 0 and blocks:
            raise self._err(ROM_INVALID, STUB_BAD_BLOCKSIZE)
        if size and not self.stub and not self.attached:
            raise self._err(ROM_FAILED, STUB_SPI_FAILED)  # flash not attached
        kind = "defl" if op == FLASH_DEFL_BEGIN else "flash"
        self._check_range(offset, size, ROM_FAILED, STUB_BAD_LEN)
        dl = _Download(kind, offset, size, blocks, block_size, erased_to=offset // SECTOR * SECTOR)
        if kind == "defl":
            dl.inflate = zlib.decompressobj()
        if not self.stub and size:
            if offset % SECTOR:
                raise self._err(ROM_INVALID, STUB_BAD_LEN)
            end = min(-(-(offset + size) // SECTOR) * SECTOR, self.flash.size)
            self.flash.erase(offset, end - offset)  # the ROM erases up front
            dl.erased_to = end
        self._download = dl
        self._reply(op)

    def _block(self, payload: bytes, chk: int) -> tuple[int, bytes]:
        if len(payload) < 16:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        length, seq, _, _ = struct.unpack_from("<IIII", payload)
        data = payload[16:]
        if length != len(data):
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        if checksum(data) != chk & 0xFF:
            raise self._err(ROM_BAD_CRC, STUB_BAD_CHECKSUM)
        return seq, data

    def _flash_data(self, op: int, payload: bytes, chk: int) -> None:
        dl = self._download
        want = "defl" if op == FLASH_DEFL_DATA else "flash"
        if dl is None or dl.kind != want:
            raise self._err(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        seq, data = self._block(payload, chk)
        if seq != dl.seq or seq >= dl.blocks:
            raise self._err(ROM_INVALID, STUB_TOO_MUCH if seq >= dl.blocks else STUB_BAD_LEN)
        if len(data) > dl.block_size or (want == "flash" and not self.stub
                                         and len(data) != dl.block_size):
            raise self._err(ROM_INVALID, STUB_BAD_BLOCKSIZE)
        if want == "defl":
            assert dl.inflate is not None
            try:
                out = dl.inflate.decompress(data)
            except zlib.error:
                raise self._err(ROM_DEFLATE_ERR, STUB_INFLATE) from None
            if dl.written + len(out) > dl.limit:
                raise self._err(ROM_DEFLATE_ERR, STUB_TOO_MUCH)
        else:
            out = data[: max(dl.limit - dl.written, 0)]  # padding past the end is dropped
        self._program(dl, out)
        dl.seq += 1
        self._reply(op)

    def _program(self, dl: _Download, data: bytes) -> None:
        if not data:
            return
        addr = dl.offset + dl.written
        self._check_range(addr, len(data), ROM_WRITE_ERR, STUB_SPI_FAILED)
        if self.stub:  # just-in-time erase of the sectors this data reaches
            end = min(-(-(addr + len(data)) // SECTOR) * SECTOR, self.flash.size)
            if end > dl.erased_to:
                self.flash.erase(dl.erased_to, end - dl.erased_to)
                dl.erased_to = end
        cells = bytearray(data)
        for a, mask in self.stuck_bits.items():
            if addr <= a < addr + len(cells):
                cells[a - addr] |= mask & 0xFF
        self.flash.write(addr, bytes(cells))
        dl.written += len(data)
        if not self.stub and dl.kind == "flash" and self.flash.read(addr, len(data)) != data:
            raise self._err(ROM_WRITE_ERR, STUB_SPI_FAILED)  # the ROM's read-back check

    def _flash_end(self, op: int, payload: bytes, chk: int) -> None:
        (flag,) = struct.unpack_from("<I", payload) if len(payload) >= 4 else (None,)
        if flag is None:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        dl = self._download
        if self.stub:
            want = "defl" if op == FLASH_DEFL_END else "flash"
            if dl is None or dl.kind != want:
                raise self._err(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
            if want == "defl" and dl.limit and (dl.written < dl.limit or not (
                    dl.inflate is not None and dl.inflate.eof)):
                raise self._err(ROM_FAILED, STUB_NOT_ENOUGH)
            if want == "flash" and dl.written < dl.limit:
                raise self._err(ROM_FAILED, STUB_NOT_ENOUGH)
        self._download = None
        self._reply(op)
        if flag == 0:  # reboot: a software reset keeps the latched download mode
            self.reset("sw")
        elif not self.stub:  # "run user code": the ROM jumps to the app in flash
            self._exit = "app"

    def _md5(self, op: int, payload: bytes, chk: int) -> None:
        addr, size, _, _ = struct.unpack("<IIII", payload)
        self._check_range(addr, size, ROM_READ_ERR, STUB_SPI_FAILED)
        if not self.stub and not self.attached:
            raise self._err(ROM_READ_ERR, STUB_SPI_FAILED)
        digest = hashlib.md5(self.flash.read(addr, size))
        self._reply(op, data=digest.digest() if self.stub else digest.hexdigest().encode())

    def _read_flash_slow(self, op: int, payload: bytes, chk: int) -> None:
        addr, size = struct.unpack("<II", payload)
        if size > 64:
            raise self._err(0x0A, STUB_BAD_LEN)
        self._check_range(addr, size, ROM_READ_ERR, STUB_SPI_FAILED)
        self._reply(op, data=self.flash.read(addr, size).ljust(64, b"\xff"))

    def _erase_flash(self, op: int, payload: bytes, chk: int) -> None:
        self.flash.erase(0, self.flash.size)
        self._download = None
        self._reply(op)
        if self.on_chip_erase is not None:
            self.on_chip_erase()

    def _erase_region(self, op: int, payload: bytes, chk: int) -> None:
        offset, size = struct.unpack("<II", payload)
        if offset % SECTOR or size % SECTOR:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        self._check_range(offset, size, ROM_FAILED, STUB_SPI_FAILED)
        self.flash.erase(offset, size)
        self._reply(op)

    def _read_flash(self, op: int, payload: bytes, chk: int) -> None:
        offset, length, packet, window = struct.unpack("<IIII", payload)
        if packet == 0 or window == 0:
            raise self._err(ROM_INVALID, STUB_BAD_BLOCKSIZE)
        self._check_range(offset, length, ROM_READ_ERR, STUB_SPI_FAILED)
        self._reply(op)
        self._reading = _Reading(self.flash.read(offset, length), packet, window)
        self._pump_read()

    def _pump_read(self) -> None:
        rd = self._reading
        assert rd is not None
        while rd.sent < len(rd.data) and rd.sent - rd.acked < rd.window * rd.packet:
            chunk = rd.data[rd.sent: rd.sent + rd.packet]
            self._send(chunk)
            rd.sent += len(chunk)
        if rd.acked >= len(rd.data):
            self._send(hashlib.md5(rd.data).digest())
            self._reading = None

    def _on_read_ack(self, frame: bytes) -> None:
        rd = self._reading
        assert rd is not None
        if len(frame) != 4:
            self._reading = None  # the host gave up on the stream
            return
        rd.acked = max(rd.acked, struct.unpack("<I", frame)[0])
        self._pump_read()

    def _run_user_code(self, op: int, payload: bytes, chk: int) -> None:
        self._exit = "app"  # no answer: the stub is gone

    # -- RAM download (how esptool starts its stub) -------------------------------------------

    def _mem_begin(self, op: int, payload: bytes, chk: int) -> None:
        size, blocks, block_size, offset = struct.unpack("<IIII", payload)
        if blocks * block_size < size:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        self._download = _Download("mem", offset, size, blocks, block_size)
        self._reply(op)

    def _mem_data(self, op: int, payload: bytes, chk: int) -> None:
        dl = self._download
        if dl is None or dl.kind != "mem":
            raise self._err(ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        seq, data = self._block(payload, chk)
        if seq != dl.seq or len(data) > dl.block_size or dl.written + len(data) > dl.limit:
            raise self._err(ROM_INVALID, STUB_BAD_LEN)
        dl.ram += data
        dl.written += len(data)
        dl.seq += 1
        if dl.written == dl.limit:
            self._mem.append((dl.offset, dl.offset + dl.limit))
        self._reply(op)

    def _mem_end(self, op: int, payload: bytes, chk: int) -> None:
        stay, entry = struct.unpack("<II", payload)
        self._download = None
        self._reply(op)
        if stay or self.stub:
            return
        if any(start <= entry < end for start, end in self._mem):
            self.stub = True  # the program loaded is taken for esptool's flasher stub
            self.attached = True  # the stub attaches the flash itself
            self._send(b"OHAI")


class RomBootloader:
    """A chip held in download mode behind a pty: :attr:`port` is the serial device.

    ``chip``: a key of :data:`CHIPS`. ``flash``: a :class:`SimFlash`, a path for one, or None
    for a temporary file (removed by :meth:`close`); ``flash_size`` (bytes or ``"8MB"``) for a
    new one. ``boot_held``: whether the BOOT button is held when the chip resets by itself
    (watchdog) - held, it comes back in download mode; released, it runs the app.

    When the app starts, :attr:`app_starts` counts up and :attr:`state` becomes ``"app"``;
    the simulation has no app to run, so the port then stays silent and input is dropped until
    :meth:`reset`. Use as a context manager or call :meth:`start` and :meth:`close`."""

    def __init__(self, chip: str = "esp32", flash: SimFlash | str | Path | None = None, *,
                 flash_size: int | str = FLASH_4MB, boot_held: bool = True,
                 mac: bytes | None = None, stuck_bits: Mapping[int, int] | None = None) -> None:
        if chip not in CHIPS:
            raise ValueError(f"unknown chip {chip!r}; simulated: {', '.join(CHIPS)}")
        self._tmp: str | None = None
        if isinstance(flash, SimFlash):
            self.flash = flash
            self._own_flash = False
        else:
            if flash is None:
                self._tmp = tempfile.mkdtemp(prefix="romsim-")
                flash = Path(self._tmp) / "flash.bin"
            self.flash = SimFlash(flash, flash_size_bytes(flash_size))
            self._own_flash = True
        self.boot_held = boot_held
        self.protocol = RomProtocol(chip, self.flash, mac=mac, stuck_bits=stuck_bits)
        self.protocol.take_output()  # the power-on log went to nobody
        self.state = "download"
        self.app_starts = 0
        self.port = ""
        self._master = -1
        self._wake_r = self._wake_w = -1
        self._connected = False
        self._to_host = bytearray()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._reset_to: bool | None = None  # pending reset request: BOOT held or not
        self.error: BaseException | None = None

    def __enter__(self) -> RomBootloader:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> RomBootloader:
        """Open the pty and serve it from a thread."""
        master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._serve, name=f"romsim {self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, close the pty and a flash this object opened. Idempotent."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for fd in (self._master, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._wake_r = self._wake_w = -1
        if self._own_flash:
            self.flash.close()
            self._own_flash = False
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def reset(self, boot_held: bool | None = None) -> None:
        """Press EN: the chip resets and samples BOOT (``boot_held``, default the attribute)."""
        with self._lock:
            self._reset_to = self.boot_held if boot_held is None else boot_held
        self._wake()

    def wait_state(self, state: str, timeout: float = 5.0) -> bool:
        """Wait until :attr:`state` is ``state`` (``"download"`` or ``"app"``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.state != state:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
            return True

    # -- the serving thread ----------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                pass

    def _serve(self) -> None:
        try:
            while not self._stopping:
                self._step()
        except BaseException as e:  # recorded for tests; the chip is dead
            self.error = e

    def _step(self) -> None:
        with self._lock:
            reset_to, self._reset_to = self._reset_to, None
        if reset_to is not None:
            self._chip_reset(reset_to, "poweron")
        if self.state == "download":
            self.protocol.poll()
            self._after_protocol()
        if not self._connected:
            p = select.poll()
            p.register(self._master, select.POLLIN)
            self._connected = not any(ev & select.POLLHUP for _, ev in p.poll(0))
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if self._connected:
            poller.register(self._master, select.POLLIN | (select.POLLOUT if self._to_host else 0))
        for fd, ev in poller.poll(50):
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            elif fd == self._master:
                self._service(ev)

    def _service(self, ev: int) -> None:
        if not service_pty(self._master, ev, self._to_host, self._from_host):
            self._connected = False

    def _from_host(self, data: bytes) -> None:
        if self.state == "download":
            self.protocol.feed(data)
            self._after_protocol()

    def _after_protocol(self) -> None:
        out = self.protocol.take_output()
        if out and self._connected:
            self._to_host += out
        ev = self.protocol.take_exit()
        if ev == "app":
            self._run_app()
        elif ev == "chip-reset":
            self._chip_reset(self.boot_held, "rtcwdt")

    def _chip_reset(self, boot_held: bool, cause: str) -> None:
        if boot_held:
            self.protocol.reset(cause)
            with self._changed:
                self.state = "download"
                self._changed.notify_all()
            self._after_protocol()
        else:
            self._run_app()

    def _run_app(self) -> None:
        with self._changed:
            self.state = "app"
            self.app_starts += 1
            self._changed.notify_all()
