"""The suite's own car over BLE: a GATT client that speaks the fragmentation of spec 8.4
and records every notification.

A :class:`BleConn` is one connection seen through a small, stack-neutral surface (MTU,
service discovery, read, write, notifications with or without writing the CCCD,
disconnect). :class:`SimConn` is the simulation's Bumble central; :class:`BleakConn` uses
bleak on a real adapter (imported only for ``ble:`` targets). :class:`BleSession` runs the
CabinLink conversation on a connection: fragments out with their own sequence numbers,
every TX notification recorded, messages reassembled with the core's reassembler.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cabinlink.ble_frag import Reassembler, Sender
from cabinlink.codec import encode

from .can_probe import Message, Sent, _decode, first_result, request_info, wait_on
from .cbor_check import encode_any

SERVICE = "cab488e3-1190-4c04-8cbe-c122f022e37b"
RX = "cab488e4-1190-4c04-8cbe-c122f022e37b"
TX = "cab488e5-1190-4c04-8cbe-c122f022e37b"
SERVICE_LE = bytes.fromhex("7be322f022c1be8c044c9011e388b4ca")
CCCD = 0x2902


@dataclass(frozen=True)
class Advert:
    """What a scan saw of one advertiser: raw advertising data and scan response."""

    address: str
    adv_type: int  # 0 ADV_IND (connectable undirected), 2 scannable, 3 non-connectable
    adv_data: bytes
    scan_response: bytes
    handle: Any = None  # the stack's own object, for connect()

    @staticmethod
    def fields(data: bytes) -> list[tuple[int, bytes]]:
        """(AD type, value) of each AD structure of ``data``; a malformed length ends it."""
        out = []
        i = 0
        while i < len(data) and data[i]:
            n = data[i]
            if i + 1 + n > len(data):
                break
            out.append((data[i + 1], data[i + 2:i + 1 + n]))
            i += 1 + n
        return out


class BleConn(Protocol):
    """One connection to the accessory, as the suite needs it."""

    @property
    def mtu(self) -> int: ...

    @property
    def connected(self) -> bool: ...

    def exchange_mtu(self, mtu: int) -> int: ...

    def services(self) -> dict[str, list[tuple[str, int, int]]]: ...

    def read(self, char: str | int, service: str | int | None = None) -> bytes: ...

    def write(self, char: str, data: bytes, response: bool = True) -> None: ...

    def listen(self, char: str, callback: Callable[[bytes], None]) -> None: ...

    def set_notify(self, char: str, on: bool) -> None: ...

    def disconnect(self) -> None: ...


def uuid_str(u: str | int) -> str:
    """A UUID in the form the stacks print: 16-bit ones as 4 hex digits, others 8-4-4-4-12,
    upper case."""
    if isinstance(u, int):
        return f"{u:04X}"
    return u.upper()


class SimConn:
    """A connection of the simulation's Bumble central (:mod:`cabinlink_tools.sim.ble`)."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self._services: dict[str, list[tuple[str, int, int]]] | None = None

    @property
    def mtu(self) -> int:
        return int(self.link.mtu)

    @property
    def connected(self) -> bool:
        return bool(self.link.connected)

    def exchange_mtu(self, mtu: int) -> int:
        return int(self.link.exchange_mtu(mtu))

    def services(self) -> dict[str, list[tuple[str, int, int]]]:
        if self._services is None:
            self._services = {k.upper(): [(c.upper(), h, p) for c, h, p in v]
                              for k, v in self.link.discover().items()}
        return self._services

    def read(self, char: str | int, service: str | int | None = None) -> bytes:
        from bumble.core import UUID

        def u(x: str | int) -> Any:
            return UUID.from_16_bits(x) if isinstance(x, int) else UUID(x)

        return self.link.read_handle(int(self.link.characteristic(u(char), u(service) if service else None).handle))

    def write(self, char: str, data: bytes, response: bool = True) -> None:
        self.link.write(char, bytes(data), response=response)

    def listen(self, char: str, callback: Callable[[bytes], None]) -> None:
        # A local subscriber only: the CCCD is left as it is, so notifications the
        # peripheral sends without being asked are seen too.
        c = self.link.characteristic(char)
        subs = self.link.peer.gatt_client.notification_subscribers
        self.link.ble.run(self._add(subs, int(c.handle), lambda v: callback(bytes(v))))

    @staticmethod
    async def _add(subs: dict[int, set[Any]], handle: int, fn: Callable[[Any], None]) -> None:
        subs.setdefault(handle, set()).add(fn)

    def set_notify(self, char: str, on: bool) -> None:
        c = self.link.characteristic(char)

        async def go() -> None:
            descs = await c.discover_descriptors()
            d = next(d for d in descs if d.type.to_hex_str() == f"{CCCD:04X}")
            await self.link.peer.write_value(d.handle, b"\x01\x00" if on else b"\x00\x00", with_response=True)

        self.link.ble.run(go())

    def disconnect(self) -> None:
        self.link.disconnect()

    def wait_disconnected(self, timeout: float) -> None:
        self.link.wait_disconnected(timeout)


