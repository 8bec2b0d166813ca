"""Several cars at once: the session table (5.3) and the subscription table (6.4)."""
from __future__ import annotations

import math
import time
from typing import Any

import pytest

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.conformance.check import Req, must, show

FIRST = 0x04  # car addresses 0x04.. are used here
OTHERS = (0x01, 0x02, 0x03, 0x0B, 0x0C, 0x0D, 0x0E)


@pytest.fixture(scope="module")
def can_dut(dut: Any) -> Any:
    if dut.probe is None:
        pytest.skip("needs the CAN link (car addresses)")
    dut.backgrounds["liveness"].result(30)  # its subscriptions are gone by then
    for name in ("phase2", "stall", "counting"):  # and those of the other scenarios
        b = dut.backgrounds.get(name)
        if b is not None:
            b._thread.join(60)
    # the suite's other cars fall silent, so they are the least recently heard from now on
    for sa in OTHERS:
        dut.probe.remove_peer(sa)
    dut.drop_ble()
    return dut


def _fill(dut: Any) -> dict[str, Any]:
    """Subscriptions over several sessions until 16 are held, then one more."""
    info = dut.info_slot()
    rep = dut.declaration.reportable()
    n_sessions = math.ceil(17 / len(rep))
    sessions = [dut.main] + [dut.peer(FIRST + i) for i in range(n_sessions - 1)]
    time.sleep(max(0.0, max(s.peer.ready_at for s in sessions) - time.time()))
    held: list[tuple[Any, int, int]] = []
    out: dict[str, Any] = {"refused": None, "held": held, "sessions": sessions}
    for s in sessions:
        for c, a in rep:
            if len(held) == 16:
                r = s.ask(msg.subscribe, c.slot, a.id, 0, 3600)
                out["extra"] = (s, c.slot, a.id, r)
                return out
            r = s.ask(msg.subscribe, c.slot, a.id, 0, 3600)
            if r[2] != msg.OK:
                out["refused"] = (len(held), s.label, a.label, r)
                return out
            held.append((s, c.slot, a.id))
    return out


def _unfill(dut: Any, f: dict[str, Any]) -> None:
    if f.get("done"):
        return
    f["done"] = True
    for s, slot, attr in f["held"]:
        s.ask(msg.unsubscribe, slot, attr)
    if "extra" in f and f["extra"][3][2] == msg.OK:
        s, slot, attr, _ = f["extra"]
        s.ask(msg.unsubscribe, slot, attr)
    for s in f["sessions"][1:]:
        dut.probe.remove_peer(s.peer.sa)


@pytest.fixture(scope="module")
def filled(can_dut: Any) -> Any:
    f = can_dut.cached("filled", lambda: _fill(can_dut))
    yield f
    _unfill(can_dut, f)


@must("M-6.4-1")
def test_M_6_4_1_sixteen_subscriptions_then_no_resources(can_dut: Any, req: Req, filled: dict[str, Any]) -> None:
    ref = filled["refused"]
    req(ref is None, f"only {ref[0] if ref else 0} subscriptions were accepted (at least 16 in total): "
                     f"{ref[1] if ref else ''} {ref[2] if ref else ''} answered {show(ref[3] if ref else None)}")
    s, slot, attr, r = filled["extra"]
    if r[2] == msg.OK:
        pytest.skip("the accessory holds more than 16 subscriptions; the suite did not fill its table")
    req.status(r, msg.NO_RESOURCES, "a 17th SUBSCRIBE (the table holds 16)")


@must("M-6.4-2")
def test_M_6_4_2_resubscribe_replaces(can_dut: Any, req: Req, filled: dict[str, Any]) -> None:
    held = filled["held"]
    req(len(held) == 16, f"the table could not be filled ({len(held)} subscriptions)")
    s, slot, attr = held[0]
    mark = s.mark()
    r = s.ask(msg.subscribe, slot, attr, 250, 7)
    req(r[2] == msg.OK and r[3] == [250, 7], f"a SUBSCRIBE replacing an existing one while the table is full must be "
                                            f"answered OK [250, 7] (never NO_RESOURCES), got {show(r)}")
    got = s.wait(lambda: s.reports(mark, slot, attr), 1.0)
    req(got, "no new priming REPORT after the replacing SUBSCRIBE")
    r = s.ask(msg.unsubscribe, slot, attr)
    req.status(r, msg.OK, "UNSUBSCRIBE of the replaced subscription")
    r = s.ask(msg.unsubscribe, slot, attr)
    req.status(r, msg.NOT_FOUND, "a second UNSUBSCRIBE (one subscription per (slot, attribute), replaced, not added)")
    r = s.ask(msg.subscribe, slot, attr, 0, 3600)
    req.status(r, msg.OK, "SUBSCRIBE again into the freed place")


