"""Events (3.5, 5.3-5, 5.9, 6.4-5): who gets them, how often, in which order.

The suite needs the accessory to raise events. A simulated target does something in the
world (presses a button, puts a phone in the mount); an ambient sensor is made to raise its
air-quality event through the protocol (co2.high_ppm moved across the current value, then
back), which works on real units too. Several sessions watch at once: two cars that said
HELLO, one that did not, one whose HELLO had another major version, and a BLE car."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.conformance.check import Req, must
from cabinlink_tools.conformance.targets import Stimulus

GREETED2, UNGREETED, MISMATCH = 0x05, 0x06, 0x07


def protocol_stimulus(dut: Any) -> Stimulus | None:
    """co2.air_quality through co2.high_ppm (registry semantics), if the accessory has it."""
    c = dut.declaration.find(reg.CAP_CO2)
    if c is None or reg.ATTR_CO2_HIGH_PPM not in c.attrs or reg.EV_CO2_AIR_QUALITY not in c.events:
        return None
    s = dut.session()
    end = time.time() + 12
    while s.value(msg.read, c.slot, reg.ATTR_CO2_STATUS) != 0:
        if time.time() > end:
            return None
        time.sleep(0.25)
    value = s.value(msg.read, c.slot, reg.ATTR_CO2_VALUE)
    old = s.value(msg.read, c.slot, reg.ATTR_CO2_HIGH_PPM)
    hyst = s.value(msg.read, c.slot, reg.ATTR_CO2_HYSTERESIS_PPM)
    if value < 400 or value >= old or value + hyst + 1 > 10000:
        return None
    low = max(400, min(value, 10000))
    return Stimulus(f"co2.high_ppm {old} -> {low} (CO2 reads {value} ppm) and back",
                    lambda: s.ask(msg.write, c.slot, reg.ATTR_CO2_HIGH_PPM, low),
                    lambda: s.ask(msg.write, c.slot, reg.ATTR_CO2_HIGH_PPM, old))


@dataclass
class Watch:
    stimulus: str = ""
    sessions: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    dropped: tuple[int, int] = (0, 0)
    t0: float = 0.0

    def events(self, label: str) -> list[list[Any]]:
        s = self.sessions[label]
        return [m.value for m in s.events(self.marks[label])]


def watch(dut: Any) -> Watch | None:
    stim = dut.target.stimulus() or protocol_stimulus(dut)
    if stim is None:
        return None
    w = Watch(stim.what)
    main = dut.session()
    main.ask(msg.hello)
    w.sessions["greeted (main)"] = main
    if dut.probe is not None:
        g2 = dut.peer(GREETED2)
        un = dut.peer(UNGREETED)
        mm = dut.peer(MISMATCH)
        time.sleep(max(0.0, mm.peer.ready_at - time.time()))
        g2.ask(msg.hello)
        un.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH)  # a session, no HELLO
        mm.ask(msg.hello, msg.VERSION_MAJOR + 1, 0)
        w.sessions.update({"greeted (second car)": g2, "never said HELLO": un, "HELLO with major + 1": mm})
    if dut.target.has_ble and dut.probe is not None:
        b = dut.ble()
        b.ask(msg.hello)
        w.sessions["greeted (BLE)"] = b
    # events_dropped changes only when an event does not fit a queue: the last reading the
    # suite has is good enough as the starting point
    dropped0 = dut.counters_exact(reuse_any=True)[reg.ATTR_DEVICE_INFO_EVENTS_DROPPED]
    w.marks = {k: s.mark() for k, s in w.sessions.items()}
    w.t0 = time.time()
    stim.fire()
    time.sleep(0.25)
    stim.undo()
    time.sleep(0.35)
    # events_dropped, as mirrored after the events: needed only when the greeted sessions
    # did not all get the same events (one may have been dropped for a full queue)
    lists = [w.events(k) for k in w.sessions if k.startswith("greeted")]
    if any(x != lists[0] for x in lists):
        w.dropped = (dropped0, dut.counters_exact()[reg.ATTR_DEVICE_INFO_EVENTS_DROPPED])
    else:
        w.dropped = (dropped0, dropped0)
    for sa in (GREETED2, UNGREETED, MISMATCH):
        if dut.probe is not None:
            dut.probe.remove_peer(sa)
    return w


@pytest.fixture
def seen(dut: Any) -> Watch:
    w = dut.cached("events", lambda: watch(dut))
    if w is None:
        pytest.skip(f"the suite cannot make this accessory raise events ({dut.target.spec.text}: no stimulus in the "
                    "world and no registry event it can cause through the protocol)")
    return w


def _greeted(w: Watch) -> list[str]:
    return [k for k in w.sessions if k.startswith("greeted")]


@must("M-3.5-1")
def test_M_3_5_1_each_event_once_to_each_greeted_session(dut: Any, req: Req, seen: Watch) -> None:
    greeted = _greeted(seen)
    ref = seen.events(greeted[0])
    req(ref, f"no EVENT after {seen.stimulus}")
    lost = seen.dropped[1] - seen.dropped[0]
    for k in greeted:
        ev = seen.events(k)
        for a, b in zip(ev, ev[1:]):
            req(a != b, f"{k}: the same EVENT {a} twice in a row after {seen.stimulus}: an event is sent once")
        if not lost:
            req(ev == ref, f"{k} got EVENTs {ev}, {greeted[0]} got {ref}: every greeted session gets each event once")


@must("M-5.3-5")
def test_M_5_3_5_events_only_to_greeted_sessions(dut: Any, req: Req, seen: Watch) -> None:
    others = [k for k in seen.sessions if not k.startswith("greeted")]
    if not others:
        pytest.skip("needs a second session that did not say HELLO (CAN car addresses)")
    req(seen.events(_greeted(seen)[0]), "no EVENT reached even the greeted session")
    for k in others:
        ev = seen.events(k)
        req(not ev, f"a session that {k.split('(')[0]} got EVENT(s) {ev[:3]}: only greeted sessions may")


@must("M-6.4-5")
def test_M_6_4_5_event_queue_in_order_and_counted(dut: Any, req: Req, seen: Watch) -> None:
    greeted = _greeted(seen)
    lists = {k: seen.events(k) for k in greeted}
    longest = max(lists.values(), key=len)
    lost = seen.dropped[1] - seen.dropped[0]
    for k, ev in lists.items():
        # in order: each session's events are the longest sequence with some left out
        it = iter(longest)
        req(all(e in it for e in ev), f"{k} got EVENTs {ev} in another order than {longest}")
        missing = len(longest) - len(ev)
        req(missing <= lost, f"{k} lacks {missing} EVENT(s) the others got, but events_dropped rose by {lost}: "
                             "an event that does not fit the queue must be counted")
