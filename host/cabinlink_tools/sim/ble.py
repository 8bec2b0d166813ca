"""The simulated BLE radio: MicroPython's ``bluetooth.BLE`` carried by Bumble.

Every simulated board gets a Bumble :class:`~bumble.device.Device` with its own
:class:`~bumble.controller.Controller` on one :class:`~bumble.link.LocalLink` shared by all
boards and by the centrals made with :meth:`BleWorld.central` (the tests' and the reference
car's). So a real BLE host stack (L2CAP, ATT/GATT, SMP) carries the traffic between the
firmware and its peers; only the radio itself is simulated.

The firmware side is ``platform/bluetooth.py``: every ``BLE`` method is a ``ble_*`` request
to the world, served here; IRQs travel back as ``{"ev": "ble", "irq": n, "a": [...]}``
events (bytes as ``{"b": hex}``) with MicroPython's event codes and tuple shapes. IRQs whose
return value the stack needs (GET_SECRET, SET_SECRET) carry a reply id ``rid``; the firmware
answers with a ``ble_reply`` message.

Threads: Bumble runs in one asyncio loop in its own thread. The world's request handlers
(synchronous, under ``World.lock``) hand work to that loop and wait for it with a timeout;
the loop never takes ``World.lock`` (it only reads ``board.conn`` and sends events), so the
two cannot deadlock. Per-radio state shared by both sides is guarded by ``_Radio.lock``.

Where the simulation differs from a board:
- the identity address is a random static address derived from ``unique_id`` (BT MAC =
  base MAC + 2, top bits 0b11): Bumble's LocalLink routes LE traffic by random address, so
  ``config('mac')`` returns ``(1, addr)`` where an ESP32 returns its public address ``(0, ..)``;
- ``addr_mode`` 2/3 (RPA/NRPA) are accepted and ignored; no address resolution of peers;
- bond storage goes through IRQ 29/30 like NimBLE (sec_type 1 OUR_SEC / 2 PEER_SEC, key =
  ble_addr_t: type byte + 6 address bytes little-endian) but the value is Bumble's
  ``PairingKeys`` as JSON, not NimBLE's ``ble_store_value_sec`` struct (it is opaque to the
  firmware either way); CCCDs are not persisted (NimBLE's MicroPython binding neither);
- no connection-parameter updates (IRQ 27), no L2CAP channels, no GATT client
  (``gap_connect``/``gattc_*``); ``gap_scan`` is supported.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import queue
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bumble import att, hci, ll
from bumble import controller as bumble_controller
from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import AdvertisingType, Connection, Device, Peer
from bumble.gatt import (
    GATT_DEVICE_NAME_CHARACTERISTIC,
    Characteristic,
    CharacteristicValue,
    Descriptor,
    Service,
)
from bumble.host import Host
from bumble.keys import KeyStore, PairingKeys
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink

from .world import OpError, SimBoard, World

log = logging.getLogger(__name__)
T = TypeVar("T")

# newlib errno values (the ESP32 port raises these)
EIO, ENOENT, ENOMEM, EBUSY, ENODEV, EINVAL = 5, 2, 12, 16, 19, 22
EOPNOTSUPP, ETIMEDOUT, EALREADY, ENOTCONN = 95, 116, 120, 128
BLE_HS_ETIMEOUT, BLE_HS_ENOTCONN = 13, 7  # raw NimBLE statuses passed in IRQ 20

# IRQ codes (extmod/modbluetooth.h)
IRQ_CENTRAL_CONNECT, IRQ_CENTRAL_DISCONNECT, IRQ_GATTS_WRITE = 1, 2, 3
IRQ_SCAN_RESULT, IRQ_SCAN_DONE = 5, 6
IRQ_GATTS_INDICATE_DONE, IRQ_MTU_EXCHANGED = 20, 21
IRQ_ENCRYPTION_UPDATE, IRQ_GET_SECRET, IRQ_SET_SECRET, IRQ_PASSKEY_ACTION = 28, 29, 30, 31
PASSKEY_INPUT, PASSKEY_DISPLAY, PASSKEY_NUMCMP = 2, 3, 4
SEC_OUR, SEC_PEER = 1, 2  # NimBLE BLE_STORE_OBJ_TYPE_OUR_SEC / _PEER_SEC

# characteristic flags (MicroPython == NimBLE)
F_READ, F_WRITE_NR, F_WRITE, F_NOTIFY, F_INDICATE, F_AUTH_SIGNED = 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
F_READ_ENC, F_READ_AUTHN, F_READ_AUTHZ = 0x200, 0x400, 0x800
F_WRITE_ENC, F_WRITE_AUTHN, F_WRITE_AUTHZ = 0x1000, 0x2000, 0x4000

DEFAULT_ATTR_LEN = 20  # MP_BLUETOOTH_DEFAULT_ATTR_LEN: value buffers start this big
DEFAULT_GAP_NAME = b"ESP32"  # MICROPY_PY_BLUETOOTH_DEFAULT_GAP_NAME on the esp32 port
DEFAULT_MTU = 256  # ESP-IDF CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU
GAP_NAME_MAX = 31  # CONFIG_BT_NIMBLE_GAP_DEVICE_NAME_MAX_LEN
ADV_MAX = 31
# NimBLE rejects too long advertising data with BLE_ERR_INV_HCI_CMD_PARMS (0x12), which the
# binding passes through negated (it is not in its errno table).
ADV_TOO_LONG_ERRNO = -0x12
CALL_TIMEOUT = 10.0
REPLY_TIMEOUT = 5.0
PASSKEY_TIMEOUT = 30.0

HCI_CONNECTION_TIMEOUT = 0x08
HCI_REMOTE_USER_TERMINATED = 0x13
HCI_REMOTE_POWER_OFF = 0x15


# --- Bumble controller with a faithful legacy advertiser ------------------------------
# Bumble's LocalLink controller sends only ADV_IND and answers scans with the advertising
# data; this one sends the advertising type, data and scan response exactly as configured,
# at the configured interval, and reports them with the legacy report event types (which
# are MicroPython's IRQ 5 adv_type codes).


@dataclasses.dataclass
class _AdvPdu(ll.AdvInd):
    scan_response: bytes = b""
    adv_type: int = 0  # HCI advertising type: 0 ADV_IND, 2 ADV_SCAN_IND, 3 ADV_NONCONN_IND


class _Advertiser(bumble_controller.LegacyAdvertiser):
    def _on_timer_fired(self) -> None:
        self.send_advertising_data()
        interval = max(self.advertising_interval_min * 0.000625, 0.005)
        self.timer_handle = asyncio.get_running_loop().call_later(interval, self._on_timer_fired)

    def send_advertising_data(self) -> None:
        if self.enabled:
            self.controller.send_advertising_pdu(_AdvPdu(
                advertiser_address=self.address, data=bytes(self.advertising_data),
                scan_response=bytes(self.scan_response_data), adv_type=self.advertising_type))


class _SimController(Controller):
    le_features = Controller.le_features & ~(hci.LeFeatureMask.LE_EXTENDED_ADVERTISING
                                             | hci.LeFeatureMask.LE_PERIODIC_ADVERTISING)

    def __init__(self, name: str, link: LocalLink) -> None:
        super().__init__(name, link=link)
        self.le_legacy_advertiser = _Advertiser(self)

    def on_advertising_pdu(self, pdu: ll.AdvInd | ll.AdvExtInd) -> None:
        if not isinstance(pdu, _AdvPdu):
            super().on_advertising_pdu(pdu)
            return
        if self.le_scan_enable:
            report = hci.HCI_LE_Advertising_Report_Event
            addr = pdu.advertiser_address
            self.send_hci_packet(report([report.Report(
                event_type=pdu.adv_type, address_type=addr.address_type, address=addr,
                data=pdu.data, rssi=-50)]))
            if self.le_scan_type == 1 and pdu.adv_type in (0, 2):  # active scan, scannable
                self.send_hci_packet(report([report.Report(
                    event_type=4, address_type=addr.address_type, address=addr,
                    data=pdu.scan_response, rssi=-50)]))
        pending = self.pending_le_connection
        if pdu.adv_type == 0 and pending is not None and \
                pending.peer_address == pdu.advertiser_address:
            self.create_le_connection(pdu.advertiser_address)


class _ReportingDevice(Device):
    """A Device that hands every raw advertising report to ``on_report`` (adv and scan
    response separately, as received)."""

    on_report: Callable[[Any], None] | None = None

    def on_advertising_report(self, report: Any) -> None:
        if self.on_report is not None:
            self.on_report(report)
        super().on_advertising_report(report)


def _new_device(link: LocalLink, name: str, address: hci.Address) -> _ReportingDevice:
    ctl = _SimController(f"ctl-{name}", link)
    dev = _ReportingDevice(name=name, address=address, host=Host(ctl, AsyncPipeSink(ctl)))
    dev.advertising_data = b""
    dev.scan_response_data = b""
    dev.sim_controller = ctl  # type: ignore[attr-defined]
    return dev


def _be(addr: hci.Address) -> bytes:
    """MicroPython's address byte order (most significant first)."""
    return bytes(addr)[::-1]


