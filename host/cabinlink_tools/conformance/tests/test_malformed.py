"""Section 4.4 (rejected input) and 5.1 (the reaction table). Each bad message is followed by
a good request from the same car: RESULTs come in request order (5.2), so by the time the
good one is answered, an answer to the bad one would have come."""
from __future__ import annotations

import json
from typing import Any

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.catalog import status_name
from cabinlink_tools.conformance.cbor_check import Raw, array, bstr, cmap, head, nint, text, uint
from cabinlink_tools.conformance.check import Req, must, show
from cabinlink_tools.conformance.spec import SPEC

VECTORS = SPEC.parents[1] / "spec" / "vectors" / "cbor.json"


BAD_TID = 0xF100  # the tids of the bad inputs: the suite's sessions never reach them


def _bad_inputs() -> list[tuple[str, bytes, int]]:
    """Every rejected case of spec 4.4 as a whole message: the bad item as a trailing element
    of a HELLO (so a decoder that skipped it would answer), or the message itself; each with
    a tid of its own (name, bytes, tid)."""
    cases: list[tuple[str, bytes, int]] = []

    def add(name: str, bad: bytes, prefix: bytes = b"") -> None:
        tid = BAD_TID + len(cases)
        hello = array(uint(2), uint(tid), uint(0), uint(1)).replace(b"\x84", b"\x85", 1)
        cases.append((name, hello + bad + prefix, tid))

    if VECTORS.exists():
        for v in json.loads(VECTORS.read_text())["invalid"]:
            raw = bytes.fromhex(v["hex"])
            if not raw:
                continue  # an empty message cannot be framed (ISO-TP SF_DL 0, BLE length 0)
            if v["name"] == "trailing bytes":
                add(v["name"], uint(1), b"\x02")
            elif v["name"].startswith("nesting"):
                add(v["name"], raw[1:] if raw[0] == 0x81 else raw)
            else:
                add(v["name"], raw)
    for name, raw in (("tag around a value", b"\xc1\x1a\x00\x00\x00\x00"), ("indefinite map", b"\xbf\x01\x02\xff"),
                      ("indefinite text", b"\x7f\x61\x61\xff"), ("simple value 24 form", b"\xf8\x20"),
                      ("byte string longer than the message", b"\x58\x40x"), ("map key an array", cmap((array(), uint(1)))),
                      ("map key a float", b"\xa1\xf9\x3c\x00\x01")):
        add(name, raw)
    return cases


def _check_drops(dut: Any, req: Req, cases: list[tuple[str, bytes, int]]) -> None:
    """Every bad input sent, then one good READ: RESULTs come in request order (5.2), so by
    its answer any answer to a bad one would have come."""
    s = dut.session()
    mark = s.mark()
    for name, raw, tid in cases:
        s.send(raw)
    r = s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_VENDOR)
    req(r[2] == msg.OK, f"after the rejected inputs the accessory answered a good READ with {show(r)}")
    tids = {tid: (name, raw) for name, raw, tid in cases}
    bad = [m.value for m in s.since(mark) if m.is_result() and m.value[1] in tids]
    name, raw = tids[bad[0][1]] if bad else ("", b"")
    req(not bad, f"the rejected input '{name}' ({raw.hex(' ').upper()}) was answered {show(bad[:1])}: it must be "
                 "dropped with no RESULT (no tid in it can be trusted)")


@must("M-4.4-1")
def test_M_4_4_1_invalid_cbor_rejected_as_a_whole(dut: Any, req: Req) -> None:
    _check_drops(dut, req, _bad_inputs())


@must("M-4.4-2")
def test_M_4_4_2_huge_declared_lengths_do_not_allocate(dut: Any, req: Req) -> None:
    s = dut.session()
    info = dut.info_slot()
    boots = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_BOOT_COUNT)
    up0 = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_UPTIME_S)
    huge = [("byte string of 2^64-1 bytes", b"\x5b" + b"\xff" * 8 + b"\x00"),
            ("text of 2^32-1 bytes", b"\x7a\xff\xff\xff\xff\x00"),
            ("array of 2^63 items", b"\x9b\x80" + b"\x00" * 7 + b"\x00"),
            ("map of 2^32-1 pairs", b"\xba\xff\xff\xff\xff\x00\x00"),
            ("array of 65535 items", b"\x99\xff\xff\x00")]
    for name, item in huge:
        for m in (Raw(item), Raw(array(uint(2), uint(9), uint(0), uint(1)).replace(b"\x84", b"\x85", 1) + item)):
            s.send(m)
            r = s.ask(msg.read, info, reg.ATTR_DEVICE_INFO_VENDOR)
            req(r[2] == msg.OK, f"the accessory stopped answering after a {name}")
    req(s.value(msg.read, info, reg.ATTR_DEVICE_INFO_BOOT_COUNT) == boots,
        "the accessory restarted after inputs that declare huge lengths (it must check them before allocating)")
    up1 = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_UPTIME_S)
    req(up1 >= up0, f"the accessory restarted (uptime {up0} -> {up1}) after inputs that declare huge lengths")


