"""Issue 6 benchmarks, all in bus time (the simulated bus's timestamps, docs/benchmarks.md):

1. **Plug-in to bound** (:func:`plug_in`): accessories running the real firmware on simulated
   boards are powered at the same instant; a car built from the core's CanLink + CarClient
   greets each new NAME (HELLO), reads its description (DESCRIBE) and subscribes to every
   reportable attribute the description lists. Per accessory: power-on -> Address Claimed
   -> first HEARTBEAT (the 250 ms settle of spec 7.3) -> description -> bound (the priming
   REPORT of its last subscription has reached the car).
2. **Bus load, 16 accessories at 1 Hz** (:func:`bus_load`): the same fleet, one
   subscription each (temperature, min 1000 ms, max 1 s), so every accessory sends one
   HEARTBEAT and one REPORT per second; ``SimBus.load()`` over a window, beside what spec
   7.8's per-frame arithmetic predicts.
3. **Bulk transfer** (:func:`bulk_isotp`, :func:`bulk_sdo_block`): the same payload over the
   core's ISO-TP channels and over CANopen SDO block download (python ``canopen``'s client),
   between two python-can peers of the simulated bus, as payload bytes per second of bus
   time and relative to the bus's ceiling (every frame 8 data bytes, back to back).

"Powered at the same instant": a simulated board is a host process whose interpreter start
and firmware imports take far longer on a shared 2-core host than a board's boot, and are
spread out in time. The bench therefore holds every board at the moment its CAN controller
joins the bus (a :class:`PowerGate` keeps its HELLO to the bus server unanswered and the
process is paused), and releases all of them together: that instant is power-on here. The
firmware's boot before the CAN link opens (config, app construction) is not counted; its
host wall time is reported separately for one board.

``python bench/issue6_bench.py [--quick]`` prints the figures as JSON.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "firmware" / "lib", ROOT / "host", ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from cabinlink import claim, isotp, msg  # noqa: E402
from cabinlink import registry as reg  # noqa: E402
from cabinlink.can_link import CanLink  # noqa: E402
from cabinlink.codec import encode  # noqa: E402
from cabinlink.clock import Clock  # noqa: E402
from cabinlink_tools.canbus import PythonCanController  # noqa: E402
from cabinlink_tools.car import Car  # noqa: E402
from cabinlink_tools.car.bindings import BindingRunner, load_bindings  # noqa: E402
from cabinlink_tools.car.client import CarClient, Pending  # noqa: E402
from cabinlink_tools.car.model import Description  # noqa: E402
from cabinlink_tools.sim import canbus as cb  # noqa: E402
from cabinlink_tools.sim.simulation import Accessory, Simulation  # noqa: E402

BOARD = "esp32-c6-devkitc-1"  # on-chip CAN: the board joins the bus over the TCP wire protocol
BITRATE = 500_000
SETTLE_MS = 250  # spec 7.3
SPEC_FRAME_MS = 0.27  # spec 7.8: one padded 29-bit frame at 500 kbit/s
SPEC_EXAMPLE_LOAD = 0.019  # spec 7.8's worked example: car + 8 accessories at a busy moment
CYPHAL_PNP_REQUEST_S = 1.0  # issue 6: Cyphal's plug-and-play waits up to 1 s per request
GOAL_ONE_S, GOAL_FLEET_S = 0.300, 1.0
BULK_SIZE = 64 * 1024


def _ts(t: float) -> float:
    return round(t, 6)


# ---------------------------------------------------------------------------------------
# Power gate: every board joins the bus at the same instant
# ---------------------------------------------------------------------------------------


class PowerGate(cb.SimBusServer):
    """A bus server for the boards that holds each node's HELLO (its CAN controller coming
    up) and calls ``on_hold(name)`` from its I/O thread; :meth:`release` answers them all.

    Relies on :class:`SimBusServer`'s ``_handle`` (one message of a connection); nothing
    else of the server changes."""

    def __init__(self, bus: cb.SimBus, on_hold: Callable[[str], None]) -> None:
        super().__init__(bus)
        self.on_hold = on_hold
        self._gate_lock = threading.Lock()
        self._held: list[tuple[Any, bytes]] = []
        self._open = False

    def _handle(self, c: Any, typ: int, body: bytes) -> bool:
        if c.node is None and typ == cb.MSG_HELLO:
            with self._gate_lock:
                if not self._open:
                    self._held.append((c, body))
                    self.on_hold(body[2:].decode("utf-8", "replace"))
                    return True
        return super()._handle(c, typ, body)

    @property
    def held(self) -> int:
        with self._gate_lock:
            return len(self._held)

    def release(self) -> None:
        """Attach every held node to the bus and send its WELCOME."""
        with self._gate_lock:
            self._open = True
            held, self._held = self._held, []
        for c, body in held:
            super()._handle(c, cb.MSG_HELLO, body)


# ---------------------------------------------------------------------------------------
# The car: CanLink + CarClient, binding every new NAME
# ---------------------------------------------------------------------------------------

Sub = tuple[int, int, int, int]  # (slot, attr, min_ms, max_s) of one SUBSCRIBE
Plan = Callable[[dict[int, Any]], list[Sub]]


def plan_reference_car(desc: dict[int, Any]) -> list[Sub]:
    """What the reference car subscribes to with its default bindings, over CAN: every
    reportable attribute but device_info's (the heartbeat carries health and mode), numbers
    at min 1000 ms and states at min 0, max 60 s (``car/default_bindings.toml``), taken from
    the car's own planner so that this bench follows the car."""
    acc = SimpleNamespace(description=Description.parse(desc), transport="can", bindings=[])
    runner = BindingRunner(load_bindings(None), SimpleNamespace(moving=False),
                           lambda *a: None, lambda *a: None, lambda: [])
    return [(slot, attr, s.min_ms, s.max_s)
            for (slot, attr), s in sorted(runner.subscriptions(acc).items())]  # type: ignore[arg-type]


