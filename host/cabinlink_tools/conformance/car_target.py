"""A car under test (``--cl-target car:sim``): the reference car on the simulated CAN bus,
with accessories played by the suite around it.

:class:`CarBench` starts the simulated bus, the suite's probe (every frame recorded), the
car under test in its own thread and event loop, and :class:`SuiteAccessory` objects: the
protocol core's accessory (:class:`cabinlink.node.Node` over :class:`cabinlink.can_link.
CanLink`, the same code as the firmware) in-process, with hooks to misbehave on purpose:
answer late or with odd statuses, send stray or malformed messages, fall silent, restart,
restart its uptime, describe itself with unknown items or a non-canonical encoding.

The car is driven through the reference car's async API (``cabinlink_tools.car.Car``) only
where a test needs it to act (a READ); everything else is what the car does by itself,
judged from the bus.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cabinlink import claim, msg
from cabinlink import registry as reg
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink.codec import decode, encode
from cabinlink.model import Capability, device_info
from cabinlink.node import Node

from ..canbus import PythonCanController
from .can_probe import CanProbe, Frame, Message, request_info
from .targets import TargetSpec


def reassemble(frames: list[Frame], sa: int, ta: int | None = None) -> list[Message]:
    """The ISO-TP messages node ``sa`` sent (to ``ta``, or to anyone) in ``frames``: single
    frames, first frames with their consecutive frames in sequence, functional single frames."""
    out: list[Message] = []
    rx: dict[tuple[int, int], tuple[bytearray, int, int, float]] = {}
    for f in frames:
        if f.sa != sa or not f.ext or f.rtr or f.edp_dp or f.pf not in (0xDA, 0xDB) or not f.data:
            continue
        if ta is not None and f.ta != ta:
            continue
        k = f.data[0] >> 4
        key = (f.prio, f.ta)
        if k == 0 and 0 < f.data[0] & 0xF <= 7:
            raw = bytes(f.data[1:1 + (f.data[0] & 0xF)])
            out.append(_msg(f.t, f.t, sa, f.ta, raw, f.prio))
            rx.pop(key, None)
        elif k == 1 and len(f.data) == 8:
            rx[key] = (bytearray(f.data[2:]), ((f.data[0] & 0xF) << 8) | f.data[1], 1, f.t)
        elif k == 2 and key in rx:
            buf, n, sn, t0 = rx[key]
            if f.data[0] & 0xF != sn:
                del rx[key]
                continue
            buf.extend(f.data[1:1 + min(7, n - len(buf))])
            if len(buf) >= n:
                out.append(_msg(t0, f.t, sa, f.ta, bytes(buf[:n]), f.prio))
                del rx[key]
            else:
                rx[key] = (buf, n, (sn + 1) & 0xF, t0)
    return out


def _msg(t0: float, t1: float, sa: int, ta: int, raw: bytes, prio: int) -> Message:
    try:
        v, err = decode(raw), None
    except ValueError as e:
        v, err = None, str(e)
    return Message(t0, t1, "can", sa, ta, raw, v, err, prio)


class _Endpoint:
    """Between the accessory's CanLink and its Node: lets the suite see and bend requests."""

    def __init__(self, acc: SuiteAccessory) -> None:
        self.acc = acc

    @property
    def max_rx(self) -> int:
        return self.acc.node.max_rx

    def receive(self, link: Any, peer: int, data: Any) -> None:
        raw = bytes(data)
        acc = self.acc
        acc.received.append((time.time(), peer, raw))
        hook = acc.hook
        if hook is not None:
            t, tid = request_info(raw)
            if tid is not None and hook(acc, peer, t, tid, raw):
                return  # the hook answered (or chose not to)
        acc.node.receive(link, peer, raw)

    def peer_lost(self, link: Any, peer: int) -> None:
        self.acc.node.peer_lost(link, peer)

    def poll(self) -> None:
        self.acc.node.poll()

    def heartbeat(self) -> Any:
        return self.acc.node.heartbeat()


