"""The message counters (5.1: device_info 10 rx_malformed, 11 rx_dropped): undecodable
messages (4.4-3), the reaction table (5.1-1), SECURED messages (9-2), frames that are no
CabinLink messages (7.1-3).

The accessory refreshes its counters at its own pace (the reference node once a second, with
uptime_s), so every check waits for a refresh after its inputs: about a second each. On CAN
these checks run as one background scenario on the main session while the suite goes on with
tests that send nothing the counters count (encodings, 7.1/7.2, BLE, ISO-TP, the timing
verdicts); the tests here give its verdicts. Each check is bracketed by two refreshes
and is the only one sending counted input in between; one that failed is played once more
(a frame lost on the way looks like a miscount) and the second attempt decides.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cabinlink import claim, isotp, msg
from cabinlink import registry as reg
from cabinlink.codec import decode

from cabinlink_tools.catalog import status_name
from cabinlink_tools.conformance.cbor_check import Raw, array, bstr, cmap, nint, text, uint
from cabinlink_tools.conformance.check import Req, RequirementFailed, must, show
from cabinlink_tools.conformance.tests.test_can import _ignored, _read_sf
from cabinlink_tools.conformance.tests.test_malformed import _check_drops

def _undecodable(dut: Any, req: Req) -> None:
    cases = [("truncated", bytes.fromhex("8502197F010001"), 0x7F01), ("trailing byte", bytes.fromhex("8402197F02000100"), 0x7F02),
             ("tag", bytes.fromhex("8502197F030001C100"), 0x7F03), ("bad utf-8", bytes.fromhex("8502197F04000162C328"), 0x7F04)]
    before = dut.counters_exact()[reg.ATTR_DEVICE_INFO_RX_MALFORMED]
    for case in cases:  # one at a time: each taken in before the next (the count must be exact)
        _check_drops(dut, req, [case])
    after = dut.counters_exact()[reg.ATTR_DEVICE_INFO_RX_MALFORMED]
    req(after == before + len(cases), f"{len(cases)} undecodable messages must add {len(cases)} to "
                                      f"device_info.rx_malformed, it went {before} -> {after}")


def _element1(raw: bytes) -> Any:
    """Element 1 of a bad input, where it decodes to an array with one: the tid an accessory
    that wrongly answered it would most likely use."""
    try:
        v = decode(raw)
    except ValueError:
        return None
    return v[1] if isinstance(v, list) and len(v) > 1 and isinstance(v[1], int) else None


def _reaction_table(dut: Any, req: Req) -> None:
    s = dut.session()
    info = dut.info_slot()
    c0 = dut.counters_exact()
    mal0, drop0 = c0[reg.ATTR_DEVICE_INFO_RX_MALFORMED], c0[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    malformed = dropped = 0
    repeats0 = len(s.retries)

    def silent(case: str, raw: bytes) -> None:
        # each one followed by a good READ: the accessory has taken the input in before the
        # next one comes (the counters must count every one), and RESULTs come in request
        # order (5.2), so an answer to it would have come before the READ's
        mark = s.mark()
        lo = s.next_tid()
        s.send(raw)
        r = s.ask(msg.read, info, reg.ATTR_DEVICE_INFO_HEALTH)
        req(r[2] == msg.OK, f"case {case}: the accessory stopped answering")
        # the RESULTs of requests the suite sent meanwhile on this session (other tests, a
        # background scenario: their tids come from the same counter, recently) aside; the
        # bad inputs carry tid 1 or none
        ours = set(range(lo - 64, r[1] + 1)) - {_element1(raw)}
        got = [m.value for m in s.since(mark) if m.is_result() and m.value[1] not in ours]
        req(not got, f"case {case}: {raw.hex(' ').upper()} must get no answer, got {show(got)}")

    # 1: CBOR decoding fails
    silent("1 (not CBOR)", b"\xff\x00")
    malformed += 1
    # 2: not an array, empty, element 0 not a uint 1..63
    for raw in (uint(5), text("hello"), array(), array(uint(0), uint(1)), array(uint(64), uint(1)),
                array(nint(-1), uint(1)), array(text("x"), uint(1)), array(b"\xf5", uint(1)), cmap((uint(0), uint(2)))):
        silent("2 (not a message)", raw)
        malformed += 1
    # 3: a request without a usable tid
    for raw in (array(uint(msg.READ)), array(uint(msg.READ), text("t"), uint(0), uint(0)),
                array(uint(msg.HELLO), uint(65536), uint(0), uint(1)), array(uint(msg.HELLO), nint(-1), uint(0), uint(1)),
                array(uint(20), b"\xf6")):
        silent("3 (no tid)", raw)
        malformed += 1
    # 5: reserved types, future notices, types a car never sends to an accessory
    for t in (12, 13, 14, 15, 32, 50, 63, msg.RESULT, msg.REPORT, msg.EVENT):
        silent(f"5 (type {t})", array(uint(t), uint(1), uint(0), uint(0)))
        dropped += 1
    # a HEARTBEAT is processed by 7.6, not counted
    silent("5 (HEARTBEAT)", array(uint(msg.HEARTBEAT), uint(1), uint(0), uint(0)))

    # 4: future requests
    for t in (16, 24, 31):
        tid = s.next_tid()
        r = s.request(Raw(array(uint(t), uint(tid), text("x"))), tid)
        req(r is not None and r[2] == msg.UNSUPPORTED and len(r) == 3,
            f"case 4: a future request of type {t} must get RESULT UNSUPPORTED without a value, got {show(r)}")
    # 6: a v0.1 request with an element missing, of the wrong type or out of bounds
    bad6 = [array(uint(msg.HELLO), uint(0)), array(uint(msg.HELLO), uint(0), uint(0)), array(uint(msg.HELLO), uint(0), text("0"), uint(1)),
            array(uint(msg.HELLO), uint(0), uint(0), uint(65536)), array(uint(msg.READ), uint(0), uint(info)),
            array(uint(msg.READ), uint(0), text("0"), uint(0)), array(uint(msg.READ), uint(0), uint(info), nint(-1)),
            array(uint(msg.READ), uint(0), uint(65536), uint(0)), array(uint(msg.WRITE), uint(0), uint(info), b"\xf5", uint(1)),
            array(uint(msg.SUBSCRIBE), uint(0), uint(info), uint(reg.ATTR_DEVICE_INFO_HEALTH), uint(0)),
            array(uint(msg.UNSUBSCRIBE), uint(0), uint(info)), array(uint(msg.INVOKE), uint(0), uint(info))]
    for raw in bad6:
        tid = s.next_tid()
        raw = raw[:2] + uint(tid) + raw[3:]  # the tid element (one byte 0x00) replaced by a fresh tid
        r = s.request(Raw(raw), tid)
        req(r is not None and r[2] == msg.MALFORMED and len(r) == 3,
            f"case 6: {raw.hex(' ').upper()} must get RESULT MALFORMED without a value, got {show(r)} "
            f"({status_name(r[2]) if r else 'no answer'})")
        malformed += 1
    # 7: a good request is processed
    req.status(s.ask(msg.read, info, reg.ATTR_DEVICE_INFO_VENDOR), msg.OK, "case 7: a well-formed READ")
    c1 = dut.counters_exact()
    mal1, drop1 = c1[reg.ATTR_DEVICE_INFO_RX_MALFORMED], c1[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    # a case-6 request sent twice (its RESULT lost on the way) was counted twice
    again = len(s.retries) - repeats0
    req(mal0 + malformed <= mal1 <= mal0 + malformed + again,
        f"cases 1, 2, 3 and 6 were sent {malformed} times: rx_malformed went {mal0} -> {mal1} (+{mal1 - mal0})")
    req(drop1 == drop0 + dropped, f"case 5 was sent {dropped} times (HEARTBEAT not counted): rx_dropped went "
                                  f"{drop0} -> {drop1} (+{drop1 - drop0})")


def _secured(dut: Any, req: Req) -> None:
    s = dut.session()
    before = dut.counters_exact()[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    inner_tid = s.next_tid()
    inner = bytes(Raw(array(uint(msg.HELLO), uint(inner_tid), uint(0), uint(1))))
    mark = s.mark()
    n = 3
    for k in range(n):
        s.send(Raw(array(uint(msg.SECURED), uint(1), uint(42 + k), bstr(inner), bstr(b"\0\0\0\0"))))
        probe = s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH)  # taken in before the next
        req(probe[2] == msg.OK, "the accessory stopped answering after a SECURED message")
    got = [m.value for m in s.since(mark) if m.is_result(inner_tid)]
    req(not got, f"the inner HELLO of a SECURED message was processed: {show(got)}")
    after = dut.counters_exact()[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    req(after == before + n, f"{n} SECURED messages must add {n} to rx_dropped, it went {before} -> {after}")


def _frames_to_ignore(d: Any, req: Req) -> None:
    if d.probe is None:
        pytest.skip("needs the CAN link")
    s = d.session()
    sa = s.peer.sa
    c0 = d.counters_exact()
    mal0, drop0 = c0[reg.ATTR_DEVICE_INFO_RX_MALFORMED], c0[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    cases = []
    tid = s.next_tid()
    fi = len(d.probe.frames)
    # an 11-bit frame carrying a READ single frame, with the accessory's address in its id
    d.probe.send(d.addr, _read_sf(d, tid), ext=False)
    d.probe.send(0x7FF & isotp.phys_id(6, d.addr, sa), _read_sf(d, tid), ext=False)
    cases.append(("11-bit frames", tid, fi))
    tid = s.next_tid()
    fi = len(d.probe.frames)
    d.probe.send(isotp.phys_id(6, d.addr, sa), bytes(8), rtr=True)  # a remote frame on the physical id
    d.probe.send(claim.request_id(claim.GLOBAL, sa), bytes(3), rtr=True)
    cases.append(("remote frames", tid, fi))
    # 29-bit frames of other users of a shared bus: ignored, not counted
    for can_id in (0x18F00400 | 0x10, 0x0CFE6C17, 0x18FF0000 | d.addr):
        d.probe.send(can_id, bytes(range(8)))
    for what, t, fi in cases:
        req(_ignored(d, t, fi), f"the accessory answered {what}")
    req.status(s.ask(msg.hello), msg.OK, "HELLO after the frames to ignore")
    c1 = d.counters_exact()
    mal1, drop1 = c1[reg.ATTR_DEVICE_INFO_RX_MALFORMED], c1[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    req(mal1 == mal0 and drop1 == drop0, f"frames that are no CabinLink messages changed the message counters "
                                         f"(rx_malformed {mal0} -> {mal1}, rx_dropped {drop0} -> {drop1})")


CHECKS: list[tuple[str, Callable[[Any, Req], None]]] = [
    ("M-4.4-3", _undecodable), ("M-5.1-1", _reaction_table), ("M-9-2", _secured), ("M-7.1-3", _frames_to_ignore)]


@dataclass
class Counted:
    """The outcome of each check: None (passed), the exception it raised (a failure or a
    skip), and the requirements that needed a second attempt."""

    outcome: dict[str, BaseException | None] = field(default_factory=dict)
    again: list[str] = field(default_factory=list)


def counting(dut: Any, background: bool) -> Counted:
    """Every check in turn; in the background on the main session, next to the tests that
    use it meanwhile (their requests go in between; the counters count none of them)."""
    out = Counted()
    if background:
        dut.own_session(dut.session())
    try:
        for rid, check in CHECKS:
            for k in range(2):
                try:
                    check(dut, Req(rid))
                    out.outcome[rid] = None
                    break
                except (RequirementFailed, AssertionError) as e:
                    out.outcome[rid] = e
                    if k == 0:
                        out.again.append(rid)
                except BaseException as e:  # noqa: BLE001 - a skip, or an error the verdict reports
                    out.outcome[rid] = e
                    break
    finally:
        if background:
            dut.own_session(None)
    for rid in out.again:
        if out.outcome.get(rid) is None:
            dut.notes.append(f"{rid} passed on its second attempt (the counter checks, 5.1)")
    return out


def start_counting(dut: Any) -> None:
    """Start the background scenario (CAN targets; the plugin calls this once the tests that
    send counted input before it are done)."""
    if dut.probe is not None and "counting" not in dut.backgrounds:
        dut.background("counting", lambda: dut.cached("counting", lambda: counting(dut, True)))


def _verdict(dut: Any, rid: str) -> None:
    c = dut.cached("counting", lambda: counting(dut, False))  # waits for the background run if it began
    e = c.outcome.get(rid)
    if e is not None:
        raise e


@must("M-4.4-3")
def test_M_4_4_3_undecodable_dropped_and_counted(dut: Any, req: Req) -> None:
    _verdict(dut, "M-4.4-3")


@must("M-5.1-1")
def test_M_5_1_1_reaction_table(dut: Any, req: Req) -> None:
    _verdict(dut, "M-5.1-1")


@must("M-9-2")
def test_M_9_2_secured_ignored_and_counted(dut: Any, req: Req) -> None:
    _verdict(dut, "M-9-2")


@must("M-7.1-3")
def test_M_7_1_3_11_bit_and_remote_frames_ignored(dut: Any, req: Req) -> None:
    _verdict(dut, "M-7.1-3")