def plan_all_reportable(desc: dict[int, Any]) -> list[Sub]:
    """Every (slot, attr) the description lists whose registry entry has the report right
    (device_info included), in slot order, at min 1000 ms, max 60 s: "every attribute of
    every capability" that a SUBSCRIBE may ask for (the heaviest plan)."""
    out = []
    for slot, entry in enumerate(desc.get(msg.D_CAPS, [])):
        specs = reg.attr_specs(entry.get(msg.C_ID)) or {}
        for attr in entry.get(msg.C_ATTRS, []):
            spec = specs.get(attr)
            if spec is not None and spec[1] & reg.A_REPORT:
                out.append((slot, attr, 1000, 60))
    return out


def plan_temperature(desc: dict[int, Any]) -> list[Sub]:
    """Only the temperature value, min 1000 ms, max 1 s (the 1 Hz bus-load case)."""
    for slot, entry in enumerate(desc.get(msg.D_CAPS, [])):
        if entry.get(msg.C_ID) == reg.CAP_TEMPERATURE:
            return [(slot, reg.ATTR_TEMPERATURE_VALUE, 1000, 1)]
    return []


PLANS: dict[str, Plan] = {"reference car": plan_reference_car,
                          "every reportable": plan_all_reportable}


@dataclass
class Binding:
    """One accessory as the car binds it; times are bus time (Unix epoch seconds)."""

    name: int
    addr: int
    claim_t: float  # end of its first Address Claimed frame at its current address
    first_claim_t: float
    claims: int = 1
    ready_t: float | None = None  # first HEARTBEAT after that claim (settle over)
    phase: str = "wait"  # wait, hello, describe, subscribe, bound, failed
    pending: Pending | None = None
    last: tuple[Callable[..., list[Any]], tuple[Any, ...]] | None = None  # to repeat it
    plan: list[Sub] = field(default_factory=list)
    step: int = 0
    subs_ok: int = 0
    refused: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    hello_t: float | None = None
    desc_t: float | None = None
    desc_bytes: int = 0
    sub_sent: dict[tuple[int, int], float] = field(default_factory=dict)
    primed: dict[Any, float] = field(default_factory=dict)  # (slot, attr), or path: first REPORT
    bound_t: float | None = None


