"""Requirements about everything the accessory sends, checked over the whole run: every
frame on the bus, every message to every session of the suite (CAN and BLE), every answer
to every request. These run last, when the log is complete."""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import pytest

from cabinlink import claim, msg
from cabinlink.codec import decode

from cabinlink_tools.conformance import cbor_check as cc
from cabinlink_tools.conformance.check import Req, early, first, must, show
from cabinlink_tools.conformance.model import check_value


def _messages(dut: Any) -> list[tuple[str, Any]]:
    """(session label, Message) for every message the accessory sent to the suite."""
    out = []
    for s in dut.all_sessions():
        for m in s.messages:
            out.append((s.label, m))
    return out


def _encoding_rule(dut: Any, req: Req, rule: str) -> None:
    msgs = _messages(dut)
    req(msgs, "no message from the accessory was observed")
    for label, m in msgs:
        bad = [v for v in cc.check_encoding(m.raw) if v.rule == rule]
        req(not bad, f"{label}: {getattr(first(bad), 'what', '')} at byte {getattr(first(bad), 'at', 0)} of {m.raw[:40].hex(' ').upper()}"
                     f"{'...' if len(m.raw) > 40 else ''} ({show(m.value)})")
    if dut.probe is not None:
        for f in dut.acc_frames(0, lambda f: f.pf == 0xDB and f.data and f.data[0] >> 4 == 0):
            n = f.data[0] & 0xF
            bad = [v for v in cc.check_encoding(f.data[1:1 + n]) if v.rule == rule]
            req(not bad, f"HEARTBEAT {f}: {bad[0].what if bad else ''}")


@must("M-4.2-1")
def test_M_4_2_1_shortest_form(dut: Any, req: Req) -> None:
    _encoding_rule(dut, req, cc.SHORTEST)


@must("M-4.2-2")
def test_M_4_2_2_definite_lengths(dut: Any, req: Req) -> None:
    _encoding_rule(dut, req, cc.DEFINITE)


@must("M-4.2-3")
def test_M_4_2_3_map_keys_sorted_unique(dut: Any, req: Req) -> None:
    _encoding_rule(dut, req, cc.SORTED)


@must("M-4.2-4")
def test_M_4_2_4_map_keys_int_or_text(dut: Any, req: Req) -> None:
    _encoding_rule(dut, req, cc.KEYS)


@must("M-4.2-5")
def test_M_4_2_5_no_floats_tags_undefined(dut: Any, req: Req) -> None:
    _encoding_rule(dut, req, cc.ITEMS)


@must("M-4.2-6")
def test_M_4_2_6_nesting_at_most_8(dut: Any, req: Req) -> None:
    _encoding_rule(dut, req, cc.DEPTH)
    for label, m in _messages(dut):
        req(m.error is None, f"{label}: the accessory sent an undecodable message {m.raw[:40].hex(' ').upper()}: {m.error}")


@must("M-2.1-1", role="node")
def test_M_2_1_1_messages_at_most_4095_bytes(dut: Any, req: Req) -> None:
    for label, m in _messages(dut):
        req(len(m.raw) <= 4095, f"{label}: a message of {len(m.raw)} bytes")
    if dut.probe is not None:
        for f in dut.acc_frames(0, lambda f: f.pf == 0xDA and f.data and f.data[0] >> 4 == 1):
            ln = ((f.data[0] & 0xF) << 8) | f.data[1]
            req(ln <= 4095, f"a first frame announcing {ln} bytes: {f}")


