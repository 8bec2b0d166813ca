"""A BLE accessory played by the suite, for car targets: a Bumble peripheral on the
simulation's radio with the CabinLink GATT service (spec 8.3), advertising bytes of the
suite's choosing (spec 8.2), and the protocol core's :class:`cabinlink.node.Node` behind the
fragmentation (spec 8.4). It records what a car does that an accessory built on MicroPython
cannot see: when the car enables notifications on TX (its CCCD write) and when it writes to
RX.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from cabinlink.ble_frag import Reassembler, Sender
from cabinlink.node import Node

from .ble_probe import RX, SERVICE, SERVICE_LE, TX


def adv_data() -> bytes:
    """Flags 0x06 and the Complete List of 128-bit Service UUIDs (spec 8.2)."""
    return b"\x02\x01\x06\x11\x07" + SERVICE_LE


def scan_response(name: str, device_class: int, short_id: int, flags: int, extra: bytes = b"") -> bytes:
    sd = bytes([0, 1, device_class, short_id >> 8, short_id & 0xFF, flags]) + extra
    out = bytes([1 + 16 + len(sd), 0x21]) + SERVICE_LE + sd
    n = name.encode()[: 31 - len(out) - 2]
    return out + bytes([len(n) + 1, 0x09]) + n


class SuitePeripheral:
    """One advertiser on the simulated radio. With ``node`` it is a CabinLink accessory (GATT
    service, messages answered); without, only an advertiser (a decoy)."""

    liveness_ms = 0  # the node's view of this link: BLE ends sessions on disconnection

    def __init__(self, ble_world: Any, name: str, address: str, adv: bytes, resp: bytes,
                 node: Node | None = None) -> None:
        self.ble = ble_world
        self.name = name
        self.address = address
        self.adv = adv
        self.resp = resp
        self.node = node
        self.events: list[tuple[float, str, Any]] = []  # (time, "connect"|"cccd"|"write"|..., data)
        self.dev: Any = None
        self._conns: dict[int, Any] = {}
        self._rx: dict[int, Reassembler] = {}
        self._tx: dict[int, Sender] = {}
        self._queues: dict[int, asyncio.Queue[bytes]] = {}
        self._tx_char: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.ble.run(self._start())

    async def _start(self) -> None:
        from bumble import hci
        from bumble.core import UUID
        from bumble.device import AdvertisingType
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        from ..sim.ble import _new_device

        dev = _new_device(self.ble.link, self.name, hci.Address(self.address, hci.Address.RANDOM_DEVICE_ADDRESS))
        self.dev = dev
        dev.on("connection", self._on_connection)
        await dev.power_on()
        if self.node is not None:
            rx = Characteristic(UUID(RX), Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
                                Characteristic.WRITEABLE, CharacteristicValue(write=self._on_write))
            tx = Characteristic(UUID(TX), Characteristic.Properties.NOTIFY, Characteristic.READABLE, b"")
            tx.on("subscription", self._on_subscription)
            self._tx_char = tx
            dev.add_service(Service(UUID(SERVICE), [rx, tx]))
            self._tasks.append(asyncio.get_running_loop().create_task(self._poll()))
        await dev.start_advertising(advertising_type=AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE,
                                    advertising_data=self.adv, scan_response_data=self.resp,
                                    advertising_interval_min=50, advertising_interval_max=50, auto_restart=True)

    def _on_connection(self, conn: Any) -> None:
        h = conn.handle
        self._conns[h] = conn
        self.events.append((time.time(), "connect", h))
        self._rx[h] = Reassembler(lambda m, h=h: self._deliver(h, bytes(m)))
        self._tx[h] = Sender(244)
        q: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues[h] = q
        self._tasks.append(asyncio.get_running_loop().create_task(self._writer(conn, q)))

        def gone(reason: int) -> None:
            self.events.append((time.time(), "disconnect", h))
            self._conns.pop(h, None)
            if self.node is not None:
                self.node.peer_lost(self, h)

        conn.on("disconnection", gone)

    def _on_subscription(self, conn: Any, notify: bool, indicate: bool) -> None:
        self.events.append((time.time(), "cccd", bool(notify or indicate)))

    def _on_write(self, conn: Any, value: bytes) -> None:
        self.events.append((time.time(), "write", bytes(value)))
        rx = self._rx.get(conn.handle)
        if rx is not None:
            rx.feed(bytes(value))

    def _deliver(self, h: int, m: bytes) -> None:
        self.events.append((time.time(), "message", m))
        if self.node is not None:
            self.node.receive(self, h, m)

    # --- the node's link ----------------------------------------------------------------------
    def send(self, peer: int, data: bytes, urgent: bool = False) -> bool:
        s = self._tx.get(peer)
        q = self._queues.get(peer)
        if s is None or q is None or not s.start(bytes(data)):
            return False
        while (f := s.next(244)) is not None:
            q.put_nowait(bytes(f))
        return True

    async def _writer(self, conn: Any, q: asyncio.Queue[bytes]) -> None:
        while True:
            f = await q.get()
            try:
                await self.dev.notify_subscriber(conn, self._tx_char, f, force=True)
            except Exception:  # noqa: BLE001 - the connection went away
                return
            await asyncio.sleep(0.01)  # spec 8.5: paced

    async def _poll(self) -> None:
        while True:
            self.node.poll()  # type: ignore[union-attr]
            await asyncio.sleep(0.01)

    def first(self, kind: str) -> float | None:
        return next((t for t, k, v in self.events if k == kind and (kind != "cccd" or v)), None)

    def close(self) -> None:
        async def go() -> None:
            for t in self._tasks:
                t.cancel()
            for c in list(self._conns.values()):
                try:
                    await asyncio.wait_for(c.disconnect(), 2)
                except Exception:  # noqa: BLE001
                    pass
            try:
                await self.dev.stop_advertising()
            except Exception:  # noqa: BLE001
                pass
            self.ble.link.remove_controller(self.dev.sim_controller)

        try:
            self.ble.run(go(), 5)
        except Exception:  # noqa: BLE001
            pass