class BusWatch:
    """What a car's bring-up is measured against, seen on the simulated bus by a listener:
    every frame (bus time, bits), each accessory's Address Claimed frames (a :class:`Binding`
    per NAME, started over when the accessory moves) and its first HEARTBEAT after a claim
    (the settle time is over). Subclasses drive a car and fill in the rest of the Binding;
    call :meth:`pump` from one thread; it steps every ``step_s``."""

    step_s = 0.0005

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.bus = sim.bus
        self.bindings: dict[int, Binding] = {}  # by NAME
        self._lock = threading.Lock()
        self._claims: list[tuple[float, int, int]] = []  # (t, addr, NAME) from the listener
        self._hbs: list[tuple[float, int]] = []  # (t, addr)
        self.frames: list[tuple[float, int, int, bytes]] = []  # (t_end, bits, id, data)
        self.bus.add_listener(self._listen)

    def close(self) -> None:
        self.bus.remove_listener(self._listen)

    # --- bus listener (bus thread) ---------------------------------------------------
    def _listen(self, ev: cb.BusEvent) -> None:
        f = ev.frame
        if ev.kind != "frame" or f is None or not f.extended:
            return
        self.frames.append((ev.timestamp, ev.bits, f.can_id, f.data))
        pf_ps = (f.can_id >> 8) & 0xFFFF
        sa = f.can_id & 0xFF
        if pf_ps == 0xEEFF and len(f.data) == 8 and sa < claim.NULL:
            name = claim.name_of(f.data)
            if name >> 63:  # accessories only (arbitrary address capable)
                with self._lock:
                    self._claims.append((ev.timestamp, sa, name))
        elif pf_ps == 0xDBFF and 0x80 <= sa <= 0xF7 and len(f.data) >= 3 \
                and f.data[1] == 0x84 and f.data[2] == msg.HEARTBEAT:
            with self._lock:
                self._hbs.append((ev.timestamp, sa))

    def _bus_news(self) -> None:
        with self._lock:
            claims, self._claims = self._claims, []
            hbs, self._hbs = self._hbs, []
        for t, addr, name in claims:
            b = self.bindings.get(name)
            if b is None:
                self.bindings[name] = Binding(name, addr, t, t)
            elif b.addr != addr:  # it moved (lost a contest): start over at the new address
                b.claims += 1
                b.phase = "wait"
                b.ready_t = None
                b.pending = None
                b.addr, b.claim_t = addr, t
            # the same address claimed again is a defence: the settle time runs from the
            # first claim of that address (so the firmware and the reference car count it)
        for t, addr in hbs:
            for b in self.bindings.values():
                if b.addr == addr and b.ready_t is None and t > b.claim_t:
                    b.ready_t = t

    def pump(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Run the car for ``seconds`` of wall time, or until ``until()`` holds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._step()
            if until is not None and until():
                return True
            time.sleep(self.step_s)
        return until is None

    def _step(self) -> None:
        self._bus_news()

    def bound(self, b: Binding) -> bool:
        """Bound: every planned SUBSCRIBE answered and every granted one primed."""
        if b.phase != "bound":
            return False
        if len(b.primed) < b.subs_ok:
            return False
        if b.bound_t is None:
            b.bound_t = max(b.primed.values(), default=b.desc_t or 0.0)
        return True


class BindingCar(BusWatch):
    """A bench car that binds every accessory that claims an address, built from the core's
    CanLink + CarClient: once an accessory's first HEARTBEAT after its claim shows its settle
    time is over, it sends HELLO, DESCRIBE, then one SUBSCRIBE per planned attribute, one
    request at a time per accessory (spec 5.2), retrying a request that failed or timed out.
    It polls its link every 0.5 ms."""

    def __init__(self, sim: Simulation, plan: Plan, max_retries: int = 5) -> None:
        super().__init__(sim)
        self.plan = plan
        self.max_retries = max_retries
        self.clock = Clock()
        self.client = CarClient(self.clock)
        self.client.on_report = self._on_report
        self.link = CanLink(PythonCanController(sim.can_peer()), self.client, self.clock,
                            claim.make_name(1, 0xBF, arbitrary=False), 0x00, pool=(0, 15),
                            rx_max=4095, max_channels=128)
        self.link.start()

    def _on_report(self, acc: Any, slot: int, attr: int, value: Any) -> None:
        now = self.bus.now()
        for b in self.bindings.values():
            if b.addr == acc.peer and (slot, attr) in b.sub_sent and (slot, attr) not in b.primed:
                b.primed[(slot, attr)] = now

    def _step(self) -> None:
        self.link.poll()
        self._bus_news()
        for b in self.bindings.values():
            self._advance(b)

    def _request(self, b: Binding, build: Callable[..., list[Any]], *args: Any) -> None:
        b.last = (build, args)
        b.pending = self.client.request(self.link, b.addr, build, *args)

    def _advance(self, b: Binding) -> None:
        if b.phase in ("bound", "failed"):
            return
        if b.phase == "wait":
            if b.ready_t is not None:
                b.phase = "hello"
                self._request(b, msg.hello)
            return
        p = b.pending
        if p is None or not p.done:
            return
        if not p.ok:
            if b.phase == "subscribe" and p.status is not None and p.status != msg.OK \
                    and p.status not in (msg.BUSY,):
                b.refused += 1  # e.g. NO_RESOURCES: the accessory's table is full
                b.step += 1
                self._next_sub(b)
                return
            b.retries += 1
            b.failures.append(f"{b.phase} step {b.step}: " + (
                "timeout" if p.status is None else f"status {p.status}")
                + f" after {self.clock.ticks_diff(self.clock.ticks_ms(), p.sent_at)} ms")
            if b.retries > self.max_retries:
                b.phase = "failed"
                return
            assert b.last is not None
            self._request(b, b.last[0], *b.last[1])
            return
        now = self.bus.now()
        if b.phase == "hello":
            b.hello_t = now
            b.phase = "describe"
            self._request(b, msg.describe)
        elif b.phase == "describe":
            b.desc_t = now
            desc = p.value if isinstance(p.value, dict) else {}
            b.desc_bytes = len(encode(desc))
            b.plan = self.plan(desc)
            b.phase = "subscribe"
            b.step = 0
            self._next_sub(b)
        elif b.phase == "subscribe":
            b.subs_ok += 1
            b.step += 1
            self._next_sub(b)

    def _next_sub(self, b: Binding) -> None:
        if b.step >= len(b.plan):
            b.phase = "bound"
            b.pending = None
            return
        slot, attr, min_ms, max_s = b.plan[b.step]
        b.sub_sent[(slot, attr)] = self.bus.now()
        self._request(b, msg.subscribe, slot, attr, min_ms, max_s)



class ReferenceCar(BusWatch):
    """The reference car itself (:class:`cabinlink_tools.car.Car`, default bindings) on the
    simulated bus, in its own event loop thread; its events ("described", "value", "ready")
    are stamped with bus time as they happen. ``ready`` is the car's own verdict (every
    wanted SUBSCRIBE answered); bound also needs each granted subscription's priming
    REPORT, as for the bench car. Its events carry their own bus time, so this thread only
    collects them, every 5 ms (sparing the car's thread the GIL)."""

    step_s = 0.005

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="reference car",
                                        daemon=True)
        self._thread.start()
        self.car = Car(can=f"cabinlink:{sim.bus_address}")
        self._events: list[tuple[float, int | None, str, Any]] = []
        self._call(self.car.start())
        self.car.on(self._on_event, ("described", "value", "ready", "warning"))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        try:
            self._call(self.car.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            super().close()

    def _on_event(self, ev: Any) -> None:  # the car's loop
        acc = self.car.engine.accessories.get(ev.acc)
        if acc is None or acc.name is None:
            return
        if ev.kind == "described" and acc.description is not None:
            info: Any = len(encode(acc.description.raw))
        elif ev.kind == "ready":
            info = set(ev.data["subscriptions"])  # attribute paths, e.g. "co2.value"
        elif ev.kind == "warning":  # a request refused, failed or timed out
            info = ev.text
        else:
            info = ev.data["path"]
        with self._lock:
            self._events.append((self.bus.now(), acc.name, ev.kind, info))

    def _step(self) -> None:
        self._bus_news()
        with self._lock:
            events, self._events = self._events, []
        for t, name, kind, info in events:
            b = self.bindings.get(name)
            if b is None:
                continue
            if kind == "described":
                b.desc_t, b.desc_bytes, b.phase = t, info, "subscribe"
            elif kind == "value":
                b.primed.setdefault(info, t)
            elif kind == "warning":  # the car repeats the request (a refusal is not retried)
                b.retries += 1
                b.failures.append(info)
            elif kind == "ready":
                b.subs_ok = len(info)
                b.primed = {k: v for k, v in b.primed.items() if k in info}
                b.phase = "bound"


# ---------------------------------------------------------------------------------------
# A fleet powered at the same instant
# ---------------------------------------------------------------------------------------


def _fleet(n: int, runtime: str, app: str, plan: Plan | None, *,
           after: Callable[[Simulation, Any, list[Binding]], dict[str, Any]] | None = None,
           timeout_s: float = 60.0) -> dict[str, Any]:
    with Simulation() as sim:
        accs: dict[str, Accessory] = {}
        held: list[str] = []
        hold_t: dict[str, float] = {}

        def on_hold(name: str) -> None:  # server thread: pause the board until release
            a = accs.get(name)
            if a is not None and a.process.proc is not None:
                os.killpg(a.process.proc.pid, signal.SIGSTOP)
            held.append(name)
            hold_t[name] = time.monotonic()

        gate = PowerGate(sim.bus, on_hold)
        gate.start()
        real_address, sim.bus_address = sim.bus_address, gate.channel
        try:
            for i in range(n):
                nm = f"{app[:3]}{i:02d}"
                accs[nm] = sim.add(BOARD, app, runtime, name=nm, start=False)
        finally:
            sim.bus_address = real_address
        car: BusWatch = ReferenceCar(sim) if plan is None else BindingCar(sim, plan)
        car.pump(0.4)  # the car's own claim settles first
        t_start = time.monotonic()
        for a in accs.values():
            a.process.start()
        deadline = time.monotonic() + 60 + 10 * n
        while len(held) < n:
            for a in accs.values():
                if not a.process.running:
                    raise RuntimeError(f"{a.name} ({runtime}) stopped before its CAN link opened:\n"
                                       + "\n".join(a.log[-20:]))
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(held)}/{n} boards reached their CAN link")
            car.pump(0.05)
        boot_wall = [hold_t[nm] - t_start for nm in accs]
        car.pump(0.3)
        gate.release()
        t_on = sim.bus.now()
        for a in accs.values():
            assert a.process.proc is not None
            os.killpg(a.process.proc.pid, signal.SIGCONT)
        ok = car.pump(timeout_s, lambda: len(car.bindings) >= n and all(
            car.bound(b) or b.phase == "failed" for b in car.bindings.values()))
        bindings = list(car.bindings.values())
        extra = after(sim, car, bindings) if after is not None else {}
        frames = [f for f in car.frames if f[0] >= t_on]
        car.close()
        gate.stop()
    per = []
    for b in bindings:
        per.append({
            "name": f"{b.name:016x}", "addr": b.addr, "claims": b.claims,
            "on_to_claim_ms": (b.first_claim_t - t_on) * 1e3,
            "claim_to_ready_ms": ((b.ready_t or b.claim_t) - b.claim_t) * 1e3,
            "on_to_ready_ms": ((b.ready_t or t_on) - t_on) * 1e3,
            "on_to_desc_ms": ((b.desc_t or t_on) - t_on) * 1e3 if b.desc_t else None,
            "on_to_bound_ms": ((b.bound_t or t_on) - t_on) * 1e3 if b.bound_t else None,
            "ready_to_bound_ms": ((b.bound_t - b.ready_t) * 1e3) if b.bound_t and b.ready_t else None,
            "subscriptions": b.subs_ok, "refused": b.refused, "retries": b.retries,
            "failures": b.failures,
            "desc_bytes": b.desc_bytes, "phase": b.phase,
        })
    bound = [r["on_to_bound_ms"] for r in per if r["on_to_bound_ms"] is not None]
    last_bound = max((b.bound_t for b in bindings if b.bound_t), default=t_on)
    busy = sum(bits for t, bits, _, _ in frames if t <= last_bound) / BITRATE
    return {
        "n": n, "runtime": runtime, "app": app, "all_bound": ok and len(bound) == n,
        "bound": len(bound), "per": per,
        "bound_max_ms": max(bound, default=float("nan")),
        "bound_median_ms": statistics.median(bound) if bound else float("nan"),
        "claim_to_ready_median_ms": statistics.median(r["claim_to_ready_ms"] for r in per) if per else float("nan"),
        "on_to_claim_max_ms": max((r["on_to_claim_ms"] for r in per), default=float("nan")),
        "reclaims": sum(r["claims"] - 1 for r in per),
        "retries": sum(r["retries"] for r in per),
        "subscriptions": sum(r["subscriptions"] for r in per),
        "frames_until_bound": sum(1 for t, *_ in frames if t <= last_bound),
        "bus_load_until_bound": busy / max(last_bound - t_on, 1e-9),
        "boot_wall_s_median": statistics.median(boot_wall),
        **extra,
    }


