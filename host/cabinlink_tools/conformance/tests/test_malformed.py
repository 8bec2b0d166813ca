"""Section 4.4 (rejected input) and 5.1 (trailing elements; the reaction table and the counts
are in test_counters). Each bad message is followed by a good request from the same car:
RESULTs come in request order (5.2), so by the time the good one is answered, an answer to
the bad one would have come."""
from __future__ import annotations

import json
from typing import Any

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.conformance.cbor_check import Raw, array, cmap, text, uint
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