def _key7(addr: hci.Address) -> bytes:
    """NimBLE's ble_addr_t: type, then the address little-endian."""
    return bytes([addr.address_type]) + bytes(addr)


def _enc(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return {"b": bytes(x).hex()}
    return x


def board_address(unique_id: bytes) -> hci.Address:
    """The board's BLE identity: a random static address from its BT MAC (base MAC + 2)."""
    mac = bytearray(unique_id[:6].ljust(6, b"\0"))
    mac[5] = (mac[5] + 2) & 0xFF
    mac[0] |= 0xC0
    return hci.Address(":".join("%02X" % b for b in mac), hci.Address.RANDOM_DEVICE_ADDRESS)


# --- per-board radio state ---------------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    """One value buffer of MicroPython's gatts_db."""

    flags: int
    data: bytes = b""
    alloc: int = DEFAULT_ATTR_LEN
    append: bool = False


@dataclasses.dataclass
class _ConnState:
    conn: Connection
    pairing: bool = False
    bonded: bool = False
    authenticated: bool = False


class _Radio:
    def __init__(self, board: SimBoard, address: hci.Address) -> None:
        self.name = board.name
        self.address = address
        self.lock = threading.Lock()
        self.alock: asyncio.Lock | None = None  # created in the loop
        self.device: _ReportingDevice | None = None
        self.owner: Any = None  # the firmware connection that activated the radio
        self.active = False
        # NimBLE settings: kept across active(False)/active(True), as there
        self.gap_name = DEFAULT_GAP_NAME
        self.mtu = DEFAULT_MTU
        self.bond = self.mitm = self.le_secure = False
        self.io = 3  # NO_INPUT_OUTPUT
        self.addr_mode = 1
        self.irk = bytes(16)
        # state of one activation
        self.adv_data = b""
        self.resp_data = b""
        self.advertising = False
        self.scanning = False
        self.scan_stop: asyncio.TimerHandle | None = None
        self.db: dict[int, _Entry] = {}
        self.attrs: dict[int, Characteristic[Any]] = {}
        self.conns: dict[int, _ConnState] = {}
        self.passkeys: dict[int, tuple[int, asyncio.Future[int]]] = {}

    def reset_activation(self) -> None:
        with self.lock:
            self.active = False
            self.adv_data = self.resp_data = b""
            self.advertising = self.scanning = False
            self.db.clear()
            self.attrs.clear()
            self.conns.clear()
        for _, fut in self.passkeys.values():
            if not fut.done():
                fut.cancel()
        self.passkeys.clear()


class _FirmwareKeyStore(KeyStore):
    """Bumble's bond store, kept by the firmware through IRQ 29/30 as NimBLE does."""

    def __init__(self, ble: BleWorld, radio: _Radio) -> None:
        self.ble = ble
        self.radio = radio

    async def update(self, name: str, keys: PairingKeys) -> None:
        r = self.radio
        if not r.bond:
            return
        addr = hci.Address(name)
        if keys.address_type is not None:
            addr = hci.Address(bytes(addr), keys.address_type)
        blob = json.dumps(keys.to_dict()).encode()
        ok = True
        for sec_type in (SEC_PEER, SEC_OUR):
            ok = bool(await self.ble._ask(r, IRQ_SET_SECRET, sec_type, _key7(addr), blob)) and ok
        if ok:
            for cs in r.conns.values():
                if cs.conn.peer_address == addr or str(cs.conn.peer_address) == name:
                    cs.bonded = True

    async def get(self, name: str) -> PairingKeys | None:
        addr = hci.Address(name)
        value = await self.ble._ask(self.radio, IRQ_GET_SECRET, SEC_OUR, 0, _key7(addr))
        if not value:
            return None
        try:
            keys = PairingKeys.from_dict(json.loads(bytes.fromhex(value)))
        except (ValueError, KeyError, TypeError):
            return None  # not ours (NimBLE would reject a wrongly sized value the same way)
        ltk = keys.ltk or keys.ltk_peripheral or keys.ltk_central
        for cs in self.radio.conns.values():  # encryption from a bond: the link is bonded
            if str(cs.conn.peer_address) == name:
                cs.bonded = True
                cs.authenticated = bool(ltk and ltk.authenticated)
        return keys

    async def delete(self, name: str) -> None:
        addr = hci.Address(name)
        for sec_type in (SEC_PEER, SEC_OUR):
            await self.ble._ask(self.radio, IRQ_SET_SECRET, sec_type, _key7(addr), None)

    async def get_all(self) -> list[tuple[str, PairingKeys]]:
        # Bumble asks while powering on (the firmware is then blocked in active(True));
        # peers are looked up one by one instead (no address resolution).
        return []


class _FirmwareDelegate(PairingDelegate):
    """SMP user interaction, handed to the firmware as IRQ 31 and answered by gap_passkey."""

    def __init__(self, ble: BleWorld, radio: _Radio, conn_handle: int, io: int) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability(io))
        self.ble = ble
        self.radio = radio
        self.conn_handle = conn_handle

    async def _action(self, action: int, number: int) -> int | None:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.radio.passkeys[self.conn_handle] = (action, fut)
        self.ble._emit(self.radio, IRQ_PASSKEY_ACTION, self.conn_handle, action, number)
        try:
            return await asyncio.wait_for(fut, PASSKEY_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            return None
        finally:
            self.radio.passkeys.pop(self.conn_handle, None)

    async def compare_numbers(self, number: int, digits: int) -> bool:
        return bool(await self._action(PASSKEY_NUMCMP, number))

    async def get_number(self) -> int | None:
        return await self._action(PASSKEY_INPUT, 0)

    async def generate_passkey(self) -> int:
        passkey = await self._action(PASSKEY_DISPLAY, 0)
        return 0 if passkey is None else passkey


# --- the world side -------------------------------------------------------------------


class BleWorld:
    """Serves the ``ble_*`` operations of a :class:`World` with Bumble.

    ``BleWorld(world)`` registers the operations and starts the Bumble thread; ``close()``
    stops it. :meth:`central` makes a Bumble central on the same radio link."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, daemon=True, name="ble-bumble")
        self._thread.start()
        self.link: LocalLink = self.run(self._make_link())
        self.radios: dict[str, _Radio] = {}
        self.centrals: list[BleCentral] = []
        self._closed = False
        self._hci_servers: list[Any] = []
        self._rid = 0
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._watch_owners()))
        for name in ("active", "config", "adv", "register", "read", "write", "notify",
                     "set_buffer", "disconnect", "pair", "passkey", "reply", "scan"):
            world.register_op("ble_" + name, getattr(self, "_op_" + name))

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _make_link(self) -> LocalLink:
        return LocalLink()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coro`` in the Bumble loop and wait for its result (not from that loop)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("BleWorld.run() called from the Bumble loop itself")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"BLE stack did not answer within {timeout} s") from None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        # For request handlers: a stuck stack becomes OSError(ETIMEDOUT) in the firmware,
        # any other stack failure OSError(EIO); never an exception out of the world.
        try:
            return self.run(coro, timeout)
        except OpError:
            raise
        except TimeoutError as e:
            raise OpError(ETIMEDOUT, str(e)) from e
        except Exception as e:  # noqa: BLE001
            log.warning("BLE stack error: %r", e)
            raise OpError(EIO, f"BLE stack error: {e!r}") from e

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            for t in self._hci_servers:
                try:
                    await t.close()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
            for r in list(self.radios.values()):
                await self._power_off(r, HCI_REMOTE_POWER_OFF)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1) if tasks else None

        try:
            self.run(shutdown(), 5)
        except (TimeoutError, RuntimeError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> BleWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def central(self, name: str = "central", address: str | None = None) -> BleCentral:
        """A Bumble central (GATT client) on the same link: scan, connect, pair, talk GATT."""
        if address is None:
            n = len(self.centrals) + 1
            address = "F0:CA:11:00:%02X:%02X" % (n >> 8, n & 0xFF)
        c = BleCentral(self, name, hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS))
        self.centrals.append(c)
        return c

    def radio(self, board: SimBoard | str) -> _Radio | None:
        return self.radios.get(board if isinstance(board, str) else board.name)

    def serve_hci(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """A virtual controller on this radio, served as HCI over TCP (H4 packets), for a
        host stack in another process: ``Bumble`` with the transport
        ``tcp-client:127.0.0.1:PORT`` (``cabinlink car --ble bumble:tcp-client:...``). One
        client at a time; returns the port. Closed with the world."""
        from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound = int(sock.getsockname()[1])

        async def go() -> None:
            transport = await open_tcp_server_transport_with_socket(sock)
            ctl = _SimController(f"ctl-hci-{bound}", self.link)
            transport.source.set_packet_sink(ctl)
            ctl.host = transport.sink
            self._hci_servers.append(transport)

        self.run(go())
        return bound

    # --- helpers ------------------------------------------------------------------------
    def _radio(self, board: SimBoard) -> _Radio:
        r = self.radios.get(board.name)
        if r is None:
            addr = board_address(board.unique_id)
            taken = {str(x.address) for x in self.radios.values()}
            if str(addr) in taken:  # two boards with the same unique_id: still distinct
                h = sum(board.name.encode()) & 0xFFFF
                addr = board_address(bytes([0, 0, 0, 0xB1, h >> 8, h & 0xFF]))
            r = self.radios[board.name] = _Radio(board, addr)
        return r

    def _active(self, board: SimBoard) -> _Radio:
        r = self._radio(board)
        if not r.active or r.owner is not board.conn:
            raise OpError(ENODEV, "bluetooth not active")
        return r

    def _emit(self, r: _Radio, irq: int, *args: Any, rid: int | None = None,
              value: bytes | None = None) -> bool:
        # Loop thread (or a handler): push an IRQ to the board's firmware process.
        # value: what a GATTS_WRITE wrote; gatts_read() in the handler returns it, as on an
        # ESP32, whose IRQ runs before the stack answers the write (a later write cannot
        # overwrite it first).
        board = self.world.boards.get(r.name)
        conn = board.conn if board is not None else None
        if conn is None or conn is not r.owner or not r.active or getattr(conn, "closed", False):
            return False
        ev: dict[str, Any] = {"ev": "ble", "irq": irq, "a": [_enc(a) for a in args]}
        if rid is not None:
            ev["rid"] = rid
        if value is not None:
            ev["v"] = value.hex()
        conn.event(ev)
        return True

    async def _ask(self, r: _Radio, irq: int, *args: Any) -> Any:
        # An IRQ whose return value the stack needs (29/30); None when nobody answers.
        self._rid += 1
        rid = self._rid
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._replies[rid] = fut
        try:
            if not self._emit(r, irq, *args, rid=rid):
                return None
            return await asyncio.wait_for(fut, REPLY_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("%s: no answer to IRQ %d", r.name, irq)
            return None
        finally:
            self._replies.pop(rid, None)

    async def _watch_owners(self) -> None:
        # A firmware process that died (power cut, crash, reset) takes its radio with it:
        # the centrals see a supervision timeout.
        while True:
            await asyncio.sleep(0.1)
            for r in list(self.radios.values()):
                if r.device is None:
                    continue
                board = self.world.boards.get(r.name)
                conn = board.conn if board is not None else None
                if conn is not r.owner or getattr(r.owner, "closed", False):
                    await self._power_off(r, HCI_CONNECTION_TIMEOUT)

    # --- power ----------------------------------------------------------------------------
    async def _power_on(self, r: _Radio, owner: Any, irk: bytes) -> None:
        if r.alock is None:
            r.alock = asyncio.Lock()
        if r.device is not None and r.owner is owner:
            return
        await self._power_off(r, HCI_CONNECTION_TIMEOUT)
        async with r.alock:
            r.reset_activation()
            r.irk = irk or r.irk
            dev = _new_device(self.link, r.name, r.address)
            dev.irk = r.irk
            dev.keystore = _FirmwareKeyStore(self, r)
            dev.pairing_config_factory = lambda conn: self._pairing_config(r, conn)
            dev.on_report = lambda report: self._on_scan_report(r, report)
            dev.gatt_server.max_mtu = r.mtu
            dev.on("connection", lambda conn: self._on_connection(r, conn))
            await dev.power_on()
            r.device = dev
            r.owner = owner
            self._reset_gatt(r)
            with r.lock:
                r.active = True

    async def _power_off(self, r: _Radio, reason: int) -> None:
        if r.alock is None:
            r.alock = asyncio.Lock()
        async with r.alock:
            dev = r.device
            if dev is None:
                return
            with r.lock:
                r.active = False  # NimBLE is "not active" while stopping: no IRQs
            if r.scan_stop is not None:
                r.scan_stop.cancel()
            try:
                await asyncio.wait_for(dev.stop_advertising(), 2)
            except Exception:  # noqa: BLE001 - tearing down regardless
                pass
            for conn in list(dev.connections.values()):
                try:
                    await asyncio.wait_for(conn.disconnect(reason), 2)
                except Exception:  # noqa: BLE001
                    pass
            self.link.remove_controller(dev.sim_controller)  # type: ignore[attr-defined]
            r.device = None
            r.owner = None
            r.reset_activation()

    # --- GATT database ----------------------------------------------------------------------
    def _reset_gatt(self, r: _Radio) -> None:
        dev = r.device
        assert dev is not None
        srv = dev.gatt_server
        srv.attributes.clear()
        srv.attributes_by_handle.clear()
        srv.services.clear()
        dev.add_default_services()
        for a in srv.attributes:  # the device name follows config(gap_name=...)
            if isinstance(a, Characteristic) and a.uuid == GATT_DEVICE_NAME_CHARACTERISTIC:
                a.value = CharacteristicValue(read=lambda conn: r.gap_name)

    def _value(self, r: _Radio, handle: int, flags: int, descriptor: bool) -> CharacteristicValue:
        def read(conn: Connection) -> bytes:
            if not flags & F_READ:
                raise att.ATT_Error(att.ATT_READ_NOT_PERMITTED_ERROR, handle)
            if flags & F_READ_AUTHN and not self._authenticated(r, conn):
                raise att.ATT_Error(att.ATT_INSUFFICIENT_AUTHENTICATION_ERROR, handle)
            with r.lock:
                e = r.db.get(handle)
                if e is None:
                    raise att.ATT_Error(att.ATT_ATTRIBUTE_NOT_FOUND_ERROR, handle)
                return e.data

        def write(conn: Connection, value: bytes) -> None:
            if not flags & (F_WRITE | F_WRITE_NR | F_AUTH_SIGNED):
                raise att.ATT_Error(att.ATT_WRITE_NOT_PERMITTED_ERROR, handle)
            if flags & F_WRITE_AUTHN and not self._authenticated(r, conn):
                raise att.ATT_Error(att.ATT_INSUFFICIENT_AUTHENTICATION_ERROR, handle)
            with r.lock:
                e = r.db.get(handle)
                if e is None:
                    raise att.ATT_Error(att.ATT_ATTRIBUTE_NOT_FOUND_ERROR, handle)
                # characteristic_access_cb: truncate to the buffer, or append to it
                offset = len(e.data) if e.append else 0
                n = min(e.alloc, len(value) + offset)
                e.data = e.data[:offset] + bytes(value[:max(n - offset, 0)])
                written = e.data
            self._emit(r, IRQ_GATTS_WRITE, conn.handle, handle, value=written)

        return CharacteristicValue(read=read, write=write)

    def _authenticated(self, r: _Radio, conn: Connection) -> bool:
        cs = r.conns.get(conn.handle)
        return bool(cs and cs.authenticated and conn.is_encrypted)

    @staticmethod
    def _permissions(flags: int, descriptor: bool) -> Any:
        p = 0
        if flags & F_READ:
            p |= Characteristic.READABLE
        if flags & (F_WRITE | F_WRITE_NR | F_AUTH_SIGNED):
            p |= Characteristic.WRITEABLE
        if flags & (F_READ_ENC | F_READ_AUTHN):
            p |= Characteristic.READ_REQUIRES_ENCRYPTION
        if flags & (F_WRITE_ENC | F_WRITE_AUTHN):
            p |= Characteristic.WRITE_REQUIRES_ENCRYPTION
        if flags & F_READ_AUTHZ:
            p |= Characteristic.READ_REQUIRES_AUTHORIZATION
        if flags & F_WRITE_AUTHZ:
            p |= Characteristic.WRITE_REQUIRES_AUTHORIZATION
        return Characteristic.Permissions(p)

    def _register(self, r: _Radio, services: list[Any]) -> list[list[int]]:
        # Loop thread. services: [[uuid_le_hex, [[uuid_le_hex, flags, [[uuid, flags], ...]]]]]
        dev = r.device
        assert dev is not None
        self._reset_gatt(r)
        built: list[list[tuple[Any, bool, int]]] = []
        for s_uuid, chars in services:
            bchars = []
            order: list[tuple[Any, bool, int]] = []
            for c_uuid, c_flags, descs in chars:
                bdescs = []
                for d_uuid, d_flags in descs:
                    d = Descriptor(UUID.from_bytes(bytes.fromhex(d_uuid)),
                                   self._permissions(d_flags, True))
                    bdescs.append(d)
                c = Characteristic(UUID.from_bytes(bytes.fromhex(c_uuid)),
                                   Characteristic.Properties(c_flags & 0x7F),
                                   self._permissions(c_flags, False), descriptors=bdescs)
                bchars.append(c)
                order.append((c, False, c_flags))
                order.extend((d, True, f) for d, (_, f) in zip(bdescs, descs))
            dev.gatt_server.add_service(Service(UUID.from_bytes(bytes.fromhex(s_uuid)), bchars))
            built.append(order)
        result = []
        with r.lock:
            r.db.clear()
            r.attrs.clear()
            for order in built:
                handles = []
                for attr, is_desc, flags in order:
                    attr.value = self._value(r, attr.handle, flags, is_desc)
                    r.db[attr.handle] = _Entry(flags)
                    if not is_desc:
                        r.attrs[attr.handle] = attr
                    handles.append(attr.handle)
                result.append(handles)
        return result

    # --- connections, security ----------------------------------------------------------------
    def _on_connection(self, r: _Radio, conn: Connection) -> None:
        if conn.role != hci.Role.PERIPHERAL:
            return
        with r.lock:
            r.advertising = False  # NimBLE stops advertising on connection
            r.conns[conn.handle] = _ConnState(conn)
        peer = conn.peer_address
        self._emit(r, IRQ_CENTRAL_CONNECT, conn.handle, peer.address_type, _be(peer))

        def on_disconnection(reason: int) -> None:
            with r.lock:
                r.conns.pop(conn.handle, None)
            pk = r.passkeys.pop(conn.handle, None)
            if pk is not None and not pk[1].done():
                pk[1].cancel()
            p = conn.peer_address
            self._emit(r, IRQ_CENTRAL_DISCONNECT, conn.handle, p.address_type, _be(p))

        def on_mtu() -> None:
            self._emit(r, IRQ_MTU_EXCHANGED, conn.handle, conn.att_mtu)

        def on_pairing_start() -> None:
            cs = r.conns.get(conn.handle)
            if cs is not None:
                cs.pairing = True

        def on_pairing(keys: PairingKeys) -> None:
            cs = r.conns.get(conn.handle)
            if cs is None:
                return
            cs.pairing = False
            ltk = keys.ltk or keys.ltk_peripheral or keys.ltk_central
            cs.authenticated = bool(ltk and ltk.authenticated)
            self._encryption_irq(r, cs)

        def on_pairing_failure(reason: int) -> None:
            cs = r.conns.get(conn.handle)
            if cs is not None:
                cs.pairing = False
                self._encryption_irq(r, cs)

        def on_encryption_change() -> None:
            cs = r.conns.get(conn.handle)
            if cs is None or cs.pairing:
                return  # reported once pairing is done, with the bond state
            self._encryption_irq(r, cs)

        def on_encryption_failure(error: int) -> None:
            cs = r.conns.get(conn.handle)
            if cs is not None and not cs.pairing:
                self._encryption_irq(r, cs)

        conn.on(conn.EVENT_DISCONNECTION, on_disconnection)
        conn.on(conn.EVENT_CONNECTION_ATT_MTU_UPDATE, on_mtu)
        conn.on(conn.EVENT_PAIRING_START, on_pairing_start)
        conn.on(conn.EVENT_PAIRING, on_pairing)
        conn.on(conn.EVENT_PAIRING_FAILURE, on_pairing_failure)
        conn.on(conn.EVENT_CONNECTION_ENCRYPTION_CHANGE, on_encryption_change)
        conn.on(conn.EVENT_CONNECTION_ENCRYPTION_FAILURE, on_encryption_failure)

    def _encryption_irq(self, r: _Radio, cs: _ConnState) -> None:
        c = cs.conn
        enc = bool(c.is_encrypted)
        # Bumble's link controller sends the v1 Encryption Change event (no key size); both
        # sides negotiate the SMP maximum, 16.
        key_size = (c.encryption_key_size or 16) if enc else 0
        self._emit(r, IRQ_ENCRYPTION_UPDATE, c.handle, enc, enc and cs.authenticated,
                   enc and cs.bonded, key_size)

    def _pairing_config(self, r: _Radio, conn: Connection) -> PairingConfig:
        return PairingConfig(sc=r.le_secure, mitm=r.mitm, bonding=r.bond,
                             delegate=_FirmwareDelegate(self, r, conn.handle, r.io))

    def _on_scan_report(self, r: _Radio, report: Any) -> None:
        if r.scanning:
            a = report.address
            self._emit(r, IRQ_SCAN_RESULT, a.address_type, _be(a), int(report.event_type),
                       int(report.rssi), bytes(report.data))

    # --- operations (world connection threads, under World.lock) ----------------------------
    def _op_active(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._radio(b)
        on = req.get("on")
        if on:
            self._call(self._power_on(r, b.conn, bytes.fromhex(req.get("irk") or "")))
        elif on is not None:
            if r.owner is b.conn:
                self._call(self._power_off(r, HCI_REMOTE_POWER_OFF))
        return r.active and r.owner is b.conn

    def _op_config(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._radio(b)
        if "get" in req:
            key = req["get"]
            if key == "gap_name":
                return r.gap_name.hex()
            r = self._active(b)
            if key == "mac":
                return [r.address.address_type, _be(r.address).hex()]
            if key == "mtu":
                return r.mtu
            raise OpError(EINVAL, "unknown config param")
        for key, value in req["set"].items():
            if key == "gap_name":
                name = bytes.fromhex(value)
                if len(name) > GAP_NAME_MAX:
                    raise OpError(EINVAL, "EINVAL")
                r.gap_name = name
                if r.device is not None:
                    r.device.name = name.decode("utf-8", "replace")
            elif key == "mtu":
                r = self._active(b)
                if not 23 <= value <= 527:  # BLE_ATT_MTU_DFLT .. BLE_ATT_MTU_MAX
                    raise OpError(EINVAL, "EINVAL")
                r.mtu = value
                if r.device is not None:
                    r.device.gatt_server.max_mtu = value
            elif key == "addr_mode":
                r = self._active(b)
                if value == 0:  # no public address in the simulation
                    raise OpError(EINVAL, "EINVAL")
                r.addr_mode = value
            elif key in ("bond", "mitm", "le_secure"):
                setattr(r, key, bool(value))
            elif key == "io":
                if value not in range(5):
                    raise OpError(EINVAL, "EINVAL")
                r.io = value
        return None

    def _op_adv(self, b: SimBoard, req: dict[str, Any]) -> Any:
        interval = req.get("interval_us")
        if interval is None:  # stopping needs no active stack (and never fails)
            r = self._radio(b)
            if r.active and r.owner is b.conn:
                self._call(self._stop_adv(r))
            return None
        r = self._active(b)
        adv = req.get("adv")
        resp = req.get("resp")
        adv_b = r.adv_data if adv is None else bytes.fromhex(adv)
        resp_b = r.resp_data if resp is None else bytes.fromhex(resp)
        if len(adv_b) > ADV_MAX or len(resp_b) > ADV_MAX:
            raise OpError(ADV_TOO_LONG_ERRNO, "advertising data too long")
        units = int(interval) // 625
        if not 0x20 <= units <= 0x4000:
            raise OpError(EINVAL, "EINVAL")
        if req.get("connectable", True):
            kind = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
        elif resp_b:
            kind = AdvertisingType.UNDIRECTED_SCANNABLE
        else:
            kind = AdvertisingType.UNDIRECTED
        r.adv_data, r.resp_data = adv_b, resp_b
        self._call(self._start_adv(r, kind, units))
        return None

    async def _stop_adv(self, r: _Radio) -> None:
        if r.device is not None and r.advertising:
            await r.device.stop_advertising()
        r.advertising = False

    async def _start_adv(self, r: _Radio, kind: AdvertisingType, units: int) -> None:
        dev = r.device
        if dev is None:
            raise OpError(ENODEV, "bluetooth not active")
        ms = (units + 0.5) * 0.625  # Bumble converts back with int(ms / 0.625)
        await dev.start_advertising(advertising_type=kind, advertising_data=r.adv_data,
                                    scan_response_data=r.resp_data,
                                    advertising_interval_min=ms, advertising_interval_max=ms,
                                    own_address_type=hci.OwnAddressType.RANDOM)
        r.advertising = True

    def _op_register(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        if r.advertising or r.scanning or r.conns:
            raise OpError(EBUSY, "EBUSY")  # ble_gatts_reset: GAP busy or peers connected
        return self._call(self._in_loop(self._register, r, req["services"]))

    async def _in_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def _op_read(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._radio(b)
        with r.lock:
            e = r.db.get(req["h"]) if r.active and r.owner is b.conn else None
            if e is None:
                return ""  # the binding ignores the error: empty bytes
            data = e.data
            if e.append:
                e.data = b""
        return data.hex()

    def _op_write(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        h = req["h"]
        data = bytes.fromhex(req["data"])
        with r.lock:
            e = r.db.get(h)
            if e is None:
                raise OpError(EINVAL, "EINVAL")
            e.alloc = max(e.alloc, len(data))
            e.data = data
        if req.get("update"):
            attr = r.attrs.get(h)
            if attr is not None:
                self._call(self._send_update(r, attr))
        return len(data)

    def _local(self, r: _Radio, handle: int) -> bytes:
        # The stack's own read of a value (no permission checks, as NimBLE's local read).
        with r.lock:
            e = r.db.get(handle)
            return e.data if e is not None else b""

    async def _send_update(self, r: _Radio, attr: Characteristic[Any]) -> None:
        # ble_gatts_chr_updated: every subscribed peer, by its CCCD
        dev = r.device
        if dev is None:
            return
        value = self._local(r, attr.handle)
        for bearer, cccds in list(dev.gatt_server.subscribers.items()):
            cccd = cccds.get(attr.handle)
            handle = getattr(bearer, "handle", None)
            if not cccd or handle not in r.conns:
                continue
            if cccd[0] & 0x02:
                self._indicate(r, r.conns[handle].conn, attr, value)
            elif cccd[0] & 0x01:
                await dev.gatt_server.notify_subscriber(r.conns[handle].conn, attr, value, True)

    def _indicate(self, r: _Radio, conn: Connection, attr: Characteristic[Any],
                  data: bytes) -> None:
        dev = r.device
        assert dev is not None

        async def go() -> None:
            status = 0
            try:
                await dev.gatt_server.indicate_subscriber(conn, attr, data, True)
            except TimeoutError:
                status = BLE_HS_ETIMEOUT
            except Exception:  # noqa: BLE001 - disconnected meanwhile
                status = BLE_HS_ENOTCONN
            self._emit(r, IRQ_GATTS_INDICATE_DONE, conn.handle, attr.handle, status)

        self.loop.create_task(go())

    def _op_notify(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        cs = r.conns.get(req["conn"])
        if cs is None:
            raise OpError(ENOTCONN, "ENOTCONN")
        attr = r.attrs.get(req["h"])
        if attr is None:
            raise OpError(ENOENT if req.get("data") is None else EINVAL, "no such characteristic")
        # data None: the local value (the stored one stays as it is either way)
        data = self._local(r, attr.handle) if req.get("data") is None else \
            bytes.fromhex(req["data"])

        async def go() -> None:
            dev = r.device
            if dev is None:
                raise OpError(ENODEV, "bluetooth not active")
            if req.get("indicate"):
                self._indicate(r, cs.conn, attr, data)
            else:
                await dev.gatt_server.notify_subscriber(cs.conn, attr, data, True)

        self._call(go())
        return None

    def _op_set_buffer(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        with r.lock:
            e = r.db.get(req["h"])
            if e is None:
                raise OpError(EINVAL, "EINVAL")
            e.alloc = req["len"]
            e.data = b""
            e.append = bool(req.get("append"))
        return None

    def _op_disconnect(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        cs = r.conns.get(req["conn"])
        if cs is None:
            return False
        asyncio.run_coroutine_threadsafe(cs.conn.disconnect(HCI_REMOTE_USER_TERMINATED), self.loop)
        return True

    def _op_pair(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        cs = r.conns.get(req["conn"])
        if cs is None:
            raise OpError(ENOTCONN, "ENOTCONN")
        self.loop.call_soon_threadsafe(cs.conn.request_pairing)  # SMP Security Request
        return None

    def _op_passkey(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        action = req["action"]
        if action not in (PASSKEY_INPUT, PASSKEY_DISPLAY, PASSKEY_NUMCMP):
            raise OpError(EINVAL, "EINVAL")
        pending = r.passkeys.get(req["conn"])
        if pending is None or pending[0] != action:
            raise OpError(EINVAL, "no such passkey action pending")
        value = req["passkey"]
        result = int(value != 0) if action == PASSKEY_NUMCMP else int(value)
        fut = pending[1]
        self.loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))
        return None

    def _op_reply(self, b: SimBoard, req: dict[str, Any]) -> Any:
        fut = self._replies.get(req["rid"])
        if fut is not None:
            value = req.get("r")
            self.loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(value))
        return None

    def _op_scan(self, b: SimBoard, req: dict[str, Any]) -> Any:
        r = self._active(b)
        duration = req.get("duration_ms")
        if duration is None:
            self._call(self._scan_stop(r))
            return None
        if r.scanning:
            raise OpError(EALREADY, "EALREADY")
        self._call(self._scan_start(r, duration, req["interval_us"], req["window_us"],
                                    bool(req["active"])))
        return None

    async def _scan_start(self, r: _Radio, duration_ms: int, interval_us: int,
                          window_us: int, active: bool) -> None:
        dev = r.device
        if dev is None:
            raise OpError(ENODEV, "bluetooth not active")
        itvl = min(max(interval_us / 1000, 2.5), 10240.0)
        window = min(max(window_us / 1000, 2.5), itvl)
        await dev.start_scanning(legacy=True, active=active, scan_interval=itvl,
                                 scan_window=window)
        r.scanning = True
        if duration_ms > 0:
            r.scan_stop = self.loop.call_later(
                duration_ms / 1000, lambda: self.loop.create_task(self._scan_stop(r)))

    async def _scan_stop(self, r: _Radio) -> None:
        if r.scan_stop is not None:
            r.scan_stop.cancel()
            r.scan_stop = None
        if not r.scanning or r.device is None:
            return
        r.scanning = False
        await r.device.stop_scanning(legacy=True)
        self._emit(r, IRQ_SCAN_DONE)


# --- a central for tests and the reference car ----------------------------------------------


@dataclasses.dataclass
class Advert:
    """One advertiser as seen by an active scan: the raw AD bytes of both PDUs."""

    address: str
    addr_type: int
    adv_type: int  # 0 ADV_IND, 2 ADV_SCAN_IND, 3 ADV_NONCONN_IND
    adv_data: bytes
    scan_response: bytes | None
    rssi: int

    @property
    def connectable(self) -> bool:
        return self.adv_type in (0, 1)

    def fields(self) -> list[tuple[int, bytes]]:
        """(AD type, value) of every AD structure, advertising data then scan response."""
        out = []
        for data in (self.adv_data, self.scan_response or b""):
            i = 0
            while i < len(data) and data[i]:
                n = data[i]
                out.append((data[i + 1], data[i + 2:i + 1 + n]))
                i += 1 + n
        return out


def _uuid(x: str | int | UUID) -> UUID:
    if isinstance(x, UUID):
        return x
    if isinstance(x, int):
        return UUID.from_16_bits(x)
    return UUID(x)


class BleCentral:
    """A Bumble central on the simulated link. Blocking, thread-safe methods (they run in
    the Bumble loop); for asyncio code, ``await asyncio.to_thread(central.scan, ...)``."""

    def __init__(self, ble: BleWorld, name: str, address: hci.Address) -> None:
        self.ble = ble
        self.name = name
        self.address = address
        self.io = PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
        self.delegate_factory: Callable[[], PairingDelegate] | None = None
        self._seen: dict[str, Advert] = {}
        self._waiters: list[tuple[Callable[[Advert], bool], asyncio.Future[Advert]]] = []
        self.links: list[BleLink] = []
        self.device: _ReportingDevice = ble.run(self._start())

    async def _start(self) -> _ReportingDevice:
        dev = _new_device(self.ble.link, self.name, self.address)
        dev.on_report = self._on_report
        dev.pairing_config_factory = self._pairing_config
        # The link object exists from the first moment of the connection, so nothing the
        # peripheral sends right away (a security request, ...) goes unheard.
        dev.on("connection", lambda conn: self.links.append(BleLink(self, conn)))
        await dev.power_on()
        return dev

    def _pairing_config(self, conn: Connection) -> PairingConfig:
        link = next((l for l in self.links if l.connection is conn), None)
        sc, mitm, bond = link.security if link is not None else (True, False, True)
        delegate = self.delegate_factory() if self.delegate_factory else \
            PairingDelegate(io_capability=self.io)
        return PairingConfig(sc=sc, mitm=mitm, bonding=bond, delegate=delegate)

    def _on_report(self, report: Any) -> None:
        addr = str(report.address)
        kind = int(report.event_type)
        if kind == 4:  # scan response to the last advertisement of this address
            prev = self._seen.get(addr)
            if prev is None:
                return
            adv = dataclasses.replace(prev, scan_response=bytes(report.data))
        else:
            adv = Advert(addr, report.address.address_type, kind, bytes(report.data), None,
                         int(report.rssi))
            if self.device.scanning_is_passive is False and kind in (0, 2):
                self._seen[addr] = adv
                return  # complete once its scan response is there
        self._seen[addr] = adv
        for match, fut in list(self._waiters):
            if not fut.done() and match(adv):
                fut.set_result(adv)

    def scan(self, match: Callable[[Advert], bool] | None = None, timeout: float = 5.0,
             active: bool = True) -> Advert:
        """Scan until an advertiser ``match``es (first one by default); raises TimeoutError."""
        async def go() -> Advert:
            fut: asyncio.Future[Advert] = self.ble.loop.create_future()
            entry = (match or (lambda a: True), fut)
            self._waiters.append(entry)
            self._seen.clear()
            await self.device.start_scanning(legacy=True, active=active, scan_interval=10,
                                             scan_window=10)
            try:
                return await asyncio.wait_for(fut, timeout)
            finally:
                self._waiters.remove(entry)
                await self.device.stop_scanning(legacy=True)

        try:
            return self.ble.run(go(), timeout + 5)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self.name}: no matching advertiser within {timeout} s") from None

    def connect(self, target: Advert | str, timeout: float = 5.0) -> BleLink:
        """Connect to an advertiser (its Advert or address string)."""
        addr = target.address if isinstance(target, Advert) else target
        addr_type = target.addr_type if isinstance(target, Advert) else \
            hci.Address.RANDOM_DEVICE_ADDRESS

        async def go() -> Connection:
            return await self.device.connect(hci.Address(addr, addr_type), timeout=timeout)

        conn = self.ble.run(go(), timeout + 5)
        return next(link for link in self.links if link.connection is conn)

    def close(self) -> None:
        async def go() -> None:
            for conn in list(self.device.connections.values()):
                try:
                    await asyncio.wait_for(conn.disconnect(), 2)
                except Exception:  # noqa: BLE001
                    pass
            self.ble.link.remove_controller(self.device.sim_controller)  # type: ignore[attr-defined]

        try:
            self.ble.run(go(), 5)
        except (TimeoutError, RuntimeError):
            pass


class BleLink:
    """One connection of a :class:`BleCentral` to a peripheral (a GATT client on it)."""

    def __init__(self, central: BleCentral, conn: Connection) -> None:
        self.central = central
        self.ble = central.ble
        self.connection = conn
        self.peer = Peer(conn)
        self.security = (True, False, True)  # sc, mitm, bond for pair()
        self.disconnect_reason: int | None = None
        self._gone = threading.Event()
        self._queues: dict[int, queue.Queue[bytes]] = {}
        self._discovered = False

        def on_disconnection(reason: int) -> None:
            self.disconnect_reason = reason
            self._gone.set()

        def on_security_request(auth_req: Any) -> None:
            self.ble.loop.create_task(self._secure())

        def on_encryption_change() -> None:
            if conn.is_encrypted:
                self._encrypted.set()

        self._encrypted = threading.Event()
        conn.on(conn.EVENT_DISCONNECTION, on_disconnection)
        conn.on(conn.EVENT_SECURITY_REQUEST, on_security_request)
        conn.on(conn.EVENT_CONNECTION_ENCRYPTION_CHANGE, on_encryption_change)

    async def _secure(self) -> None:
        dev = self.central.device
        keys = await dev.keystore.get(str(self.connection.peer_address)) if dev.keystore else None
        try:
            if keys is not None:
                await self.connection.encrypt()
            else:
                await self.connection.pair()
        except Exception as e:  # noqa: BLE001 - the peripheral sees the failure itself
            log.info("%s: security request not satisfied: %s", self.central.name, e)

    @property
    def handle(self) -> int:
        return self.connection.handle

    @property
    def mtu(self) -> int:
        return self.connection.att_mtu

    @property
    def encrypted(self) -> bool:
        return bool(self.connection.is_encrypted)

    @property
    def connected(self) -> bool:
        return not self._gone.is_set()

    def exchange_mtu(self, mtu: int = 247) -> int:
        return self.ble.run(self.peer.request_mtu(mtu))

    def discover(self) -> dict[str, list[tuple[str, int, int]]]:
        """Services and their characteristics: {service uuid: [(char uuid, value handle,
        properties)]} (UUIDs as Bumble prints them, e.g. '180A' or 'CAB488E4-...')."""
        async def go() -> dict[str, list[tuple[str, int, int]]]:
            await self.peer.discover_services()
            out = {}
            for s in self.peer.services:
                await s.discover_characteristics()
                out[s.uuid.to_hex_str("-")] = [
                    (c.uuid.to_hex_str("-"), c.handle, int(c.properties))
                    for c in s.characteristics]
            return out

        result = self.ble.run(go())
        self._discovered = True
        return result

    def characteristic(self, char: str | int | UUID, service: str | int | UUID | None = None
                       ) -> Any:
        if not self._discovered:
            self.discover()
        chars = self.peer.get_characteristics_by_uuid(
            _uuid(char), _uuid(service) if service is not None else None)
        if not chars:
            raise KeyError(f"no characteristic {char} on {self.connection.peer_address}")
        return chars[0]

    def handle_of(self, char: str | int | UUID, service: str | int | UUID | None = None) -> int:
        return int(self.characteristic(char, service).handle)

    def write(self, char: str | int | UUID, data: bytes, response: bool = True) -> None:
        self.ble.run(self.peer.write_value(self.characteristic(char), bytes(data),
                                           with_response=response))

    def write_handle(self, handle: int, data: bytes, response: bool = True) -> None:
        self.ble.run(self.peer.write_value(handle, bytes(data), with_response=response))

    def read(self, char: str | int | UUID) -> bytes:
        return bytes(self.ble.run(self.peer.read_value(self.characteristic(char))))

    def read_handle(self, handle: int) -> bytes:
        return bytes(self.ble.run(self.peer.read_value(handle)))

    def subscribe(self, char: str | int | UUID, indicate: bool = False,
                  callback: Callable[[bytes], None] | None = None) -> queue.Queue[bytes]:
        """Enable notifications (or indications); values arrive in the returned queue and,
        if given, in ``callback`` (called in the Bumble thread)."""
        c = self.characteristic(char)
        q = self._queues.setdefault(int(c.handle), queue.Queue())

        def on_value(value: bytes) -> None:
            q.put(bytes(value))
            if callback is not None:
                callback(bytes(value))

        self.ble.run(self.peer.subscribe(c, on_value, prefer_notify=not indicate))
        return q

    def pair(self, bond: bool = True, mitm: bool = False, sc: bool = True,
             timeout: float = 15.0) -> None:
        """Pair (and bond) as initiator; raises on failure."""
        self.security = (sc, mitm, bond)
        self.ble.run(self.connection.pair(), timeout)

    def encrypt(self, timeout: float = 10.0) -> None:
        """Encrypt with the keys of an earlier bond (raises if there are none)."""
        self.ble.run(self.connection.encrypt(), timeout)

    def wait_encrypted(self, timeout: float = 5.0) -> None:
        """Wait until the link is encrypted (e.g. after the peripheral's security request)."""
        if not self._encrypted.wait(timeout):
            raise TimeoutError("link not encrypted")

    def disconnect(self, timeout: float = 5.0) -> int | None:
        if self.connected:
            try:
                self.ble.run(self.connection.disconnect(), timeout)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._gone.wait(timeout)
        return self.disconnect_reason

    def wait_disconnected(self, timeout: float = 5.0) -> int:
        if not self._gone.wait(timeout):
            raise TimeoutError("still connected")
        assert self.disconnect_reason is not None
        return self.disconnect_reason