def plug_in(n: int = 1, runtime: str = "micropython", app: str = "ambient",
            plan: str = "reference car", car: str = "bench") -> dict[str, Any]:
    """Power ``n`` boards running ``app`` at the same instant; the car binds them all.
    ``car``: "bench" (:class:`BindingCar`, subscribing as ``plan``, a key of :data:`PLANS`,
    says) or "reference" (:class:`ReferenceCar`: the reference car with its default
    bindings, whose plan is "reference car").

    Returns per-accessory phases and the fleet's figures (ms of bus time from power-on):
    ``bound_max_ms`` (the last accessory bound), ``bound_median_ms``,
    ``claim_to_ready_median_ms`` (the settle time as the bus shows it), ``reclaims``
    (address contests lost), ``retries`` (requests repeated)."""
    if car == "reference":
        if plan != "reference car":
            raise ValueError("the reference car subscribes as its bindings say: plan 'reference car'")
        return {**_fleet(n, runtime, app, None), "plan": plan, "car": car}
    return {**_fleet(n, runtime, app, PLANS[plan]), "plan": plan, "car": car}


def bus_load(n: int = 16, runtime: str = "micropython", app: str = "ambient",
             window_s: float = 5.0) -> dict[str, Any]:
    """``n`` accessories bound with one 1 Hz subscription each (temperature value, min
    1000 ms, max 1 s); measured over ``window_s`` of bus time after a 2 s settling period.

    Returns ``load`` (``SimBus.load(window_s)``), frames per second by kind, the load spec
    7.8's arithmetic predicts for those frames (``spec_load``), and the spec's worked
    example for comparison."""

    def measure(sim: Simulation, car: BindingCar, bindings: list[Binding]) -> dict[str, Any]:
        car.pump(2.0)
        mark = len(car.frames)
        t0 = sim.bus.now()
        car.pump(window_s)
        load = sim.bus.load(window_s)
        t1 = sim.bus.now()
        got = [f for f in car.frames[mark:] if t0 <= f[0] <= t1]
        span = t1 - t0
        kinds = {"heartbeat": 0, "report": 0, "other": 0}
        for _, _, cid, data in got:
            if (cid >> 8) & 0xFFFF == 0xDBFF:
                kinds["heartbeat"] += 1
            elif (cid >> 16) & 0xFF == 0xDA and data[:1] and data[0] >> 4 == 0 and len(data) > 2 \
                    and data[2] == msg.REPORT:
                kinds["report"] += 1
            else:
                kinds["other"] += 1
        fps = len(got) / span
        return {"window_s": span, "load": load, "fps": fps,
                "fps_by_kind": {k: v / span for k, v in kinds.items()},
                "busy_load": sum(b for _, b, _, _ in got) / BITRATE / span,
                "spec_load": fps * SPEC_FRAME_MS / 1000, "spec_example_load": SPEC_EXAMPLE_LOAD}

    return _fleet(n, runtime, app, plan_temperature, after=measure)