@must("M-5.2-1")
def test_M_5_2_1_one_result_per_request_to_its_sender(dut: Any, req: Req) -> None:
    total = 0
    for s in dut.all_sessions():
        pairs, left, stray = dut.pairs(s)
        if stray:
            near = [x for x in dut.sent_by(s) if x.t <= stray[0].t][-3:]
            req(False, f"{s.label} got RESULT(s) {[m.value[:3] for m in stray[:4]]} matching no request it sent "
                       "(or a second RESULT to one request): exactly one RESULT goes to the peer and transport the "
                       f"request came from (the requests before it: {[show(decode(x.raw), 40) for x in near]}; "
                       f"frames before it: {'; '.join(dut.frames_near(s, stray[0].t)[-24:])})")
        total += len(pairs)
        begun = dut.begun_results(s)  # answers the suite itself cut short (flow control withheld)
        lost = [x for x in left if x.tid not in s.unanswerable and x.tid not in begun
                and not any(a <= x.t <= b for a, b in dut.lossy)]  # a failed first attempt's
        # a request lost on the wire (a frame a receive buffer could not hold) is repeated by
        # the suite with a new tid, as a car does: those are the only ones left unanswered
        req(len(lost) <= len(s.retries), f"{s.label}: {len(lost)} request(s) never answered ({len(s.retries)} were "
                                         f"retried), e.g. {[show(decode(x.raw), 40) for x in lost[:3]]}")
    req(total > 50, f"only {total} request/RESULT pairs were observed")


def _pipelined(pairs: list[tuple[Any, Any]], left: Sequence[Any] = ()) -> set[int]:
    """Indices of requests sent while an earlier one of the same session was unanswered
    (one never answered counts as outstanding until the suite gave up on it, 1.2 s)."""
    busy = [(y.t, n.t, j) for j, (y, n) in enumerate(pairs)] + [(y.t, y.t + 1.2, -1) for y in left]
    out = set()
    for i, (x, m) in enumerate(pairs):
        if any(a < x.t < b for a, b, j in busy if j != i):
            out.add(i)
    return out


@must("M-5.2-2")
def test_M_5_2_2_result_within_1000ms(dut: Any, req: Req) -> None:
    worst = (0.0, "")
    lat = []
    for s in dut.all_sessions():
        pairs, left, _ = dut.pairs(s)
        pairs.sort(key=lambda p: p[0].t)
        skip = _pipelined(pairs, left)  # a car SHOULD keep one request outstanding (5.2); the suite
        for i, (x, m) in enumerate(pairs):  # pipelines only on purpose, and times those apart
            if i in skip:
                continue
            d = m.t - x.t
            lat.append(d)
            if d > worst[0]:
                worst = (d, f"{s.label} {show(decode(x.raw), 40)}")
    req(lat, "no request/RESULT pairs observed")
    req(worst[0] <= 1.0, f"a RESULT began {1000 * worst[0]:.0f} ms after its request ({worst[1]}): at most 1000 ms "
                         f"(median {1000 * statistics.median(lat):.1f} ms over {len(lat)})")


_VALUE_OK = {msg.HELLO, msg.DESCRIBE, msg.READ, msg.SUBSCRIBE}


@must("M-5.11-1")
def test_M_5_11_1_value_element_where_the_table_says(dut: Any, req: Req) -> None:
    d = dut.declaration
    for s in dut.all_sessions():
        pairs, _, _ = dut.pairs(s)
        for x, m in pairs:
            r = m.value
            try:
                q = decode(x.raw)
            except ValueError:
                continue
            st = r[2]
            req(isinstance(st, int) and 0 <= st <= 12, f"{s.label}: RESULT {show(r)} with status {st!r} (v0.1 defines 0-12)")
            has = len(r) > 3
            if st == msg.OK:
                t = q[0]
                if t in _VALUE_OK:
                    req(has, f"{s.label}: RESULT OK to {show(q)} without the value element: {show(r)}")
                elif t in (msg.WRITE, msg.UNSUBSCRIBE):
                    req(not has, f"{s.label}: RESULT OK to {show(q)} with a value element: {show(r)}")
                elif t == msg.INVOKE and len(q) > 3 and isinstance(q[2], int) and q[2] < len(d.caps):
                    spec = d.caps[q[2]].command(q[3]) if isinstance(q[3], int) else None
                    if spec is not None:
                        req(has == bool(spec.result), f"{s.label}: RESULT OK to INVOKE {spec.label} "
                                                      f"{'without' if spec.result else 'with'} a value element: {show(r)}")
            elif st == msg.VERSION_MISMATCH:
                req(has and isinstance(r[3], list) and len(r[3]) == 2, f"{s.label}: VERSION_MISMATCH without [major, minor]: {show(r)}")
            else:
                req(not has, f"{s.label}: RESULT status {st} to {show(q)} with a value element: {show(r)}")


