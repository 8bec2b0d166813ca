"""Section 4.3: what a decoder must accept. (What the accessory itself sends, 4.2, is checked
over the whole run in test_aggregate.)"""
from __future__ import annotations

from typing import Any

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.conformance.cbor_check import (
    Raw, array, bstr, cmap, double, half, head, nint, single, text, uint)
from cabinlink_tools.conformance.check import Req, must, show


def _hello(tid: int, *extra: bytes, tid_size: int | None = None) -> Raw:
    return Raw(array(uint(msg.HELLO), uint(tid, tid_size), uint(0), uint(1), *extra))


@must("M-4.3-1")
def test_M_4_3_1_every_deterministic_encoding_accepted(dut: Any, req: Req) -> None:
    s = dut.session()
    info = dut.info_slot()
    # tids across every head size a tid can take
    for tid in (0, 23, 24, 255, 256, 65535):
        r = s.request(Raw(array(uint(msg.READ), uint(tid), uint(info), uint(0))), tid)
        req(r is not None and r[1] == tid and r[2] == msg.OK, f"READ with tid {tid} answered {show(r)}")
    # trailing elements (ignored by 5.1) holding every item kind of 4.1, deepest nesting allowed
    items = [uint(0), uint(2**64 - 1), nint(-1), nint(-(2**64)), bstr(b""), bstr(bytes(300)), text(""),
             text("ÄÖÜ €𝄞"), b"\xf4", b"\xf5", b"\xf6", array(), cmap(), cmap((uint(0), uint(1)), (uint(24), uint(2)),
             (nint(-1), uint(3)), (text("a"), uint(4)), (text("bb"), uint(5)))]
    # nested arrays: the HELLO is level 1, so 7 more levels make 8
    items.append(array(array(array(array(array(array(array(uint(1)))))))))
    for i, it in enumerate(items):
        tid = s.next_tid()
        r = s.request(_hello(tid, it), tid)
        req(r is not None and r[2] == msg.OK, f"HELLO with a valid trailing element {it[:12].hex(' ').upper()}... "
                                             f"(item {i}) answered {show(r)}")


@must("M-4.3-2")
def test_M_4_3_2_floats_accepted_as_values(dut: Any, req: Req) -> None:
    s = dut.session()
    for name, f in (("half", half(1.5)), ("single", single(100000.0)), ("double", double(1.1))):
        tid = s.next_tid()
        r = s.request(_hello(tid, f), tid)
        req(r is not None and r[2] == msg.OK, f"HELLO with a trailing {name}-precision float answered {show(r)}")
    # where an integer is due, a float is a wrong type: INVALID_VALUE, not a dropped message
    target = next(((c, a) for c, a in dut.declaration.reportable() if a.type in ("int", "uint")), None)
    if target is not None:
        c, a = target
        for name, f in (("half", half(2.0)), ("double", double(10.0))):
            tid = s.next_tid()
            m = Raw(array(uint(msg.SUBSCRIBE), uint(tid), uint(c.slot), uint(a.id), uint(0), uint(60), f))
            r = s.request(m, tid)
            req(r is not None and r[2] == msg.INVALID_VALUE,
                f"SUBSCRIBE {a.label} with a {name}-precision float threshold must get INVALID_VALUE (6.1), got {show(r)}")
    w = next(((c, a) for c, a in dut.declaration.writable() if a.type in ("int", "uint") and a.readable), None)
    if w is not None:
        c, a = w
        old = s.value(msg.read, c.slot, a.id)
        tid = s.next_tid()
        r = s.request(Raw(array(uint(msg.WRITE), uint(tid), uint(c.slot), uint(a.id), single(float(old)))), tid)
        if r is not None and r[2] == msg.OK:
            s.ask(msg.write, c.slot, a.id, old)
        req(r is not None and r[2] == msg.INVALID_VALUE,
            f"WRITE {a.label} with a float value must get INVALID_VALUE (5.6), got {show(r)}")


@must("M-4.3-3")
def test_M_4_3_3_non_shortest_integers_accepted(dut: Any, req: Req) -> None:
    s = dut.session()
    info = dut.info_slot()
    for size in (1, 2, 4, 8):
        tid = s.next_tid()
        tsize = max(size, len(uint(tid)) - 1)  # a tid above 255 cannot go in one byte
        m = Raw(head(4, 4, size) + uint(msg.READ, size) + uint(tid, tsize) + uint(info, size) +
                uint(reg.ATTR_DEVICE_INFO_VENDOR, size))
        r = s.request(m, tid)
        req(r is not None and r[1] == tid and r[2] == msg.OK,
            f"READ with every integer and the array length in {size}-byte form ({bytes(m).hex(' ').upper()}) answered {show(r)}")
    tid = s.next_tid()
    r = s.request(_hello(tid, Raw(head(3, 1, 2) + b"x")), tid)
    req(r is not None and r[2] == msg.OK, f"HELLO with a text string whose length is not in shortest form answered {show(r)}")


@must("M-4.3-4")
def test_M_4_3_4_map_keys_in_any_order(dut: Any, req: Req) -> None:
    s = dut.session()
    for pairs in (((uint(2), uint(0)), (uint(1), uint(0))), ((text("b"), uint(1)), (text("a"), uint(2)), (uint(0), uint(3))),
                  ((nint(-1), uint(1)), (uint(30), uint(2)), (uint(5), uint(3)))):
        tid = s.next_tid()
        r = s.request(_hello(tid, cmap(*pairs)), tid)
        req(r is not None and r[2] == msg.OK, f"HELLO with a trailing map whose keys are not sorted "
                                             f"({cmap(*pairs).hex(' ').upper()}) answered {show(r)}")