# ---------------------------------------------------------------------------------------
# Bulk transfer: ISO-TP vs CANopen SDO block download
# ---------------------------------------------------------------------------------------


def bus_ceiling(bitrate: int = BITRATE, extended: bool = True) -> dict[str, float]:
    """The bus's payload ceiling: back-to-back frames with 8 data bytes, their length with
    stuffing estimated as in bench/sim_bench.py (the mean over 2000 frames of random ids
    and data; 29-bit ids as CabinLink's, or 11-bit ones as CANopen's with ``extended=False``)."""
    import random

    rnd = random.Random(1)
    bits = [cb.Frame(rnd.randrange(1 << 29) if extended else rnd.randrange(1 << 11),
                     rnd.randbytes(8), extended).bits for _ in range(2000)]
    mean_bits = sum(bits) / len(bits)
    fps = bitrate / mean_bits
    return {"mean_frame_bits": mean_bits, "frames_per_s": fps, "payload_Bps": 8 * fps}


def _payload(size: int) -> bytes:
    return bytes((i * 131 + (i >> 8)) & 0xFF for i in range(size))


class _Tap:
    """Bus listener keeping (start, end) of the frames whose id passes ``match``."""

    def __init__(self, bus: cb.SimBus, match: Callable[[int], bool]) -> None:
        self.bus = bus
        self.match = match
        self.spans: list[tuple[float, float, int]] = []
        bus.add_listener(self)

    def __call__(self, ev: cb.BusEvent) -> None:
        f = ev.frame
        if ev.kind == "frame" and f is not None and self.match(f.can_id):
            self.spans.append((ev.timestamp - ev.bits / BITRATE, ev.timestamp, ev.bits))

    def close(self) -> dict[str, float]:
        self.bus.remove_listener(self)
        s = self.spans
        return {"frames": len(s), "bus_s": s[-1][1] - s[0][0] if s else 0.0,
                "busy_s": sum(b for *_, b in s) / BITRATE}


def _result(size: int, tap: dict[str, float], extended: bool, **kw: Any) -> dict[str, Any]:
    """Throughput of one transfer: payload bytes per second of bus time from the start of
    its first frame to the end of its last, against the 29-bit ceiling (``of_ceiling``)
    and against the ceiling of its own frame format (``of_own_ceiling``)."""
    bps = size / tap["bus_s"] if tap["bus_s"] else 0.0
    frames = max(tap["frames"], 1)
    return {"bytes": size, **tap, "payload_Bps": bps,
            "of_ceiling": bps / bus_ceiling()["payload_Bps"],
            "of_own_ceiling": bps / bus_ceiling(extended=extended)["payload_Bps"],
            "payload_per_frame": size / frames, "mean_frame_bits": tap["busy_s"] * BITRATE / frames,
            "bus_busy": tap["busy_s"] / tap["bus_s"] if tap["bus_s"] else 0.0, **kw}


