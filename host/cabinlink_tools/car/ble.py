"""The car's BLE side (spec 8): a central that finds accessories by the CabinLink service
UUID, connects, and carries whole messages in fragments (spec 8.4).

Transports (one interface, :class:`BleTransport`; all callbacks reach the car in its own
event loop):

- :class:`BumbleTransport` - a Bumble host stack. ``BumbleTransport(ble_world)`` is a
  central on the simulation's radio (:class:`~cabinlink_tools.sim.ble.BleWorld`, Bumble in
  its own thread); ``BumbleTransport.open("usb:0")`` (any Bumble transport name: a USB HCI
  dongle, ``serial:...``, ``tcp-client:HOST:PORT``) runs Bumble in the car's own loop.
- :class:`BleakTransport` - the operating system's Bluetooth through ``bleak`` (BlueZ,
  CoreBluetooth, WinRT). ``bleak`` is imported only when this transport is opened; it is
  not a pinned dependency of this project (it was not testable here), and a missing
  ``bleak`` is a :class:`BleUnavailable` saying what to install.

:class:`CarBleLink` is the per-connection link the engine sends through: a
:class:`cabinlink.ble_frag.Sender` cutting each message to ATT_MTU - 3, written one
fragment at a time (Write with response, so the accessory's buffer paces the car), and a
:class:`cabinlink.ble_frag.Reassembler` for the notifications.

Contract: ``BleTransport.connect`` returns a connection whose notifications are enabled on
TX (M-8.3-2, before the first request) after an ATT MTU exchange asking for 247; it raises
``OSError``/``TimeoutError`` when the accessory cannot be reached. ``on_disconnect`` is
called once, when the connection ends for any reason.
"""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cabinlink.ble_frag import Reassembler, Sender

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE = "cab488e3-1190-4c04-8cbe-c122f022e37b"
RX = "cab488e4-1190-4c04-8cbe-c122f022e37b"  # car -> accessory (write)
TX = "cab488e5-1190-4c04-8cbe-c122f022e37b"  # accessory -> car (notify)
SERVICE_LE = bytes.fromhex(SERVICE.replace("-", ""))[::-1]  # as in advertising data
MTU = 247


class BleUnavailable(RuntimeError):
    """The BLE transport cannot run here (a package or an adapter is missing)."""


@dataclass(frozen=True)
class BleAdvert:
    """A CabinLink advertiser: address, name, and the 6 service data bytes of spec 8.2."""

    address: str
    name: str | None
    rssi: int | None
    service_data: bytes

    @property
    def version(self) -> tuple[int, int]:
        return self.service_data[0], self.service_data[1]

    @property
    def device_class(self) -> int:
        return self.service_data[2]

    @property
    def short_id(self) -> int:
        return self.service_data[3] << 8 | self.service_data[4]

    @property
    def flags(self) -> int:
        return self.service_data[5]  # bit 0 also on CAN, 1 bonding, 2 safe mode

    @classmethod
    def from_ad(cls, address: str, ad: list[tuple[int, bytes]], rssi: int | None) -> BleAdvert | None:
        """From AD structures (advertising data, then scan response); None unless it is a
        CabinLink accessory (its service UUID, never its name: M-8.2-3)."""
        has_uuid = False
        sdata = None
        name = None
        for t, v in ad:
            if t in (0x06, 0x07) and any(v[i:i + 16] == SERVICE_LE for i in range(0, len(v), 16)):
                has_uuid = True
            elif t == 0x21 and v[:16] == SERVICE_LE and len(v) >= 22:
                sdata = bytes(v[16:22])  # bytes after the sixth are ignored (M-8.2-3)
            elif t in (0x08, 0x09) and name is None:
                name = bytes(v).decode("utf-8", "replace")
        if not has_uuid and sdata is None:
            return None
        return cls(address, name, rssi, sdata or bytes(6))


class BleConnection(ABC):
    """One connection to an accessory (GATT client on its CabinLink service)."""

    address: str
    mtu: int = 23

    @abstractmethod
    async def write(self, fragment: bytes) -> None:
        """Write one fragment to RX."""

    @abstractmethod
    async def disconnect(self) -> None:
        """End the connection (no error if it is already gone)."""


class BleTransport(ABC):
    """A BLE central (see the module text)."""

    name = "ble"

    @abstractmethod
    async def start(self, on_advert: Callable[[BleAdvert], None]) -> None:
        """Power on and scan continuously; ``on_advert`` for every CabinLink advertiser."""

    @abstractmethod
    async def connect(self, address: str, on_fragment: Callable[[bytes], None],
                      on_disconnect: Callable[[], None], timeout: float = 10.0) -> BleConnection:
        """Connect, exchange the MTU, enable TX notifications (see the contract)."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect everything, stop scanning, release the adapter."""


# --- the car's link over one connection -------------------------------------------------------