class SuiteAccessory:
    """An ambient sensor played by the suite (device_info, temperature 21.50 °C) on the bus.
    ``hook(acc, peer, type, tid, raw) -> bool`` sees each request first: True means it was
    handled (answered by :meth:`send` or left unanswered)."""

    def __init__(self, bench: CarBench, identity: int, serial: str = "suite") -> None:
        self.bench = bench
        self.identity = identity
        self.serial = serial
        self.name = claim.make_name(identity, 0xC0 | reg.CLASS_AMBIENT)
        self.received: list[tuple[float, int, bytes]] = []
        self.hook: Callable[..., bool] | None = None
        self.running = False
        self._bus = bench.sim.can_peer()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._build()

    def _build(self) -> None:
        clock = Clock()
        info = device_info("CabinLink conformance", "suite ambient", self.serial, "0.1.0", "sim",
                           on_invoke=lambda cap, cmd, args: msg.OK)
        temp = Capability(reg.CAP_TEMPERATURE, values={0: 2150, 1: 0, 2: 0, 3: 1000},
                          on_write=lambda cap, attr, v: msg.OK)
        self.node = Node(clock, reg.CLASS_AMBIENT, [info, temp])
        self.link = CanLink(PythonCanController(self._bus), _Endpoint(self), clock, self.name)

    @property
    def address(self) -> int:
        return self.link.address

    def start(self) -> SuiteAccessory:
        """Power on: claim the preferred address, then answer."""
        self.link.start()
        self.running = True
        self._thread = threading.Thread(target=self._pump, name=f"suite accessory {self.serial}", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        while self.running:
            with self._lock:
                self.link.poll()
            time.sleep(0.002)

    def stop(self) -> None:
        """Fall silent (unplugged): no frame any more, nothing received."""
        self.running = False
        if self._thread is not None:
            self._thread.join(1)
        while self._bus.recv(timeout=0) is not None:
            pass

    def resume(self) -> None:
        """Plugged in again without a restart: the same state goes on."""
        while self._bus.recv(timeout=0) is not None:
            pass
        self.running = True
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """A power cycle: a new node (uptime 0, no sessions) claiming its address again."""
        self.stop()
        self._build()
        self.start()

    def describe_as(self, description: bytes) -> None:
        """Answer DESCRIBE with these bytes (the description map, encoded) from now on."""
        with self._lock:
            self.node._desc = description

    def send(self, peer: int, raw: bytes, urgent: bool = False) -> bool:
        with self._lock:
            return bool(self.link.send(peer, raw, urgent))

    def reset_uptime(self) -> None:
        with self._lock:
            self.node._uptime_ms = 0

    def close(self) -> None:
        self.stop()
        self._bus.shutdown()


class CarBench:
    """The simulated bus, the suite's probe, the car under test and the suite's accessories."""

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec
        self.sim: Any = None
        self.probe: CanProbe | None = None
        self.car: Any = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="car under test", daemon=True)
        self.accessories: list[SuiteAccessory] = []
        self.notes: list[str] = []
        self.started = 0.0
        self.first: SuiteAccessory | None = None
        self._cache: dict[str, Any] = {}

    def cached(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` once per run: an observation several tests judge."""
        if name not in self._cache:
            self._cache[name] = fn()
        return self._cache[name]

    def start(self) -> None:
        from ..sim.simulation import Simulation

        if self.spec.car == "minimal":
            raise NotImplementedError("car:minimal: the minimal CarClient car was replaced by the reference car "
                                      "(car:sim) before it was needed")
        from ..car import Car

        self.sim = Simulation().start()
        self.probe = CanProbe(self.sim.can_peer(receive_own_messages=True))
        self._thread.start()
        self.started = time.time()
        self.car = Car(can=f"cabinlink:{self.sim.bus_address}", ble=self.sim.ble)
        self.run(self.car.start())
        if not self.probe.wait(lambda: self.car_claims(), 3.0):
            raise RuntimeError("the car sent no Address Claimed within 3 s")
        self.initial_address = self.car_claims()[0].sa
        time.sleep(0.3)
        self.first = self.accessory(0x01A5A5, "suite1")
        self.ble_peripherals: list[Any] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run ``coro`` in the car's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def accessory(self, identity: int, serial: str, ready: bool = True, **kw: Any) -> SuiteAccessory:
        """A new suite accessory on the bus; with ``ready`` the car has bound it."""
        a = SuiteAccessory(self, identity, serial, **kw).start()
        self.accessories.append(a)
        if ready:
            self.wait_ready(a)
        return a

    def wait_ready(self, a: SuiteAccessory, timeout: float = 10.0) -> Any:
        return self.run(self.car.wait_ready(lambda x: x.name == a.name, timeout=timeout), timeout + 2)

    def car_accessory(self, a: SuiteAccessory) -> Any:
        return next((x for x in self.car.accessories() if x.name == a.name), None)

    # --- what the car sent ------------------------------------------------------------------
    @property
    def car_address(self) -> int:
        c = self.car_claims()
        return c[-1].sa if c else self.car.address

    def car_claims(self, since: int = 0) -> list[Frame]:
        assert self.probe is not None
        return [f for f in self.probe.frames[since:] if f.pf == 0xEE and len(f.data) >= 8
                and claim.name_of(f.data) == self.car.name and not f.own]

    def car_frames(self, since: int = 0) -> list[Frame]:
        assert self.probe is not None
        sa = self.car_address
        return [f for f in self.probe.frames[since:] if not f.own and (f.sa == sa or f.pf == 0xEE and len(f.data) >= 8
                                                                      and claim.name_of(f.data) == self.car.name)]

    def car_messages(self, to: int | None = None, since: int = 0) -> list[Message]:
        """Whole messages the car sent (to address ``to``) from frame index ``since``."""
        assert self.probe is not None
        return reassemble(self.probe.frames[since:], self.car_address, to)

    def requests_to(self, a: SuiteAccessory, since: int = 0) -> list[list[Any]]:
        return [m.value for m in self.car_messages(a.address, since) if isinstance(m.value, list)
                and m.value and msg.is_request(m.value[0])]

    def identity(self) -> dict[str, str]:
        c = self.car
        return {"car under test": f"the reference car (cabinlink_tools.car.Car), {self.spec.text}",
                "car NAME": f"0x{c.name:016X}" if c is not None else "?",
                "car address": f"0x{getattr(self, 'initial_address', 0):02X} (claimed at the start)"}

    def ble_accessory(self, name: str, address: str, flags: int = 0, extra: bytes = b"",
                      with_uuid: bool = True) -> Any:
        """A BLE accessory played by the suite (see ble_peripheral.py); ``with_uuid`` False:
        an advertiser without the CabinLink service UUID (a decoy with a CabinLink-ish name)."""
        from .ble_peripheral import SuitePeripheral, adv_data, scan_response

        clock = Clock()
        info = device_info("CabinLink conformance", "suite ble", name, "0.1.0", "sim",
                           on_invoke=lambda cap, cmd, args: msg.OK)
        temp = Capability(reg.CAP_TEMPERATURE, values={0: 2150, 1: 0, 2: 0, 3: 1000},
                          on_write=lambda cap, attr, v: msg.OK)
        node = Node(clock, reg.CLASS_AMBIENT, [info, temp]) if with_uuid else None
        adv = adv_data() if with_uuid else b"\x02\x01\x06"
        resp = scan_response(name, reg.CLASS_AMBIENT, 0x1234, flags, extra) if with_uuid else \
            bytes([len(name) + 1, 0x09]) + name.encode()
        p = SuitePeripheral(self.sim.ble, name, address, adv, resp, node)
        self.ble_peripherals.append(p)
        return p

    def close(self) -> None:
        for p in getattr(self, "ble_peripherals", []):
            p.close()
        for a in self.accessories:
            try:
                a.close()
            except Exception:  # noqa: BLE001
                pass
        if self.car is not None and self._thread.is_alive():
            try:
                self.run(self.car.stop(), 5)
            except Exception:  # noqa: BLE001
                pass
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(2)
        if self.probe is not None:
            self.probe.close()
        if self.sim is not None:
            self.sim.stop()


def description_with(node: Node, patch: Callable[[dict[Any, Any]], None]) -> dict[Any, Any]:
    """The node's own description map, changed by ``patch`` (in place)."""
    d = decode(node.description())
    patch(d)
    return d


__all__ = ["CarBench", "SuiteAccessory", "reassemble", "description_with", "encode"]
