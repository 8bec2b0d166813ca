"""A car on the simulated bus for firmware tests: the core's CanLink + the CarClient over
the python-can plugin, pumped from the test thread."""
from __future__ import annotations

import queue
import time
from typing import Any

from cabinlink import claim
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink_tools.canbus import PythonCanController
from cabinlink.ble_frag import Reassembler, Sender
from cabinlink.codec import decode, encode
from cabinlink_tools.car.client import CarClient, Pending

RX = "cab488e4-1190-4c04-8cbe-c122f022e37b"  # spec 8.3: car -> accessory
TX = "cab488e5-1190-4c04-8cbe-c122f022e37b"  # accessory -> car (notify)


class SimCar:
    def __init__(self, sim: Any) -> None:
        self.clock = Clock()
        self.client = CarClient(self.clock)
        self.names: dict[int, int] = {}
        self.link = CanLink(PythonCanController(sim.can_peer()), self.client, self.clock,
                            claim.make_name(1, 0xBF, arbitrary=False), 0x00, pool=(0, 15),
                            rx_max=4095, on_peer=lambda a, n: self.names.__setitem__(a, n))
        self.link.start()
        self.pump(0.3)

    def pump(self, seconds: float, until: Any = None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.link.poll()
            if until is not None and until():
                return True
            time.sleep(0.002)
        return until is None

    def find(self, timeout: float = 15.0) -> int:
        """The address of the (single) accessory on the bus, from a fresh claim."""
        self.names.clear()
        self.link.claim.request_claims()
        ok = self.pump(timeout, lambda: any(a >= 0x80 for a in self.names))
        assert ok, "no accessory claimed an address"
        return max(a for a in self.names if a >= 0x80)

    def ask(self, peer: int, build: Any, *args: Any, timeout: float = 5.0) -> Pending:
        p = self.client.request(self.link, peer, build, *args)
        self.pump(timeout, lambda: p.done)
        return p


class BleSession:
    """The car's side of spec 8.4 on one connection: fragments out, messages in."""

    def __init__(self, link: Any, notes: queue.Queue[bytes]) -> None:
        self.link = link
        self.notes = notes
        self.sender = Sender(244)
        self.got: list[bytes] = []
        self.frags: list[bytes] = []
        self.rx = Reassembler(lambda m: self.got.append(bytes(m)))

    def send(self, m: list, response: bool = True) -> int:
        data = encode(m)
        assert self.sender.start(data)
        n = 0
        while (f := self.sender.next(self.link.mtu - 3)) is not None:
            self.link.write(RX, bytes(f), response=response)
            n += 1
        return n

    def next(self, timeout: float = 5.0) -> list:
        while not self.got:
            f = self.notes.get(timeout=timeout)
            assert len(f) <= self.link.mtu - 3  # M-8.4-1
            self.frags.append(f)
            self.rx.feed(f)
        return decode(self.got.pop(0))