@must("M-5.1-2")
def test_M_5_1_2_trailing_elements_ignored(dut: Any, req: Req) -> None:
    s = dut.session()
    tid = s.next_tid()
    r = s.request(Raw(array(uint(2), uint(tid), uint(0), uint(1), cmap((text("x"), uint(1))))), tid)
    req(r is not None and r[2] == msg.OK, f"the spec's example HELLO [2, 13, 0, 1, {{\"x\": 1}}] answered {show(r)}")
    info = dut.info_slot()
    for extra in ([1], ["x", b"y", None, [1, 2], {"a": 1}],):
        tid = s.next_tid()
        r = s.request([msg.READ, tid, info, reg.ATTR_DEVICE_INFO_VENDOR] + extra, tid)
        want = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_VENDOR)
        req(r is not None and r[2] == msg.OK and r[3] == want, f"READ with trailing elements {show(extra)} answered {show(r)}")
    tid = s.next_tid()
    r = s.request([msg.SUBSCRIBE, tid, info, reg.ATTR_DEVICE_INFO_HEALTH, 0, 60, None, "x", 5], tid)
    req(r is not None and r[2] == msg.OK, f"SUBSCRIBE with trailing elements answered {show(r)}")
    s.ask(msg.unsubscribe, info, reg.ATTR_DEVICE_INFO_HEALTH)


@must("M-4.4-3")
def test_M_4_4_3_undecodable_dropped_and_counted(dut: Any, req: Req) -> None:
    cases = [("truncated", bytes.fromhex("8502197F010001"), 0x7F01), ("trailing byte", bytes.fromhex("8402197F02000100"), 0x7F02),
             ("tag", bytes.fromhex("8502197F030001C100"), 0x7F03), ("bad utf-8", bytes.fromhex("8502197F04000162C328"), 0x7F04)]
    before = dut.counters_exact()[reg.ATTR_DEVICE_INFO_RX_MALFORMED]
    for case in cases:  # one at a time: each taken in before the next (the count must be exact)
        _check_drops(dut, req, [case])
    after = dut.counters_exact()[reg.ATTR_DEVICE_INFO_RX_MALFORMED]
    req(after == before + len(cases), f"{len(cases)} undecodable messages must add {len(cases)} to "
                                      f"device_info.rx_malformed, it went {before} -> {after}")


@must("M-5.1-1")
def test_M_5_1_1_reaction_table(dut: Any, req: Req) -> None:
    s = dut.session()
    info = dut.info_slot()
    c0 = dut.counters_exact()
    mal0, drop0 = c0[reg.ATTR_DEVICE_INFO_RX_MALFORMED], c0[reg.ATTR_DEVICE_INFO_RX_DROPPED]
    malformed = dropped = 0

    def silent(case: str, raw: bytes) -> None:
        # each one followed by a good READ: the accessory has taken the input in before the
        # next one comes (the counters must count every one), and RESULTs come in request
        # order (5.2), so an answer to it would have come before the READ's
        mark = s.mark()
        s.send(raw)
        r = s.ask(msg.read, info, reg.ATTR_DEVICE_INFO_HEALTH)
        req(r[2] == msg.OK, f"case {case}: the accessory stopped answering")
        got = [m.value for m in s.since(mark) if m.is_result() and m.value[1] != r[1]]
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
    n = len(dut.declaration.caps)
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
    req(mal1 == mal0 + malformed, f"cases 1, 2, 3 and 6 were sent {malformed} times: rx_malformed went "
                                  f"{mal0} -> {mal1} (+{mal1 - mal0})")
    req(drop1 == drop0 + dropped, f"case 5 was sent {dropped} times (HEARTBEAT not counted): rx_dropped went "
                                  f"{drop0} -> {drop1} (+{drop1 - drop0})")
    req(n == len(dut.declaration.caps), "unreachable")


@must("M-9-2")
def test_M_9_2_secured_ignored_and_counted(dut: Any, req: Req) -> None:
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