class CarBleLink:
    """Fragments out, messages in, for one connection (the engine's ``Sender``)."""

    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        self.conn: BleConnection | None = None
        self.sender = Sender(244)
        self.rx = Reassembler(lambda m: on_message(bytes(m)))
        self._out: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.write_errors = 0

    def attach(self, conn: BleConnection) -> None:
        self.conn = conn
        self._task = asyncio.get_running_loop().create_task(self._writer())

    def feed(self, fragment: bytes) -> None:
        self.rx.feed(fragment)

    def send(self, peer: Any, data: bytes, urgent: bool = False) -> bool:
        if self.conn is None or self._task is None or self._task.done():
            return False
        self._out.append(bytes(data))
        self._wake.set()
        return True

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out and self.conn is not None:
                data = self._out.popleft()
                if not self.sender.start(data):
                    continue
                size = max(20, min(244, self.conn.mtu - 3))
                while (f := self.sender.next(size)) is not None:
                    frag = bytes(f)  # the view is reused by the next call
                    try:
                        await self.conn.write(frag)
                    except Exception as e:  # noqa: BLE001 - gone: the disconnect handler acts
                        self.write_errors += 1
                        log.info("BLE write failed: %s", e)
                        self.sender.cancel()
                        break

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.conn = None


# --- Bumble ------------------------------------------------------------------------------------


class _BumbleConnection(BleConnection):
    def __init__(self, transport: BumbleTransport, conn: Any, peer: Any, rx: Any) -> None:
        self.t = transport
        self.conn = conn
        self.peer = peer
        self.rx = rx
        self.address = str(conn.peer_address)
        self.mtu = int(conn.att_mtu)

    async def write(self, fragment: bytes) -> None:
        await self.t._call(self.peer.write_value(self.rx, fragment, with_response=True))

    async def disconnect(self) -> None:
        async def go() -> None:
            try:
                await asyncio.wait_for(self.conn.disconnect(), 3)
            except Exception:  # noqa: BLE001 - already gone
                pass

        await self.t._call(go())