@must("M-5.11-2")
def test_M_5_11_2_no_auth_required(dut: Any, req: Req) -> None:
    for label, m in _messages(dut):
        if m.is_result():
            req(m.value[2] != msg.AUTH_REQUIRED, f"{label}: RESULT AUTH_REQUIRED {show(m.value)}")


@must("M-9-1", role="node")
def test_M_9_1_no_secured_messages(dut: Any, req: Req) -> None:
    for label, m in _messages(dut):
        req(m.type != msg.SECURED, f"{label}: the accessory sent a SECURED message {show(m.value)}")


@must("M-5.8-1")
def test_M_5_8_1_reports_only_for_subscriptions(dut: Any, req: Req) -> None:
    for s in dut.all_sessions():
        pairs, left, _ = dut.pairs(s)
        granted: dict[tuple[Any, Any], float] = {}
        # a SUBSCRIBE whose RESULT never arrived (the suite repeated it) may have been
        # granted all the same: from the moment it was sent
        for x, t in [(x, m.t) for x, m in pairs if m.value[2] == msg.OK] + [(x, x.t) for x in left]:
            try:
                q = decode(x.raw)
            except ValueError:
                continue
            if q[0] == msg.SUBSCRIBE and len(q) > 3:
                k = (q[2], q[3])
                granted[k] = min(granted.get(k, t), t)
        for m in s.messages:
            if m.type == msg.REPORT and len(m.value) >= 3:
                key = (m.value[1], m.value[2])
                req(key in granted, f"{s.label}: a REPORT of slot {key[0]} attribute {key[1]} it never subscribed to")
                req(m.t >= granted[key] - 0.002, f"{s.label}: a REPORT of slot {key[0]} attribute {key[1]} before its "
                                                 "first subscription was granted")


@must("M-3.3-2")
def test_M_3_3_2_values_in_type_and_range(dut: Any, req: Req) -> None:
    d = dut.declaration
    n = 0
    # every value the accessory gave: RESULTs of READs, REPORTs, over the whole run
    for s in dut.all_sessions():
        pairs, _, _ = dut.pairs(s)
        for x, m in pairs:
            try:
                q = decode(x.raw)
            except ValueError:
                continue
            if q[0] == msg.READ and m.value[2] == msg.OK and len(m.value) > 3 and len(q) > 3 \
                    and isinstance(q[2], int) and q[2] < len(d.caps):
                a = d.caps[q[2]].attr(q[3]) if isinstance(q[3], int) else None
                if a is not None:
                    why = a.check(m.value[3])
                    req(why is None, f"{s.label}: {a.label} read {show(m.value[3])}: {why}")
                    n += 1
        for m in s.messages:
            if m.type == msg.REPORT and len(m.value) >= 4 and isinstance(m.value[1], int) and m.value[1] < len(d.caps):
                a = d.caps[m.value[1]].attr(m.value[2])
                if a is not None:
                    why = a.check(m.value[3])
                    req(why is None, f"{s.label}: REPORT of {a.label} = {show(m.value[3])}: {why}")
                    n += 1
    req(n > 20, f"only {n} values were observed")