def bulk_isotp(size: int = BULK_SIZE, realtime: bool = True) -> dict[str, Any]:
    """``size`` bytes from one python-can peer to another through two of the core's
    ``isotp.Channel`` (the accessory's and the car's code), receiver BS 0, STmin 0.
    ISO-TP on classic CAN carries at most 4095 bytes per message (12-bit FF_DL; our
    channels do not implement the ISO 15765-2:2016 32-bit FF_DL escape, and the spec
    forbids it, M-7.4-4), so the payload goes as consecutive 4095-byte messages."""
    import can

    from cabinlink_tools.sim.pycan_plugin import CabinLinkSimBus

    data = _payload(size)
    chunks = [data[i:i + isotp.MAX_LEN] for i in range(0, size, isotp.MAX_LEN)]
    a_addr, b_addr = 0x80, 0x00
    with cb.SimBus(BITRATE, realtime=realtime) as bus, cb.SimBusServer(bus) as srv:
        pa = CabinLinkSimBus(channel=srv.channel, name="isotp-tx", receive_errors=False)
        pb = CabinLinkSimBus(channel=srv.channel, name="isotp-rx", receive_errors=False)
        ca, cbb = PythonCanController(pa), PythonCanController(pb)
        clock = Clock()
        got = io.BytesIO()
        msgs = [0]

        def on_msg(m: memoryview) -> None:
            got.write(m)
            msgs[0] += 1

        tx = isotp.Channel(clock, lambda i, d: ca.send(i, d, 2) is not None,
                           isotp.phys_id(6, b_addr, a_addr))
        rx = isotp.Channel(clock, lambda i, d: cbb.send(i, d, 2) is not None,
                           isotp.phys_id(6, a_addr, b_addr), rx_max=isotp.MAX_LEN, on_message=on_msg)
        tap = _Tap(bus, lambda cid: (cid >> 16) & 0xFF == 0xDA)
        pairs = ((ca, tx, isotp.phys_id(6, a_addr, b_addr)), (cbb, rx, isotp.phys_id(6, b_addr, a_addr)))
        buf = [0, memoryview(bytearray(8)), 0, 0]
        sent = 0
        deadline = time.monotonic() + 120
        while got.tell() < size and time.monotonic() < deadline:
            busy = False
            if not tx.tx_busy and sent < len(chunks):
                tx.send(chunks[sent])
                sent += 1
            for ctl, ch, want in pairs:
                while (r := ctl.recv(buf)) is not None:
                    busy = True
                    if r[0] == want:
                        ch.on_frame(r[1])
                ch.poll()
            if not busy:
                time.sleep(0.0002)
        stats = tap.close()
        pa.shutdown()
        pb.shutdown()
        ok = got.getvalue() == data
    return _result(size, stats, True, ok=ok, messages=msgs[0],
                   how=f"{len(chunks)} ISO-TP messages (4095 B max each)")


def _sdo_block_server() -> Any:
    """canopen's SdoServer with the server side of SDO block download (CiA 301), which
    canopen 2.4's own server answers with an abort. Only what the bench needs: one
    download at a time, CRC checked with canopen's CRC class, no retransmission requests
    (the simulated bus loses nothing)."""
    from canopen.sdo.constants import (ABORT_CRC_ERROR, BLOCK_TRANSFER_RESPONSE, CRC_SUPPORTED,
                                       END_BLOCK_TRANSFER, NO_MORE_BLOCKS, REQUEST_BLOCK_DOWNLOAD,
                                       RESPONSE_BLOCK_DOWNLOAD)
    from canopen.sdo.server import SdoServer

    class BlockSdoServer(SdoServer):
        blksize = 127

        def __init__(self, *a: Any) -> None:
            super().__init__(*a)
            self._blk: bytearray | None = None  # data of the download in progress
            self._seq = 0
            self._crc_on = False
            self._last = False

        def on_request(self, can_id: int, data: bytes, timestamp: float) -> None:
            if self._blk is not None and not self._last_seen_end(data):
                return self._segment(data)
            if data[0] & 0xE0 == REQUEST_BLOCK_DOWNLOAD:
                return self._block(data)
            return super().on_request(can_id, data, timestamp)

        def _last_seen_end(self, data: bytes) -> bool:
            # After the final segment, the next frame is the client's end request.
            return self._last and data[0] & 0xE0 == REQUEST_BLOCK_DOWNLOAD

        def _block(self, data: bytes) -> None:
            cmd = data[0]
            if cmd & 0x1 == 0:  # initiate
                _, self._index, self._subindex = struct.unpack_from("<BHB", data)
                self._blk = bytearray()
                self._seq = 0
                self._last = False
                self._crc_on = bool(cmd & CRC_SUPPORTED)
                resp = bytearray(8)
                struct.pack_into("<BHBB", resp, 0, RESPONSE_BLOCK_DOWNLOAD | CRC_SUPPORTED,
                                 self._index, self._subindex, self.blksize)
                self.send_response(resp)
                return
            if cmd & 0x3 == END_BLOCK_TRANSFER and self._blk is not None:
                unused = (cmd >> 2) & 0x7
                body = bytes(self._blk[:len(self._blk) - unused])
                self._blk = None
                if self._crc_on:
                    crc = self.crc_cls()
                    crc.process(body)
                    if struct.unpack_from("<H", data, 1)[0] != crc.final():
                        return self.abort(ABORT_CRC_ERROR)
                self._node.set_data(self._index, self._subindex, body)
                resp = bytearray(8)
                resp[0] = RESPONSE_BLOCK_DOWNLOAD | END_BLOCK_TRANSFER
                self.send_response(resp)

        def _segment(self, data: bytes) -> None:
            assert self._blk is not None
            seq = data[0] & 0x7F
            if seq != self._seq + 1:
                return  # out of sequence: ignored (the ACK below reports the last good one)
            self._seq = seq
            self._blk += data[1:8]
            last = bool(data[0] & NO_MORE_BLOCKS)
            if last or seq >= self.blksize:
                self._last = last
                resp = bytearray(8)
                resp[0] = RESPONSE_BLOCK_DOWNLOAD | BLOCK_TRANSFER_RESPONSE
                resp[1] = seq
                resp[2] = self.blksize
                self.send_response(resp)
                self._seq = 0

    return BlockSdoServer


