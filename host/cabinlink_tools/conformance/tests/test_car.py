"""The car's duties (``--cl-target car:...``): what a car must do, judged from the bus while
the suite plays accessories around it (car_target.py). The duties of every node (encoding,
framing, heartbeat) are checked on the car's own frames."""
from __future__ import annotations

import statistics
import time
from typing import Any


from cabinlink import claim, msg
from cabinlink import registry as reg
from cabinlink.codec import decode, encode

from cabinlink_tools.conformance import cbor_check as cc
from cabinlink_tools.conformance.car_target import CarBench, SuiteAccessory, description_with
from cabinlink_tools.conformance.check import Req, early, first, must, show
from cabinlink_tools.conformance.model import check_value

TEMP_SLOT = 1  # the suite accessory: device_info, temperature


def _types(reqs: list[list[Any]]) -> list[int]:
    return [r[0] for r in reqs]


def _read(car: CarBench, a: SuiteAccessory, path: str, timeout: float = 6.0) -> Any:
    ca = car.car_accessory(a)
    return car.run(ca.read(path), timeout)


def _fails(car: CarBench, a: SuiteAccessory, path: str, timeout: float = 8.0) -> Any:
    """The exception the car's read raises (None when it returned a value)."""
    try:
        _read(car, a, path, timeout)
    except Exception as e:  # noqa: BLE001 - RequestFailed is what a failure must be
        return e
    return None


# --- claiming, heartbeat -------------------------------------------------------------------------------
@must("M-7.3-6", role="car")
def test_M_7_3_6_car_claims_settles_defends(car: CarBench, req: Req) -> None:
    frames = car.car_frames(0)
    req(frames and frames[0].pf == 0xEE, f"the car's first frame must be its Address Claimed, it was {first(frames)}")
    c0 = frames[0]
    req(0x00 <= c0.sa <= 0x0F, f"the car claimed 0x{c0.sa:02X}, a car's address is 0x00-0x0F")
    req(claim.name_of(c0.data) >> 63 == 0, f"the car's NAME 0x{claim.name_of(c0.data):016X} has bit 63 set (a car is not "
                                           "arbitrary address capable)")
    other = [f for f in frames if f.pf != 0xEE]
    req(other and other[0].t - c0.t >= 0.250 - 0.010, f"the car sent {first(other)} "
                                                      f"{1000 * (other[0].t - c0.t) if other else 0:.0f} ms after its claim: "
                                                      "the settle time is 250 ms")
    # a higher NAME claims the car's address: the car defends it
    fi = len(car.probe.frames)
    addr = car.car_address
    car.probe.send(claim.claim_id(addr), claim.name_bytes(car.car.name + 1))
    got = car.probe.wait(lambda: car.car_claims(fi), 0.5)
    req(got, f"a higher NAME claimed the car's address 0x{addr:02X}: the car must send its Address Claimed again")
    req(car.car_address == addr, "the car left its address to a higher NAME")


@must("M-7.6-1", role="node")
def test_M_7_6_1_car_heartbeat(car: CarBench, req: Req) -> None:
    time.sleep(max(0.0, car.started + 3.2 - time.time()))
    frames = car.car_frames(0)
    beats = [f for f in frames if f.pf == 0xDB]
    req(len(beats) >= 2, f"{len(beats)} HEARTBEAT(s) from the car in its first 3 s")
    for f in beats:
        req(f.can_id == 0x18DBFF00 | f.sa and len(f.data) == 8, f"a car HEARTBEAT not on 18DBFF<SA>, 8 bytes: {f}")
        n = f.data[0] & 0xF
        req(f.data[0] >> 4 == 0 and all(b == 0xCC for b in f.data[1 + n:]), f"a car HEARTBEAT not a padded single frame: {f}")
    c0 = car.car_claims()[0]
    d = beats[0].t - c0.t
    req(0.240 <= d <= 0.550, f"the car's first HEARTBEAT came {1000 * d:.0f} ms after its claim: as soon as it settled")
    gaps = [b.t - a.t for a, b in zip(beats, beats[1:])]
    med = statistics.median(gaps)
    req(0.999 <= med <= 1.100 and max(gaps) <= 1.6, f"car HEARTBEAT gaps {[round(g, 3) for g in gaps]}: every 1000 ms")