@must("M-5.10-1", role="node")
def test_M_5_10_1_heartbeat_fields(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("HEARTBEAT is a CAN message (8.7)")
    beats = dut.acc_frames(0, lambda f: f.pf == 0xDB)
    req(beats, "no HEARTBEAT from the accessory")
    for f in beats:
        n = f.data[0] & 0xF if f.data else 0
        req(0 < n <= 7 and f.data[0] >> 4 == 0, f"a HEARTBEAT that is not a single frame of at most 7 bytes: {f}")
        try:
            v = decode(f.data[1:1 + n])
        except ValueError as e:
            req(False, f"an undecodable HEARTBEAT {f}: {e}")
        req(isinstance(v, list) and len(v) >= 4 and v[0] == msg.HEARTBEAT, f"not a HEARTBEAT [1, uptime, health, mode]: {f}")
        for i, name, hi in ((1, "uptime", 65535), (2, "health", 3), (3, "mode", 3)):
            req(check_value("uint", v[i], 0, hi) is None, f"HEARTBEAT {show(v)}: {name} must be an unsigned integer 0..{hi}")


@must("M-7.6-1", role="node")
def test_M_7_6_1_heartbeat_every_second(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    beats = dut.acc_frames(0, lambda f: f.pf == 0xDB)
    req(len(beats) >= 3, f"only {len(beats)} HEARTBEATs in the whole run")
    for f in beats:
        req(f.can_id == 0x18DBFF00 | f.sa, f"a HEARTBEAT on {f.can_id:08X}, not 18DBFF<SA>")
        req(len(f.data) == 8 and all(b == 0xCC for b in f.data[1 + (f.data[0] & 0xF):]),
            f"a HEARTBEAT not padded to 8 bytes with 0xCC: {f}")
    # as soon as the claim settled: every boot and every new address the suite watched
    for start in dut.boot_marks:
        claims = dut.claims(start)
        if claims:
            first = [f for f in beats if f.t > claims[0].t]
            if first:
                d = first[0].t - claims[0].t
                req(d <= 0.250 + 0.3, f"the first HEARTBEAT came {1000 * d:.0f} ms after the claim: as soon as it settles (250 ms)")
    gaps = _hb_gaps(dut, beats)
    req(gaps, "no two consecutive HEARTBEATs from the same address")
    med = statistics.median(gaps)
    req(0.990 <= med <= 1.100, f"HEARTBEATs {1000 * med:.0f} ms apart (median of {len(gaps)}): every 1000 ms")
    req(max(gaps) <= 2.5, f"{1000 * max(gaps):.0f} ms without a HEARTBEAT (every 1000 ms)")


def _hb_gap_pairs(dut: Any, beats: list[Any]) -> list[tuple[Any, Any]]:
    """Gaps between consecutive heartbeats of one address, leaving out the stretches where
    the suite itself took the accessory off the bus (address moves, bus-off, restarts,
    unable to claim): any claim from it between two heartbeats."""
    claims = dut.claims(0)
    out = []
    for a, b in zip(beats, beats[1:]):
        if a.sa != b.sa or any(a.t < c.t < b.t for c in claims) or any(
                a.t < f.t < b.t for f in dut.probe.frames if f.sa == claim.NULL):
            continue
        out.append((a, b))
    return out


def _hb_gaps(dut: Any, beats: list[Any]) -> list[float]:
    return [b.t - a.t for a, b in _hb_gap_pairs(dut, beats)]


@must("M-2.3-3", role="node")
def test_M_2_3_3_period_not_early(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link (HEARTBEAT)")
    gaps = _hb_gaps(dut, dut.acc_frames(0, lambda f: f.pf == 0xDB))
    req(gaps, "no two consecutive HEARTBEATs observed")
    # The suite sees when a HEARTBEAT crossed the bus, not when the node handed it to its
    # controller: one that waited (for the bus; in the simulation, for a busy host) makes the
    # next gap look shorter (check.early). So the median must not be early, and no gap may
    # be short but for such a wait.
    med = statistics.median(gaps)
    req(med >= 1.0 - 0.001, f"HEARTBEATs {1000 * med:.1f} ms apart (median of {len(gaps)}): never earlier than one "
                            "period (1000 ms) after the previous one")
    beats = dut.acc_frames(0, lambda f: f.pf == 0xDB)
    runs = _runs(dut, beats)
    for run in runs:
        bad = early([f.t for f in run], 1.0, 0.015)
        req(not bad, f"two HEARTBEATs {1000 * bad[0][1]:.1f} ms apart ({run[bad[0][0] - 1]} and {run[bad[0][0]]}), "
                     "the one before on time: never earlier than one period (1000 ms) after the previous one"
            if bad else "")


def _runs(dut: Any, beats: list[Any]) -> list[list[Any]]:
    """Heartbeats cut into runs at every claim or Cannot Claim of the accessory (a new
    address, a restart, bus-off recovery: the period starts over)."""
    cuts = sorted(f.t for f in dut.claims(0))
    runs: list[list[Any]] = [[]]
    for f in beats:
        if runs[-1] and (runs[-1][-1].sa != f.sa or any(runs[-1][-1].t < c < f.t for c in cuts)):
            runs.append([])
        runs[-1].append(f)
    return [r for r in runs if len(r) > 1]


@must("M-7.1-2", role="node")
def test_M_7_1_2_classic_29_bit_data_frames(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    fs = dut.acc_frames(0)
    req(fs, "no frame from the accessory")
    for f in fs:
        req(f.ext, f"an 11-bit frame from the accessory: {f}")
        req(not f.rtr, f"a remote frame from the accessory: {f}")
        req(len(f.data) <= 8, f"a frame with more than 8 data bytes: {f}")


@must("M-7.4-1", role="node")
def test_M_7_4_1_single_or_first_frame_by_length(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    for f in dut.acc_frames(0, lambda f: f.pf in (0xDA, 0xDB)):
        k = f.data[0] >> 4 if f.data else -1
        if k == 0:
            req(1 <= f.data[0] & 0xF <= 7, f"a single frame with SF_DL {f.data[0] & 0xF}: {f}")
        elif k == 1:
            ln = ((f.data[0] & 0xF) << 8) | f.data[1]
            req(ln >= 8, f"a message of {ln} bytes sent as a first frame (1-7 bytes go as a single frame): {f}")


@must("M-7.4-2", role="node")
def test_M_7_4_2_padding(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    for f in dut.acc_frames(0, lambda f: f.pf in (0xDA, 0xDB)):
        req(len(f.data) == 8, f"an ISO-TP frame of {len(f.data)} bytes (SF, CF and FC are padded, FF fills 8): {f}")
        k = f.data[0] >> 4
        used = {0: 1 + (f.data[0] & 0xF), 3: 3}.get(k)
        if k == 2:
            continue  # the payload of a CF ends where the message ends: checked below
        if used is not None:
            req(all(b == 0xCC for b in f.data[used:]), f"padding other than 0xCC: {f}")
    # the last CF of each multi-frame message: padding after the message's end
    for s in dut.all_sessions():
        if s.transport != "can":
            continue
        for m in s.messages:
            if len(m.raw) >= 8:
                rest = (len(m.raw) - 6) % 7
                if rest:
                    cfs = [f for f in dut.probe.frames if not f.own and f.ta == s.peer.sa and f.pf == 0xDA
                           and m.t <= f.t <= m.t_end and f.data[0] >> 4 == 2]
                    if cfs:
                        last = cfs[-1]
                        req(all(b == 0xCC for b in last.data[1 + rest:]), f"last CF not padded with 0xCC: {last}")


@must("M-7.5-1", role="node")
def test_M_7_5_1_events_priority_3_others_6(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    events = 0
    for s in dut.all_sessions():
        if s.transport != "can":
            continue
        for m in s.messages:
            if m.type == msg.EVENT:
                events += 1
                req(m.prio == 3, f"{s.label}: an EVENT on priority {m.prio}: {show(m.value)}")
            elif m.prio is not None:
                req(m.prio == 6, f"{s.label}: a {show(m.value, 30)} on priority {m.prio}; only EVENTs use priority 3")
    for f in dut.acc_frames(0, lambda f: f.pf in (0xEE, 0xEA, 0xDB)):
        req(f.prio == 6, f"an Address Claimed/Request/HEARTBEAT frame on priority {f.prio}: {f}")
    if not events:
        dut.notes.append("M-7.5-1: no EVENT was observed; only the priority of the other messages was checked")


@must("M-8.7-1")
def test_M_8_7_1_never_heartbeat_on_ble(dut: Any, req: Req) -> None:
    if not dut.target.has_ble:
        pytest.skip("the target has no BLE link")
    ble = [m for s in dut.ble_sessions for m in s.messages]
    req(ble, "no BLE traffic observed")
    beats = [m for m in ble if m.type == msg.HEARTBEAT]
    req(not beats, f"{len(beats)} HEARTBEAT message(s) over BLE")