def bulk_sdo_block(size: int = BULK_SIZE, realtime: bool = True, node_id: int = 5) -> dict[str, Any]:
    """``size`` bytes written to a DOMAIN object of a canopen LocalNode by a canopen
    RemoteNode with SDO block download (127 segments per block, CRC), each side on its own
    python-can peer of the simulated bus."""
    import canopen
    from canopen import objectdictionary as od

    from cabinlink_tools.sim.pycan_plugin import CabinLinkSimBus

    data = _payload(size)

    def dictionary() -> Any:
        d = od.ObjectDictionary()
        v = od.ODVariable("bulk", 0x2000, 0)
        v.data_type = od.DOMAIN
        v.access_type = "rw"
        d.add_object(v)
        return d

    with cb.SimBus(BITRATE, realtime=realtime) as bus, cb.SimBusServer(bus) as srv:
        server_net = canopen.Network(CabinLinkSimBus(channel=srv.channel, name="sdo-server",
                                                     receive_errors=False))
        client_net = canopen.Network(CabinLinkSimBus(channel=srv.channel, name="sdo-client",
                                                     receive_errors=False))
        local = canopen.LocalNode(node_id, dictionary())
        local.sdo = _sdo_block_server()(0x600 + node_id, 0x580 + node_id, local)
        server_net.add_node(local)
        remote = canopen.RemoteNode(node_id, dictionary())
        client_net.add_node(remote)
        server_net.connect()
        client_net.connect()
        tap = _Tap(bus, lambda cid: cid in (0x600 + node_id, 0x580 + node_id))
        try:
            with remote.sdo.open(0x2000, 0, "wb", size=size, block_transfer=True,
                                 buffering=0) as f:
                view = memoryview(data)
                pos = 0
                while pos < size:
                    n = f.write(view[pos:pos + 7])
                    pos += n or 0
            time.sleep(0.05)
            stats = tap.close()
            ok = local.data_store.get(0x2000, {}).get(0) == data
        finally:
            client_net.disconnect()
            server_net.disconnect()
    return _result(size, stats, False, ok=ok,
                   how="canopen RemoteNode -> LocalNode, SDO block download, blksize 127, CRC")


def bulk(size: int = BULK_SIZE) -> dict[str, Any]:
    """Both transfers of ``size`` bytes and the bus ceilings they are measured against."""
    return {"size": size, "ceiling": bus_ceiling(), "ceiling_11bit": bus_ceiling(extended=False),
            "isotp": bulk_isotp(size), "sdo_block": bulk_sdo_block(size)}