@must("M-2.3-3", role="node")
def test_M_2_3_3_car_heartbeat_not_early(car: CarBench, req: Req) -> None:
    beats = [f for f in car.car_frames(0) if f.pf == 0xDB]
    gaps = [b.t - a.t for a, b in zip(beats, beats[1:])]
    req(gaps, "no two car HEARTBEATs")
    bad = early([f.t for f in beats], 1.0, 0.015)
    req(statistics.median(gaps) >= 0.999 and not bad,
        f"car HEARTBEAT gaps {[round(g, 3) for g in gaps]}: never earlier than one period after the previous one")


@must("M-5.10-1", role="node")
def test_M_5_10_1_car_heartbeat_fields(car: CarBench, req: Req) -> None:
    for f in [f for f in car.car_frames(0) if f.pf == 0xDB]:
        v = decode(f.data[1:1 + (f.data[0] & 0xF)])
        req(isinstance(v, list) and len(v) >= 4 and v[0] == msg.HEARTBEAT, f"not a HEARTBEAT: {f}")
        for i, name, hi in ((1, "uptime", 65535), (2, "health", 3), (3, "mode", 3)):
            req(check_value("uint", v[i], 0, hi) is None, f"car HEARTBEAT {v}: {name} must be an unsigned integer 0..{hi}")


# --- HELLO first and again, re-subscription, tracking by NAME ----------------------------------------
def _after(car: CarBench, a: SuiteAccessory, fi: int) -> list[list[Any]]:
    return car.requests_to(a, fi)