class SimCentral:
    """Scanning and connecting with the simulation's Bumble central."""

    def __init__(self, ble_world: Any, name: str = "conformance") -> None:
        self.central = ble_world.central(name)

    def scan(self, match: Callable[[Advert], bool], timeout: float = 10.0) -> Advert:
        def wrap(a: Any) -> bool:
            return match(self._advert(a))

        return self._advert(self.central.scan(wrap, timeout=timeout))

    @staticmethod
    def _advert(a: Any) -> Advert:
        return Advert(a.address, a.adv_type, bytes(a.adv_data), bytes(a.scan_response or b""), a)

    def connect(self, adv: Advert, timeout: float = 10.0) -> SimConn:
        return SimConn(self.central.connect(adv.handle, timeout=timeout))

    def close(self) -> None:
        self.central.close()


class BleakCentral:
    """bleak on a real adapter (``ble:<address>`` targets). bleak is asynchronous: it runs
    in its own event loop thread here. Raises ImportError when bleak is not installed."""

    def __init__(self) -> None:
        import bleak  # noqa: F401 - fail early with ImportError

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def scan(self, match: Callable[[Advert], bool], timeout: float = 10.0) -> Advert:
        from bleak import BleakScanner

        async def go() -> Advert:
            found: asyncio.Future[Advert] = self.loop.create_future()

            def seen(device: Any, data: Any) -> None:
                # bleak merges advertising data and scan response; the raw bytes are
                # rebuilt from what it decoded (flags are not reported by every backend).
                raw = b""
                for u in data.service_uuids or []:
                    if u.lower() == SERVICE:
                        raw = b"\x02\x01\x06\x11\x07" + SERVICE_LE
                resp = b""
                sd = (data.service_data or {}).get(SERVICE)
                if sd is not None:
                    resp = bytes([17 + len(sd), 0x21]) + SERVICE_LE + sd
                if data.local_name:
                    n = data.local_name.encode()
                    resp += bytes([len(n) + 1, 0x09]) + n
                a = Advert(device.address, 0, raw, resp, device)
                if not found.done() and match(a):
                    found.set_result(a)

            async with BleakScanner(detection_callback=seen):
                return await asyncio.wait_for(found, timeout)

        return self.run(go(), timeout + 5)

    def connect(self, adv: Advert, timeout: float = 10.0) -> BleakConn:
        from bleak import BleakClient

        async def go() -> Any:
            c = BleakClient(adv.handle, timeout=timeout)
            await c.connect()
            return c

        return BleakConn(self, self.run(go(), timeout + 5))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class BleakConn:
    """A bleak connection. bleak negotiates the MTU itself and always writes the CCCD when
    it starts notifications, so :meth:`listen` is only possible together with it."""

    def __init__(self, central: BleakCentral, client: Any) -> None:
        self.central = central
        self.client = client
        self._callbacks: dict[str, Callable[[bytes], None]] = {}

    @property
    def mtu(self) -> int:
        return int(self.client.mtu_size)

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected)

    def exchange_mtu(self, mtu: int) -> int:
        return self.mtu

    def services(self) -> dict[str, list[tuple[str, int, int]]]:
        out: dict[str, list[tuple[str, int, int]]] = {}
        for s in self.client.services:
            key = s.uuid.upper()
            if key.endswith("-0000-1000-8000-00805F9B34FB") and key.startswith("0000"):
                key = key[4:8]
            out[key] = []
            for c in s.characteristics:
                cu = c.uuid.upper()
                if cu.endswith("-0000-1000-8000-00805F9B34FB") and cu.startswith("0000"):
                    cu = cu[4:8]
                props = sum({"read": 0x02, "write-without-response": 0x04, "write": 0x08,
                             "notify": 0x10, "indicate": 0x20}.get(p, 0) for p in c.properties)
                out[key].append((cu, c.handle, props))
        return out

    def read(self, char: str | int, service: str | int | None = None) -> bytes:
        u = f"0000{char:04x}-0000-1000-8000-00805f9b34fb" if isinstance(char, int) else char
        return bytes(self.central.run(self.client.read_gatt_char(u)))

    def write(self, char: str, data: bytes, response: bool = True) -> None:
        self.central.run(self.client.write_gatt_char(char, bytes(data), response=response))

    def listen(self, char: str, callback: Callable[[bytes], None]) -> None:
        self._callbacks[char] = callback

    def set_notify(self, char: str, on: bool) -> None:
        if on:
            cb = self._callbacks.get(char, lambda v: None)
            self.central.run(self.client.start_notify(char, lambda _c, v: cb(bytes(v))))
        else:
            self.central.run(self.client.stop_notify(char))

    def disconnect(self) -> None:
        self.central.run(self.client.disconnect())

    def wait_disconnected(self, timeout: float) -> None:
        end = time.time() + timeout
        while self.connected and time.time() < end:
            time.sleep(0.05)