EVICT = list(range(0x04, 0x10))  # twelve silent cars, one after the other


def evictions(dut: Any) -> dict[str, Any]:
    filled = dut._cache.get("filled")
    if filled is not None and filled[0] is not None:
        _unfill(dut, filled[0])  # the subscription table empty again, those cars gone
    info = dut.info_slot()
    peers = []
    t0 = time.time()
    r_main = dut.main.ask(msg.subscribe, info, reg.ATTR_DEVICE_INFO_MODE, 0, 3600)
    for sa in EVICT:
        dut.main.peer.heartbeat()  # the main car stays the most recently heard
        p = dut.peer(sa, claim_address=False, heartbeat_s=None)
        r = p.ask(msg.subscribe, info, reg.ATTR_DEVICE_INFO_HEALTH, 0, 1)
        peers.append((sa, p, r, time.time()))
        time.sleep(0.02)
    t_last = time.time()
    # the main car, heard all along, must have kept its session (and subscription)
    main_ok = dut.main.ask(msg.unsubscribe, info, reg.ATTR_DEVICE_INFO_MODE)[2] == msg.OK
    # Which sessions are still there: an UNSUBSCRIBE finds its subscription (OK) only in a
    # session that was kept (NOT_FOUND: ended, with its subscriptions). Asked newest first,
    # so that the session a NOT_FOUND opens anew can only push out one already asked.
    live = {}
    for sa, p, r, t in reversed(peers):
        u = p.ask(msg.unsubscribe, info, reg.ATTR_DEVICE_INFO_HEALTH)
        live[sa] = u[2] == msg.OK
    return {"peers": [(sa, r) for sa, _, r, _ in peers], "live": live, "main": main_ok, "main_sub": r_main,
            "t": t_last - t0}


@pytest.fixture
def evicted(can_dut: Any) -> dict[str, Any]:
    return can_dut.cached("evictions", lambda: evictions(can_dut))


@must("M-5.3-6")
def test_M_5_3_6_four_sessions_at_once(can_dut: Any, req: Req, evicted: dict[str, Any]) -> None:
    for sa, r in evicted["peers"]:
        req(r[2] == msg.OK, f"SUBSCRIBE from car 0x{sa:02X} answered {show(r)}")
    live = [sa for sa, ok in evicted["live"].items() if ok]
    n = len(live) + (1 if evicted["main"] else 0)
    req(n >= 4, f"only {n} sessions were served at once (cars {[hex(x) for x in live]} and "
                f"{'the main car' if evicted['main'] else 'not the main car'}): at least 4")


@must("M-5.3-7")
def test_M_5_3_7_least_recently_heard_evicted(can_dut: Any, req: Req, evicted: dict[str, Any]) -> None:
    order = [sa for sa, _ in evicted["peers"]]
    live = evicted["live"]
    if all(live.values()):
        pytest.skip(f"{len(order) + 1} sessions at once did not fill the accessory's session table")
    req(evicted["main"], "the main car, heard every second, lost its session when new cars came: the session heard "
                         "from least recently must go")
    pattern = "".join("1" if live[sa] else "0" for sa in order)
    req("10" not in pattern, f"sessions kept (1) and ended (0) in the order the cars came: {pattern}; when the table is "
                             "full the least recently heard session must end, so the ended ones must come first")


@must("M-5.3-4")
def test_M_5_3_4_requests_answered_without_hello(dut: Any, req: Req) -> None:
    if dut.probe is None:
        dut.drop_ble()
        s = dut.ble_connect(label="BLE (no HELLO)")
        try:
            r = s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_VENDOR)
        finally:
            s.s.conn.disconnect()
    else:
        s = dut.peer(0x01)
        r = s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_VENDOR)
    req.status(r, msg.OK, f"READ device_info.vendor from a car that never said HELLO ({s.label})")
    req.status(s.ask(msg.describe), msg.OK, f"DESCRIBE from a car that never said HELLO ({s.label})")