# ---------------------------------------------------------------------------------------


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["bound_max_ms"])
    if not ok:
        return runs[0]
    best = dict(ok[(len(ok) - 1) // 2])
    best["runs"] = len(runs)
    best["worst_bound_max_ms"] = ok[-1]["bound_max_ms"]
    best["errors"] = [r["error"] for r in runs if "error" in r]
    return best


def run_all(quick: bool = False, reps: int = 3) -> dict[str, Any]:
    """Everything ``make bench`` prints for issue 6. Each plug-in case runs ``reps`` times
    and reports the run with the median ``bound_max_ms`` plus the worst; ``quick``: one
    app and runtime, fleets of 2, one run each, 4 KiB transfers, a 2 s load window."""
    fleet = 2 if quick else 16
    reps = 1 if quick else reps
    combos = [("ambient", "micropython"), ("controller", "micropython"),
              ("ambient", "cpython"), ("controller", "cpython")]
    if quick:
        combos = combos[1:2]
    plug: list[dict[str, Any]] = []
    # The reference car itself; then the bench car with the heaviest plan, one accessory.
    cases = [(app, runtime, n, "reference car", "reference")
             for app, runtime in combos for n in (1, fleet)]
    cases += [(app, runtime, 1, "every reportable", "bench") for app, runtime in combos]
    for app, runtime, n, plan, car in cases:
        runs = []
        for _ in range(reps):
            try:
                runs.append(plug_in(n, runtime, app, plan, car))
            except Exception as e:  # noqa: BLE001 - reported in the table
                runs.append({"n": n, "runtime": runtime, "app": app, "plan": plan, "car": car,
                             "error": f"{type(e).__name__}: {e}"})
        plug.append(_median_run(runs))
    try:
        load = bus_load(fleet, "micropython", "ambient", window_s=2.0 if quick else 5.0)
    except Exception as e:  # noqa: BLE001
        load = {"n": fleet, "error": f"{type(e).__name__}: {e}"}
    return {"plug_in": plug, "bus_load": load, "bulk": bulk(4096 if quick else BULK_SIZE)}


Table = tuple[str, list[str], list[list[str]]]


def _ms(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.0f}"


def tables(r: dict[str, Any]) -> list[Table]:
    """The three ``make bench`` tables (title, header, rows) for a :func:`run_all` result."""
    rows = []
    for x in r["plug_in"]:
        if "error" in x:
            rows.append([x["app"], x["runtime"], x["car"], x["plan"], str(x["n"]), "error",
                         x["error"][:70], "", "", "", "", ""])
            continue
        goal = GOAL_ONE_S if x["n"] == 1 else GOAL_FLEET_S
        desc = max((p["on_to_desc_ms"] or 0 for p in x["per"]), default=0)
        met = x["all_bound"] and x["bound_max_ms"] <= goal * 1000
        worst = x.get("worst_bound_max_ms", x["bound_max_ms"])
        rows.append([x["app"], x["runtime"], x["car"], x["plan"], str(x["n"]),
                     str(x["subscriptions"] // max(x["n"], 1)),
                     _ms(x["claim_to_ready_median_ms"]), _ms(desc), _ms(x["bound_median_ms"]),
                     f"{_ms(x['bound_max_ms'])} ({_ms(worst)})", str(x["retries"] + x["reclaims"]),
                     ("yes" if met else "NO") + f" (<= {goal * 1000:.0f})"])
    rows.append(["Cyphal plug-and-play (reference, not measured)", "", "", "", "", "", "", "", "",
                 f"<= {CYPHAL_PNP_REQUEST_S * 1000:.0f} per allocation request", "", ""])
    reps = max((x.get("runs", 1) for x in r["plug_in"]), default=1)
    plug = (f"Plug-in to bound: power-on -> the car has the description and live subscriptions "
            f"(car 'reference': the reference car, cabinlink_tools.car.Car, with its default "
            f"bindings; car 'bench': the core's CanLink + CarClient, plan 'every reportable': "
            f"every reportable attribute, device_info's too), "
            f"bus time, ms; boards powered at the same instant (median run of {reps}, worst in "
            f"brackets); the settle column is the 250 ms of spec 7.3 inside it",
            ["app", "runtime", "car", "plan", "accessories", "subs each", "claim -> 1st heartbeat (settle)",
             "-> description (max)", "-> bound median", "-> bound max (worst)", "retries+reclaims",
             "goal met"], rows)
    lo = r["bus_load"]
    if "error" in lo:
        load_rows = [[f"{lo['n']} accessories", "error", lo["error"][:70], "", "", ""]]
    else:
        k = lo["fps_by_kind"]
        load_rows = [[f"{lo['n']} ambient accessories + car ({lo['runtime']})",
                      f"{k['heartbeat']:.1f} + {k['report']:.1f} + {k['other']:.1f}",
                      f"{lo['load'] * 100:.2f} %", f"{lo['spec_load'] * 100:.2f} %",
                      f"{lo['spec_example_load'] * 100:.1f} %",
                      "yes" if lo["load"] <= lo["spec_example_load"] else "NO"]]
    load = (f"Bus load, accessories reporting at 1 Hz (one subscription each, min 1000 ms, max 1 s), "
            f"SimBus.load() over {lo.get('window_s', 0):.0f} s of bus time",
            ["fleet", "frames/s: heartbeat + report + other", "measured load",
             "spec 7.8 arithmetic (x 0.27 ms)", "spec 7.8 example (car + 8, busy)",
             "within the example's load"], load_rows)
    b = r["bulk"]
    c29, c11 = b["ceiling"], b["ceiling_11bit"]
    bulk_rows = []
    for label, x in (("CabinLink ISO-TP (core isotp.Channel), 29-bit ids", b["isotp"]),
                     ("CANopen SDO block download (python canopen), 11-bit ids", b["sdo_block"])):
        bulk_rows.append([label, str(x["frames"]), f"{x['mean_frame_bits']:.0f}", f"{x['bus_s']:.3f}",
                          f"{x['payload_Bps'] / 1000:.1f}", f"{x['of_ceiling'] * 100:.0f} %",
                          f"{x['of_own_ceiling'] * 100:.0f} %", f"{x['bus_busy'] * 100:.0f} %",
                          "yes" if x["ok"] else "NO"])
    bulk = (f"Bulk transfer of {b['size'] // 1024} KiB between two python-can peers, bus time; ceiling: "
            f"8-byte frames back to back at 500 kbit/s = {c29['payload_Bps'] / 1000:.1f} kB/s with 29-bit "
            f"ids ({c29['mean_frame_bits']:.0f} bits/frame), {c11['payload_Bps'] / 1000:.1f} kB/s with 11-bit "
            f"({c11['mean_frame_bits']:.0f}); ISO-TP as {b['isotp']['messages']} messages of <= 4095 B",
            ["transfer", "frames", "bits/frame", "bus s", "payload kB/s", "of 29-bit ceiling",
             "of own-format ceiling", "bus busy", "data intact"], bulk_rows)
    return [plug, load, bulk]


if __name__ == "__main__":
    res = run_all("--quick" in sys.argv)
    if "--json" in sys.argv:
        print(json.dumps(res, indent=1, default=str))
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        from run import table

        for t in tables(res):
            print(table(*t))
            print()