class BleSession:
    """The CabinLink conversation on one connection (spec 8.3, 8.4): what the suite sends
    and everything the accessory notified. ``label`` names it in messages."""

    def __init__(self, conn: Any, label: str = "BLE", enable: bool = True, rx_limit: int = 4095) -> None:
        self.conn = conn
        self.label = label
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.sender = Sender(244)
        self.fragments: list[tuple[float, bytes]] = []
        self.writes = 0
        self.messages: list[Message] = []
        self.sent: list[Sent] = []
        self._first: float | None = None
        self.rx = Reassembler(self._deliver)
        # what the accessory's reassembler (the same rules, 8.4) makes of what the suite writes
        self._mirror = Reassembler(self._written, rx_limit)
        conn.listen(TX, self._on_fragment)
        self.notify_enabled = False
        if enable:
            self.enable()

    def enable(self) -> None:
        self.conn.set_notify(TX, True)
        self.notify_enabled = True

    def _on_fragment(self, f: bytes) -> None:
        with self.cv:
            t = time.time()
            self.fragments.append((t, f))
            if f and f[0] & 0x80:
                self._first = t
            self.rx.feed(f)
            self.cv.notify_all()

    def _deliver(self, payload: memoryview) -> None:
        raw = bytes(payload)
        value, err = _decode(raw)
        t = time.time()
        self.messages.append(Message(self._first or t, t, "ble", "accessory", self.label, raw, value, err))

    def _written(self, payload: memoryview) -> None:
        raw = bytes(payload)
        t, tid = request_info(raw)
        self.sent.append(Sent(time.time(), raw, tid, t, "accessory"))

    def _write(self, frag: bytes, response: bool) -> None:
        with self.lock:
            self.writes += 1
            self._mirror.feed(frag)
        self.conn.write(RX, frag, response=response)

    def write_fragment(self, frag: bytes, response: bool = True) -> None:
        """One raw write to RX (the suite's own fragment, right or wrong)."""
        self._write(bytes(frag), response)

    def send(self, m: list[Any] | bytes, response: bool = True) -> Sent:
        raw = m if isinstance(m, (bytes, bytearray)) else encode_any(m)
        with self.lock:
            if not self.sender.start(bytes(raw)):
                raise RuntimeError("message too long to fragment")
            frags = []
            while (f := self.sender.next(self.conn.mtu - 3)) is not None:
                frags.append(bytes(f))
        n = len(self.sent)
        for f in frags:
            self._write(f, response)
        t, tid = request_info(bytes(raw))
        return self.sent[-1] if len(self.sent) > n else Sent(time.time(), bytes(raw), tid, t, "accessory")

    def result(self, tid: int, timeout: float = 2.0, since: int = 0) -> Message | None:
        return wait_on(self.cv, lambda: first_result(self.messages, tid, since), timeout)