@must("M-5.3-8", role="car")
def test_M_5_3_8_hello_first_and_whenever_the_session_may_be_lost(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    first_reqs = car.requests_to(a, 0)
    req(first_reqs and first_reqs[0][0] == msg.HELLO, f"the car's first request to a new accessory was {show(first(first_reqs))}, "
                                                      "it must be HELLO")
    # a restart (Address Claimed again at the address the car knows)
    fi = len(car.probe.frames)
    a.restart()
    ok = car.probe.wait(lambda: msg.HELLO in _types(_after(car, a, fi)), 4.0)
    reqs = _after(car, a, fi)
    req(ok and reqs[0][0] == msg.HELLO, f"after the accessory claimed its known address again (a restart), the car's "
                                         f"first request was {show(first(reqs))}: HELLO")
    car.probe.wait(lambda: msg.DESCRIBE in _types(_after(car, a, fi)), 3.0)
    req(msg.DESCRIBE in _types(_after(car, a, fi)), "after a restart the car must read DESCRIBE again")
    car.wait_ready(a)
    # its heartbeat uptime goes backwards (by far more than any rounding: 600 s, then 0 s)
    a.node._uptime_ms = 600_000
    time.sleep(1.2)  # a heartbeat with uptime 600 s goes out
    fi = len(car.probe.frames)
    a.reset_uptime()
    ok = car.probe.wait(lambda: msg.HELLO in _types(_after(car, a, fi)), 2.5)
    req(ok, f"after the accessory's heartbeat uptime went backwards the car sent {_types(_after(car, a, fi))}: HELLO")
    car.wait_ready(a)
    # offline (more than 3 s silent), then heard again
    o = car.cached("offline", lambda: offline_cycle(car))
    req(o["back"] and o["back"][0][0] == msg.HELLO, f"after the accessory was offline and heard again the car's first "
                                                    f"request was {show(first(o['back']))}: HELLO")


@must("M-6.6-4", role="car")
def test_M_6_6_4_resubscribes_after_a_lost_session(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    before = {(r[2], r[3]) for r in car.requests_to(a, 0) if r[0] == msg.SUBSCRIBE}
    req(before, "the car subscribed to nothing on the accessory (the check needs subscriptions)")
    fi = len(car.probe.frames)
    a.restart()
    car.probe.wait(lambda: {(r[2], r[3]) for r in _after(car, a, fi) if r[0] == msg.SUBSCRIBE} >= before, 5.0)
    after = {(r[2], r[3]) for r in _after(car, a, fi) if r[0] == msg.SUBSCRIBE}
    req(before <= after, f"after a restart the car re-subscribed {sorted(after)}, it had {sorted(before)}")
    car.wait_ready(a)


@must("M-7.3-7", role="car")
def test_M_7_3_7_tracks_accessories_by_name(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    old = a.address
    # a lower NAME takes its address: the accessory (arbitrary address capable) moves on
    car.probe.send(claim.claim_id(old), claim.name_bytes(a.name - 1))
    ok = car.probe.wait(lambda: a.address not in (old, claim.NULL) and a.link.claim.ready, 2.0)
    req(ok, "unreachable: the suite's accessory did not move")
    new = a.address
    time.sleep(0.2)
    ca = car.car_accessory(a)
    req(ca is not None and ca.address == new, f"the accessory moved from 0x{old:02X} to 0x{new:02X} (same NAME): the car "
                                              f"must follow it, it has it at {ca.address if ca else None}")
    req(len([x for x in car.car.accessories() if x.name == a.name]) == 1, "the car took the moved accessory for a new one")
    fi = len(car.probe.frames)
    v = _read(car, a, "temperature.value")
    req(v == 2150, f"a READ after the move answered {v!r}")
    to_new = car.requests_to(a, fi)
    to_old = [m for m in car.car_messages(old, fi) if isinstance(m.value, list) and m.value and msg.is_request(m.value[0])]
    req(to_new and not to_old, f"after the move the car sent requests to 0x{new:02X}: {to_new}, to the old 0x{old:02X}: "
                               f"{[m.value for m in to_old]}")


def offline_cycle(car: CarBench) -> dict[str, Any]:
    """A second accessory falls silent until the car marks it offline, then is heard again."""
    a = car.accessory(0x01B0B0, "suite2")
    ca = car.car_accessory(a)
    a.stop()
    last = max(f.t for f in car.probe.frames if f.sa == a.address and not f.own)
    t0 = time.time()
    while ca.online and time.time() < t0 + 5:
        time.sleep(0.01)
    out: dict[str, Any] = {"last": last, "offline_at": time.time() if not ca.online else None}
    fi = len(car.probe.frames)
    a.resume()
    car.probe.wait(lambda: car.requests_to(a, fi), 3.0)
    out["back"] = car.requests_to(a, fi)
    a.close()
    return out


@must("M-7.6-3", role="node")
def test_M_7_6_3_car_offline_after_3s_not_before(car: CarBench, req: Req) -> None:
    o = car.cached("offline", lambda: offline_cycle(car))
    req(o["offline_at"] is not None, "the car never marked a silent accessory offline (5 s)")
    d = o["offline_at"] - o["last"]
    req(d >= 3.0 - 0.005, f"the car marked the accessory offline {d:.3f} s after its last frame: not before 3000 ms")
    req(d <= 3.6, f"the car marked the accessory offline only {d:.3f} s after its last frame")


# --- what a car must ignore ----------------------------------------------------------------------------
def _odd_accessory(car: CarBench, identity: int, serial: str, patch: Any, encoder: Any = encode) -> SuiteAccessory:
    a = SuiteAccessory(car, identity, serial)
    a.describe_as(encoder(description_with(a.node, patch)))
    a.start()
    car.accessories.append(a)
    car.wait_ready(a)
    return a


@must("M-5.4-5", role="car")
def test_M_5_4_5_unknown_description_keys_ignored(car: CarBench, req: Req) -> None:
    def patch(d: dict[Any, Any]) -> None:
        d[99] = "a key of a later version"
        d["zz"] = [1, 2, 3]
        for e in d[msg.D_CAPS]:
            e[17] = {"x": 1}

    a = _odd_accessory(car, 0x01C0C0, "suite3", patch)
    req(_read(car, a, "temperature.value") == 2150, "with unknown keys in its description the car could not read "
                                                     "temperature.value")


@must("M-3.6-3", role="car")
def test_M_3_6_3_unknown_capability_ignored_slots_kept(car: CarBench, req: Req) -> None:
    def patch(d: dict[Any, Any]) -> None:
        caps = d[msg.D_CAPS]
        caps.insert(1, {msg.C_ID: 0xF0F0, msg.C_INSTANCE: 0, msg.C_ATTRS: [0, 1]})  # a vendor one, slot 1

    a = _odd_accessory(car, 0x01D0D0, "suite4", patch)
    # the accessory's own node still has temperature in slot 1: the car must READ slot 2 per the
    # description; the suite answers READ slot 2 with the temperature
    def hook(acc: SuiteAccessory, peer: int, t: int, tid: int, raw: bytes) -> bool:
        m = decode(raw)
        if t == msg.READ and m[2] == 2 and m[3] == 0:
            acc.send(peer, encode(msg.result(tid, msg.OK, 2150)))
            return True
        if t in (msg.READ, msg.SUBSCRIBE, msg.UNSUBSCRIBE, msg.WRITE) and m[2] >= 1:
            acc.send(peer, encode(msg.result(tid, msg.OK, [0, 60] if t == msg.SUBSCRIBE else None)))
            return True
        return False

    a.hook = hook
    fi = len(car.probe.frames)
    v = _read(car, a, "temperature.value")
    reads = [r for r in car.requests_to(a, fi) if r[0] == msg.READ]
    req(reads and reads[-1][2] == 2, f"temperature is in slot 2 after an unknown capability in slot 1; the car read "
                                     f"{reads}")
    req(v == 2150, f"the car read temperature.value as {v!r}")


@must("M-3.6-4", role="car")
def test_M_3_6_4_unknown_members_ignored(car: CarBench, req: Req) -> None:
    def patch(d: dict[Any, Any]) -> None:
        t = d[msg.D_CAPS][1]
        t[msg.C_ATTRS] = sorted(t[msg.C_ATTRS] + [20, 21])
        t[msg.C_EVENTS] = [7]
        d[msg.D_CAPS][0][msg.C_COMMANDS] = d[msg.D_CAPS][0][msg.C_COMMANDS] + [9]

    a = _odd_accessory(car, 0x01E0E0, "suite5", patch)
    ca = car.car_accessory(a)
    req(ca is not None and ca.ready, "the car did not bind an accessory whose known capability lists unknown members")
    req(_read(car, a, "temperature.value") == 2150, "reading temperature.value failed")


@must("M-5.2-4", role="car")
def test_M_5_2_4_result_with_unknown_tid_ignored(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    late: list[tuple[int, int]] = []

    def hook(acc: SuiteAccessory, peer: int, t: int, tid: int, raw: bytes) -> bool:
        if t == msg.READ and not late:
            late.append((peer, tid))  # no answer now: it comes after the car gave up
            return True
        return False

    a.hook = hook
    try:
        e = _fails(car, a, "temperature.value", 8.0)
        req(e is not None, "the car's READ succeeded without a RESULT")
        peer, tid = late[0]
        a.send(peer, encode(msg.result(tid, msg.OK, 9999)))  # the late RESULT
        for stray in (0xFFF0, 0xFFF1):
            a.send(peer, encode(msg.result(stray, msg.OK, 8888)))
        time.sleep(0.1)
        v = _read(car, a, "temperature.value")
        req(v == 2150, f"after a late and two stray RESULTs the car's READ gave {v!r} (it must ignore RESULTs that match no "
                       "outstanding request)")
    finally:
        a.hook = None


@must("M-5.8-2", role="car")
def test_M_5_8_2_reports_not_answered_unknown_ignored(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    peer = car.car_address
    fi = len(car.probe.frames)
    for m in ([msg.REPORT, TEMP_SLOT, 0, 2150], [msg.REPORT, 40, 0, 1], [msg.REPORT, TEMP_SLOT, 22, 5]):
        a.send(peer, encode(m))
    time.sleep(0.3)
    back = [m.value for m in car.car_messages(a.address, fi) if isinstance(m.value, list) and m.value
            and m.value[0] == msg.RESULT]
    req(not back, f"the car answered REPORTs: {back}")
    req(_read(car, a, "temperature.value") == 2150, "the car stopped working after REPORTs for unknown slots/attributes")


@must("M-5.9-1", role="car")
def test_M_5_9_1_events_not_answered_unknown_ignored(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    peer = car.car_address
    fi = len(car.probe.frames)
    for m in ([msg.EVENT, 40, 0, 1], [msg.EVENT, TEMP_SLOT, 9], [msg.EVENT, 0, 20, [1, 2]]):
        a.send(peer, encode(m), urgent=True)
    time.sleep(0.3)
    back = [m.value for m in car.car_messages(a.address, fi) if isinstance(m.value, list) and m.value
            and m.value[0] == msg.RESULT]
    req(not back, f"the car answered EVENTs: {back}")
    req(_read(car, a, "temperature.value") == 2150, "the car stopped working after EVENTs for unknown slots/events")


@must("M-5.11-3", role="car")
def test_M_5_11_3_unknown_status_is_a_failure(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None

    def hook(acc: SuiteAccessory, peer: int, t: int, tid: int, raw: bytes) -> bool:
        if t == msg.READ:
            acc.send(peer, encode([msg.RESULT, tid, 13, 4242]))
            return True
        return False

    a.hook = hook
    try:
        e = _fails(car, a, "temperature.value")
    finally:
        a.hook = None
    req(e is not None, "a RESULT with the unknown status 13 was taken as a success")
    req(getattr(e, "status", None) == 13 or "13" in str(e), f"the failure does not carry the status: {e!r}")


@must("M-7.4-9", role="car")
def test_M_7_4_9_car_receives_4095_bytes(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    big = encode(msg.result(0, msg.OK, "x" * 3990))

    def hook(acc: SuiteAccessory, peer: int, t: int, tid: int, raw: bytes) -> bool:
        if t == msg.READ:
            acc.send(peer, encode(msg.result(tid, msg.OK, "x" * 3990)))
            return True
        return False

    a.hook = hook
    fi = len(car.probe.frames)
    try:
        _fails(car, a, "temperature.value")
    finally:
        a.hook = None
    ff = [f for f in car.probe.frames[fi:] if f.sa == a.address and f.data and f.data[0] >> 4 == 1]
    req(ff, "unreachable: the suite's accessory did not send its long RESULT")
    fcs = [f for f in car.car_frames(fi) if f.pf == 0xDA and f.ta == a.address and f.data and f.data[0] >> 4 == 3]
    req(fcs and fcs[0].data[0] & 0xF == 0, f"a first frame announcing {len(big)} bytes got the car's FC "
                                            f"{fcs[0].data.hex(' ').upper() if fcs else 'none'}: a car's receive limit is 4095")


# --- decoding ------------------------------------------------------------------------------------------
def _non_canonical(d: Any) -> bytes:
    """The description encoded the way a sloppy sender might: integers in long form, map
    keys in reverse order, a float in an unknown key (all allowed input, spec 4.3)."""
    if isinstance(d, bool) or d is None:
        return cc.encode_any(d)
    if isinstance(d, int):
        return cc.uint(d, 4 if d < 1 << 32 else 8) if d >= 0 else cc.nint(d, 4)
    if isinstance(d, list):
        return cc.head(4, len(d), 2) + b"".join(_non_canonical(x) for x in d)
    if isinstance(d, dict):
        items = list(d.items())[::-1]
        return cc.head(5, len(items) + 1, 2) + cc.uint(250) + cc.half(2.5) + \
            b"".join(_non_canonical(k) + _non_canonical(v) for k, v in items)
    return cc.encode_any(d)


@must("M-4.3-3", role="car")
def test_M_4_3_3_car_accepts_long_form_integers(car: CarBench, req: Req) -> None:
    a = _odd_accessory(car, 0x01F0F0, "suite6", lambda d: None, _non_canonical)
    req(car.car_accessory(a).ready, "the car did not bind an accessory whose DESCRIBE uses long-form integers")
    req(_read(car, a, "temperature.value") == 2150, "reading failed")
    car.cached_odd = a  # type: ignore[attr-defined]


@must("M-4.3-4", role="car")
def test_M_4_3_4_car_accepts_unsorted_keys(car: CarBench, req: Req) -> None:
    a = getattr(car, "cached_odd", None) or _odd_accessory(car, 0x01F0F0, "suite6", lambda d: None, _non_canonical)
    d = car.car_accessory(a).description
    req(d is not None, "the car has no description for an accessory whose DESCRIBE has its keys in reverse order")


@must("M-4.3-2", role="car")
def test_M_4_3_2_car_accepts_floats(car: CarBench, req: Req) -> None:
    a = getattr(car, "cached_odd", None) or _odd_accessory(car, 0x01F0F0, "suite6", lambda d: None, _non_canonical)
    req(car.car_accessory(a).ready, "the car did not bind an accessory whose DESCRIBE carries a float in an unknown key")


@must("M-4.4-1", role="car")
def test_M_4_4_1_car_drops_undecodable_input(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None
    peer = car.car_address
    fi = len(car.probe.frames)
    for raw in (b"\xff", b"\x9f\x01\xff", b"\x84\x09\x01\x00\xf7", b"\x62\xc3\x28", b"\x84\x0a\x01\x00"):
        a.send(peer, raw)
    time.sleep(0.2)
    back = [m.value for m in car.car_messages(a.address, fi) if isinstance(m.value, list) and m.value
            and m.value[0] == msg.RESULT]
    req(not back, f"the car answered undecodable input: {back}")
    req(_read(car, a, "temperature.value") == 2150, "the car stopped working after undecodable input")


@must("M-5.1-2", role="node")
def test_M_5_1_2_car_ignores_trailing_elements(car: CarBench, req: Req) -> None:
    a = car.first
    assert a is not None

    def hook(acc: SuiteAccessory, peer: int, t: int, tid: int, raw: bytes) -> bool:
        if t == msg.READ:
            acc.send(peer, encode([msg.RESULT, tid, msg.OK, 2150, "trailing", {"x": 1}]))
            return True
        return False

    a.hook = hook
    try:
        v = _read(car, a, "temperature.value")
    finally:
        a.hook = None
    req(v == 2150, f"a RESULT with trailing elements gave {v!r}")


# --- what the car sends --------------------------------------------------------------------------------
def _all_car_messages(car: CarBench) -> list[Any]:
    return car.car_messages(None, 0)


def _car_rule(car: CarBench, req: Req, rule: str) -> None:
    ms = _all_car_messages(car)
    req(ms, "no message from the car")
    for m in ms:
        bad = [v for v in cc.check_encoding(m.raw) if v.rule == rule]
        req(not bad, f"the car sent {m.raw[:40].hex(' ').upper()}: {getattr(first(bad), 'what', '')}")


@must("M-4.2-1", role="node")
def test_M_4_2_1_car_shortest_form(car: CarBench, req: Req) -> None:
    _car_rule(car, req, cc.SHORTEST)


@must("M-4.2-2", role="node")
def test_M_4_2_2_car_definite_lengths(car: CarBench, req: Req) -> None:
    _car_rule(car, req, cc.DEFINITE)


@must("M-4.2-3", role="node")
def test_M_4_2_3_car_sorted_keys(car: CarBench, req: Req) -> None:
    _car_rule(car, req, cc.SORTED)


@must("M-4.2-4", role="node")
def test_M_4_2_4_car_key_types(car: CarBench, req: Req) -> None:
    _car_rule(car, req, cc.KEYS)


@must("M-4.2-5", role="node")
def test_M_4_2_5_car_no_floats_tags(car: CarBench, req: Req) -> None:
    _car_rule(car, req, cc.ITEMS)


@must("M-4.2-6", role="node")
def test_M_4_2_6_car_nesting(car: CarBench, req: Req) -> None:
    _car_rule(car, req, cc.DEPTH)
    for m in _all_car_messages(car):
        req(m.error is None, f"the car sent an undecodable message {m.raw[:40].hex(' ').upper()}")


@must("M-2.1-1", role="node")
def test_M_2_1_1_car_within_max_rx(car: CarBench, req: Req) -> None:
    for m in _all_car_messages(car):
        req(len(m.raw) <= 512, f"the car sent a {len(m.raw)}-byte message to an accessory whose D_MAX_RX is 512")


@must("M-9-1", role="node")
def test_M_9_1_car_sends_no_secured(car: CarBench, req: Req) -> None:
    for m in _all_car_messages(car):
        req(not (isinstance(m.value, list) and m.value and m.value[0] == msg.SECURED), f"the car sent SECURED {m.value}")


@must("M-7.1-2", role="node")
def test_M_7_1_2_car_classic_frames(car: CarBench, req: Req) -> None:
    for f in car.car_frames(0):
        req(f.ext and not f.rtr and len(f.data) <= 8, f"a car frame that is not a classic 29-bit data frame: {f}")


@must("M-7.4-1", role="node")
def test_M_7_4_1_car_framing(car: CarBench, req: Req) -> None:
    for f in car.car_frames(0):
        if f.pf in (0xDA, 0xDB) and f.data and f.data[0] >> 4 == 1:
            n = ((f.data[0] & 0xF) << 8) | f.data[1]
            req(n >= 8, f"the car sent a {n}-byte message as a first frame: {f}")


@must("M-7.4-2", role="node")
def test_M_7_4_2_car_padding(car: CarBench, req: Req) -> None:
    for f in car.car_frames(0):
        if f.pf in (0xDA, 0xDB):
            req(len(f.data) == 8, f"a car ISO-TP frame of {len(f.data)} bytes: {f}")
            k = f.data[0] >> 4
            used = {0: 1 + (f.data[0] & 0xF), 3: 3}.get(k)
            if used is not None:
                req(all(b == 0xCC for b in f.data[used:]), f"car padding other than 0xCC: {f}")


@must("M-7.5-1", role="node")
def test_M_7_5_1_car_priorities(car: CarBench, req: Req) -> None:
    for f in car.car_frames(0):
        req(f.prio == 6, f"a car frame on priority {f.prio} (a car sends no EVENT: everything on priority 6): {f}")


# --- BLE ------------------------------------------------------------------------------------------------
@must("M-8.2-3", role="car")
def test_M_8_2_3_car_finds_accessories_by_service_uuid(car: CarBench, req: Req) -> None:
    decoy = car.ble_accessory("CabinLink decoy", "C4:00:00:00:00:02", with_uuid=False)
    odd = car.ble_accessory("zz-9", "C4:00:00:00:00:01", flags=0xF8, extra=b"\x55\x66\x77")
    ok = car.probe.wait(lambda: odd.first("message"), 8.0)
    req(ok, "an accessory advertising the CabinLink service UUID (named 'zz-9', unknown flag bits 3-7 set, 3 bytes "
            "after the sixth of its service data) was not taken up by the car: it must go by the UUID and ignore what "
            "it does not know")
    time.sleep(0.5)
    req(decoy.first("connect") is None, "the car connected to an advertiser named 'CabinLink decoy' without the "
                                        "CabinLink service UUID: never by the name")


@must("M-8.3-2", role="car")
def test_M_8_3_2_car_enables_notifications_first(car: CarBench, req: Req) -> None:
    p = next((x for x in car.ble_peripherals if x.node is not None), None) or \
        car.ble_accessory("zz-8", "C4:00:00:00:00:03")
    car.probe.wait(lambda: p.first("write"), 8.0)
    w, c = p.first("write"), p.first("cccd")
    req(w is not None, "the car never wrote to RX")
    req(c is not None and c <= w, f"the car wrote its first request to RX {'before' if c is None else f'{1000 * (c - w):.0f} ms before'} "
                                  "it enabled notifications on TX")


# --- last: the car loses its address ---------------------------------------------------------------
@must("M-7.3-6", role="car")
def test_M_7_3_6_car_gives_way_with_cannot_claim(car: CarBench, req: Req) -> None:
    addr = car.car_address
    fi = len(car.probe.frames)
    t0 = time.time()
    car.probe.send(claim.claim_id(addr), claim.name_bytes(0))  # the lowest NAME there is
    cc_ = car.probe.wait(lambda: [f for f in car.probe.frames[fi:] if f.pf == 0xEE and f.sa == claim.NULL
                                  and len(f.data) >= 8 and claim.name_of(f.data) == car.car.name], 1.0)
    req(cc_, "a lower NAME took the car's address: the car (not arbitrary address capable) must send a Cannot Claim")
    own = [f for f in car.probe.frames[fi:] if f.own]
    d = cc_[0].t - (own[0].t if own else t0)
    req(-0.03 <= d <= 0.153 + 0.03, f"the Cannot Claim came {1000 * d:.0f} ms after the lost claim: 0-153 ms")
    time.sleep(1.2)
    after = [f for f in car.probe.frames[fi:] if not f.own and f.sa == addr and f.pf != 0xEE]
    req(not after, f"having lost its address the car still sent {after[0] if after else ''}: it stays silent")