class BumbleTransport(BleTransport):
    """A Bumble central: on the simulated radio, or on any Bumble HCI transport."""

    name = "bumble"

    def __init__(self, ble_world: Any = None, *, device: Any = None,
                 loop: asyncio.AbstractEventLoop | None = None, close_hook: Any = None) -> None:
        self._world = ble_world
        self._device = device
        self._dev_loop = loop
        self._close_hook = close_hook
        self._car_loop: asyncio.AbstractEventLoop | None = None
        self._addresses: dict[str, Any] = {}
        self._central: Any = None
        self._connect_lock: asyncio.Lock | None = None

    @classmethod
    async def open(cls, spec: str, name: str = "cabinlink-car") -> BumbleTransport:
        """A Bumble device on HCI transport ``spec`` (``usb:0``, ``tcp-client:127.0.0.1:PORT``,
        ...), run in the calling event loop."""
        try:
            from bumble.device import Device
            from bumble.hci import Address
            from bumble.transport import open_transport
        except ImportError as e:  # pragma: no cover - bumble is pinned
            raise BleUnavailable(f"bumble is not installed: {e}") from e
        try:
            hci = await open_transport(spec)
        except Exception as e:  # noqa: BLE001 - every transport has its own errors
            raise BleUnavailable(f"Bumble transport {spec!r}: {e}") from e
        dev = Device.with_hci(name, Address("F0:CA:00:00:00:01"), hci.source, hci.sink)
        return cls(device=dev, loop=asyncio.get_running_loop(), close_hook=hci)

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._dev_loop is None or self._dev_loop is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._dev_loop))

    def _to_car(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._car_loop
        if loop is None or loop.is_closed():
            return
        if self._dev_loop is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    async def start(self, on_advert: Callable[[BleAdvert], None]) -> None:
        self._car_loop = asyncio.get_running_loop()
        self._connect_lock = asyncio.Lock()
        if self._world is not None:
            self._central = await asyncio.to_thread(self._world.central, "cabinlink-car")
            self._device = self._central.device
            self._dev_loop = self._world.loop
        dev = self._device

        def on_adv(adv: Any) -> None:  # Bumble's loop
            addr = str(adv.address)
            ad = [(int(t), bytes(v)) for t, v in adv.data.ad_structures]
            a = BleAdvert.from_ad(addr, ad, getattr(adv, "rssi", None))
            if a is not None:
                self._addresses[addr] = adv.address
                self._to_car(on_advert, a)

        async def go() -> None:
            if self._world is None:
                await dev.power_on()
            dev.on("advertisement", on_adv)
            await dev.start_scanning(legacy=True, active=True, scan_interval=10, scan_window=10)

        await self._call(go())

    async def connect(self, address: str, on_fragment: Callable[[bytes], None],
                      on_disconnect: Callable[[], None], timeout: float = 10.0) -> BleConnection:
        from bumble.device import Peer

        target = self._addresses.get(address, address)
        assert self._connect_lock is not None, "start() first"

        async def go() -> tuple[Any, Any, Any]:
            conn = await self._device.connect(target, timeout=timeout)
            gone = False

            def on_disc(reason: int) -> None:
                nonlocal gone
                if not gone:
                    gone = True
                    self._to_car(on_disconnect)

            conn.on("disconnection", on_disc)
            try:
                peer = Peer(conn)
                await peer.request_mtu(MTU)
                await peer.discover_services()
                for s in peer.services:
                    await s.discover_characteristics()
                rx = peer.get_characteristics_by_uuid(_uuid(RX))
                tx = peer.get_characteristics_by_uuid(_uuid(TX))
                if not rx or not tx:
                    raise OSError(f"{address}: no CabinLink service")
                await peer.subscribe(tx[0], lambda v: self._to_car(on_fragment, bytes(v)))
            except BaseException:
                try:
                    await conn.disconnect()
                except Exception:  # noqa: BLE001
                    pass
                raise
            return conn, peer, rx[0]

        async with self._connect_lock:  # one LE connection attempt at a time
            conn, peer, rx = await self._call(go())
        return _BumbleConnection(self, conn, peer, rx)

    async def close(self) -> None:
        dev = self._device
        if dev is None:
            return

        async def go() -> None:
            try:
                await dev.stop_scanning(legacy=True)
            except Exception:  # noqa: BLE001
                pass
            for conn in list(dev.connections.values()):
                try:
                    await asyncio.wait_for(conn.disconnect(), 2)
                except Exception:  # noqa: BLE001
                    pass

        try:
            await asyncio.wait_for(self._call(go()), 8)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        if self._central is not None:
            await asyncio.to_thread(self._central.close)
        if self._close_hook is not None:
            await self._close_hook.close()


def _uuid(text: str) -> Any:
    from bumble.core import UUID

    return UUID(text)


# --- bleak --------------------------------------------------------------------------------------


class _BleakConnection(BleConnection):
    def __init__(self, client: Any, address: str) -> None:
        self.client = client
        self.address = address
        self.mtu = int(getattr(client, "mtu_size", 23) or 23)

    async def write(self, fragment: bytes) -> None:
        await self.client.write_gatt_char(RX, fragment, response=True)

    async def disconnect(self) -> None:
        try:
            await self.client.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass


class BleakTransport(BleTransport):
    """The OS Bluetooth stack through ``bleak`` (imported lazily; see the module text).
    ``adapter``: e.g. ``hci0`` on Linux, None for the default."""

    name = "bleak"

    def __init__(self, adapter: str | None = None) -> None:
        try:
            import bleak
        except ImportError:
            raise BleUnavailable(
                "BLE on a real adapter needs the 'bleak' package, which is not installed "
                "(it is not pinned in requirements.txt): .venv/bin/pip install bleak") from None
        self._bleak = bleak
        self.adapter = adapter
        self._scanner: Any = None

    def _kw(self) -> dict[str, Any]:
        return {"adapter": self.adapter} if self.adapter else {}

    async def start(self, on_advert: Callable[[BleAdvert], None]) -> None:
        def detected(device: Any, adv: Any) -> None:
            sd = (adv.service_data or {}).get(SERVICE)
            if sd is None and SERVICE not in [u.lower() for u in adv.service_uuids or []]:
                return
            on_advert(BleAdvert(device.address, adv.local_name, adv.rssi,
                                bytes(sd or b"")[:6].ljust(6, b"\0")))

        self._scanner = self._bleak.BleakScanner(detection_callback=detected,
                                                 service_uuids=[SERVICE], **self._kw())
        await self._scanner.start()

    async def connect(self, address: str, on_fragment: Callable[[bytes], None],
                      on_disconnect: Callable[[], None], timeout: float = 10.0) -> BleConnection:
        client = self._bleak.BleakClient(address, disconnected_callback=lambda c: on_disconnect(),
                                         timeout=timeout, **self._kw())
        await client.connect()
        try:
            await client.start_notify(TX, lambda _c, data: on_fragment(bytes(data)))
        except Exception:
            await client.disconnect()
            raise
        return _BleakConnection(client, address)

    async def close(self) -> None:
        if self._scanner is not None:
            await self._scanner.stop()


async def open_ble(spec: Any) -> BleTransport:
    """A transport from ``spec``: a BleTransport (used as is), a simulation's BleWorld,
    ``"bleak"`` / ``"bleak:hci0"``, or ``"bumble:<transport>"`` (e.g. ``bumble:usb:0``)."""
    if isinstance(spec, BleTransport):
        return spec
    if not isinstance(spec, str):
        if hasattr(spec, "central") and hasattr(spec, "loop"):
            return BumbleTransport(spec)
        raise ValueError(f"BLE: cannot use {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind == "bleak":
        return BleakTransport(rest or None)
    if kind == "bumble":
        if not rest:
            raise ValueError("BLE: bumble needs a transport, e.g. bumble:usb:0 or "
                             "bumble:tcp-client:127.0.0.1:PORT")
        return await BumbleTransport.open(rest)
    raise ValueError(f"BLE {spec!r}: expected bleak[:ADAPTER] or bumble:TRANSPORT")
