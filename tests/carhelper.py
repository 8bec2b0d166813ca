"""A car on the simulated bus for firmware tests: the core's CanLink + the CarClient over
the python-can plugin, pumped from the test thread."""
from __future__ import annotations

import time
from typing import Any

from cabinlink import claim
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink_tools.canbus import PythonCanController
from cabinlink_tools.car.client import CarClient, Pending


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
