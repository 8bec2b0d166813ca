"""Section 5.2 and 5.5-5.7: transactions, READ, WRITE, INVOKE and their order of checks."""
from __future__ import annotations

import time
from typing import Any

from cabinlink import msg

from cabinlink_tools.catalog import status_name
from cabinlink_tools.conformance.check import Req, must, show

BIG = 0xFFFF  # the largest slot/attr/cmd a request may carry (5.1)


def _unlisted(ids: list[int]) -> int:
    return next(i for i in range(24) if i not in ids)


def read_sweep(dut: Any) -> dict[tuple[int, int], list[Any]]:
    """Every listed attribute of every capability READ once: (slot, attr) -> RESULT."""
    s = dut.session()
    return {(c.slot, a.id): s.ask(msg.read, c.slot, a.id) for c, a in dut.declaration.all_attrs()}


@must("M-5.5-1")
def test_M_5_5_1_read_checks_in_order(dut: Any, req: Req) -> None:
    s = dut.session()
    n = len(dut.declaration.caps)
    for slot in (n, n + 1, BIG):
        req.status(s.ask(msg.read, slot, 0), msg.NOT_FOUND, f"READ slot {slot} (only {n} slots)")
    for c in dut.declaration.caps:
        attr = _unlisted(c.attrs)
        req.status(s.ask(msg.read, c.slot, attr), msg.NOT_FOUND, f"READ slot {c.slot} ({c.name}) attribute {attr} (not listed)")
        req.status(s.ask(msg.read, c.slot, BIG), msg.NOT_FOUND, f"READ slot {c.slot} attribute {BIG}")
    reads = dut.cached("reads", lambda: read_sweep(dut))
    for c, a in dut.declaration.all_attrs():
        r = reads[(c.slot, a.id)]
        if a.readable:
            req.status(r, msg.OK, f"READ of the readable {a.label}")
        else:
            req.status(r, msg.ACCESS_DENIED, f"READ of {a.label} (no read right)")
    # NOT_FOUND comes first: a bad slot with any attribute
    req.status(s.ask(msg.read, n, BIG), msg.NOT_FOUND, "READ of an unknown slot and attribute")


@must("M-5.5-2")
def test_M_5_5_2_read_ok_carries_the_value(dut: Any, req: Req) -> None:
    reads = dut.cached("reads", lambda: read_sweep(dut))
    for c, a in dut.declaration.all_attrs():
        r = reads[(c.slot, a.id)]
        if r[2] == msg.OK:
            req(len(r) >= 4, f"RESULT OK to READ {a.label} has no value element: {show(r)}")


def write_sweep(dut: Any) -> list[tuple[Any, ...]]:
    """For every listed attribute: values of the wrong type or out of range written (and,
    for writable ones, valid ones), each followed by a READ: (capability, attribute, value
    written, RESULT, value read after, value before, kind: ro/bad/good). Whatever was
    accepted is put back."""
    s = dut.session()
    out = []
    for c, a in dut.declaration.all_attrs():
        old = s.value(msg.read, c.slot, a.id) if a.readable else None
        if not a.writable:
            r = s.ask(msg.write, c.slot, a.id, "not a value")
            out.append((c, a, "not a value", r, s.value(msg.read, c.slot, a.id) if a.readable else None, old, "ro"))
            continue
        bads = []
        samples = a.samples_invalid()
        # sent together (their answers do not depend on each other: each is refused, or
        # accepted and the value read below shows it)
        for bad, r in zip(samples, s.ask_many([(msg.write, (c.slot, a.id, bad)) for bad in samples])):
            bads.append((bad, r, None))
        if any(r[2] == msg.OK for _, r, _ in bads) and a.readable:
            # one was accepted: each on its own now, to see what it did, and put back
            bads = []
            for bad in samples:
                r = s.ask(msg.write, c.slot, a.id, bad)
                if r[2] == msg.OK:
                    bads.append((bad, r, s.value(msg.read, c.slot, a.id)))
                    s.ask(msg.write, c.slot, a.id, old)
                else:
                    bads.append((bad, r, None))
        # one READ after all the refused writes: any of them that changed the value shows
        after = s.value(msg.read, c.slot, a.id) if a.readable else None
        for bad, r, seen in bads:
            out.append((c, a, bad, r, seen if seen is not None else after, old, "bad"))
        goods = a.samples_valid()
        for good, r in zip(goods, s.ask_many([(msg.write, (c.slot, a.id, g)) for g in goods])):
            out.append((c, a, good, r, None, old, "good"))
        if a.readable:
            s.ask(msg.write, c.slot, a.id, old)
    return out


@must("M-5.6-1")
def test_M_5_6_1_write_checks_in_order(dut: Any, req: Req) -> None:
    s = dut.session()
    n = len(dut.declaration.caps)
    req.status(s.ask(msg.write, n, 0, 0), msg.NOT_FOUND, f"WRITE to slot {n} (unknown)")
    req.status(s.request([msg.WRITE, s.next_tid(), n, 0]), msg.NOT_FOUND,
               "WRITE to an unknown slot without a value (NOT_FOUND comes before MALFORMED)")
    for c in dut.declaration.caps:
        attr = _unlisted(c.attrs)
        req.status(s.ask(msg.write, c.slot, attr, 0), msg.NOT_FOUND, f"WRITE slot {c.slot} ({c.name}) attribute {attr} (not listed)")
        for a in c.listed_attrs():
            req.status(s.request([msg.WRITE, s.next_tid(), c.slot, a.id]), msg.MALFORMED,
                       f"WRITE {a.label} without a value element")
    for c, a, v, r, after, old, kind in dut.cached("writes", lambda: write_sweep(dut)):
        if kind == "ro":
            # ACCESS_DENIED comes before the value check: a value of the wrong type too
            req.status(r, msg.ACCESS_DENIED, f"WRITE {a.label} (read-only) with a value of the wrong type")
        elif kind == "bad":
            req.status(r, msg.INVALID_VALUE, f"WRITE {a.label} = {show(v)} (wrong type or out of {a.lo}..{a.hi})")
        else:
            req(r[2] in (msg.OK, msg.INVALID_VALUE, msg.INVALID_STATE, msg.BUSY, msg.HW_FAULT),
                f"WRITE {a.label} = {show(v)} (type and range right) answered {status_name(r[2])}: only OK or "
                "the accessory's own INVALID_VALUE/INVALID_STATE/BUSY/HW_FAULT may follow the checks")
        req(len(r) == 3, f"a RESULT to WRITE has no value element, got {show(r)}")


@must("M-5.6-2")
def test_M_5_6_2_refused_write_changes_nothing(dut: Any, req: Req) -> None:
    n = 0
    for c, a, v, r, after, old, kind in dut.cached("writes", lambda: write_sweep(dut)):
        if r[2] == msg.OK or after is None or kind == "good":
            continue
        if a.writable:  # read-only values may change by themselves (a sensor, a counter)
            req(after == old, f"WRITE {a.label} = {show(v)} (and the other refused values) answered "
                              f"{status_name(r[2])} but the value changed from {old!r} to {after!r}")
            n += 1
    req(n, "no refused WRITE to a writable attribute was observed")


@must("M-5.7-1")
def test_M_5_7_1_invoke_checks_in_order(dut: Any, req: Req) -> None:
    s = dut.session()
    n = len(dut.declaration.caps)
    req.status(s.ask(msg.invoke, n, 0), msg.NOT_FOUND, f"INVOKE on slot {n} (unknown)")
    req.status(s.ask(msg.invoke, n, 0, "not an array"), msg.NOT_FOUND,
               "INVOKE on an unknown slot with bad arguments (NOT_FOUND comes first)")
    for c in dut.declaration.caps:
        cmd = _unlisted(c.commands)
        req.status(s.ask(msg.invoke, c.slot, cmd), msg.NOT_FOUND, f"INVOKE slot {c.slot} ({c.name}) command {cmd} (not listed)")
        req.status(s.ask(msg.invoke, c.slot, BIG, 5), msg.NOT_FOUND, f"INVOKE slot {c.slot} command {BIG} with args 5")
    for c, cmd in dut.declaration.commands():
        for bad in (5, "x", {0: 1}):
            req.status(s.ask(msg.invoke, c.slot, cmd.id, bad), msg.MALFORMED, f"INVOKE {cmd.label} with args {show(bad)} (not an array)")
        for i, a in enumerate(cmd.args):
            good = [_good_arg(x) for x in cmd.args[:i]]
            for bad in _bad_args(a):
                r = s.ask(msg.invoke, c.slot, cmd.id, good + [bad])
                req.status(r, msg.INVALID_VALUE, f"INVOKE {cmd.label} with {a.name} = {show(bad)}")
        required = [a for a in cmd.args if not a.optional]
        if required:
            req.status(s.ask(msg.invoke, c.slot, cmd.id), msg.INVALID_VALUE,
                       f"INVOKE {cmd.label} without args (its {required[0].name} is required)")
    # extra arguments are ignored: the harmless device_info.identify(0) with one more
    info = dut.declaration.find(1)
    if info is not None and 0 in info.commands:
        r = s.ask(msg.invoke, info.slot, 0, [0, 99, "extra"])
        req.status(r, msg.OK, "INVOKE device_info.identify(0) with two extra arguments (ignored)")


def _good_arg(a: Any) -> Any:
    if a.type == "bool":
        return False
    if a.type in ("int", "uint", "enum"):
        return a.lo if a.lo is not None else 0
    return ""


def _bad_args(a: Any) -> list[Any]:
    if a.type == "bool":
        return [1, "x"]
    out: list[Any] = ["x", True]
    if a.lo is not None:
        out.append(a.lo - 1)
    if a.hi is not None:
        out.append(a.hi + 1)
    if a.type == "enum" and a.values:
        out.append(a.values)
    return out


@must("M-5.2-3")
def test_M_5_2_3_results_in_request_order(dut: Any, req: Req) -> None:
    s = dut.session()
    slot = dut.info_slot()
    # several requests back to back, one of them answered with a long (multi-frame) RESULT
    plan = [msg.read(s.next_tid(), slot, 0), msg.describe(s.next_tid()), msg.read(s.next_tid(), slot, 1),
            msg.hello(s.next_tid()), msg.read(s.next_tid(), slot, 8), msg.describe(s.next_tid()),
            msg.read(s.next_tid(), slot, 9)]
    mark = s.mark()
    for m in plan:
        s.send(m)
        time.sleep(0.03)  # outstanding at once, but not back to back on the wire
    want = [m[1] for m in plan]
    s.wait(lambda: len([m for m in s.since(mark) if m.is_result()]) >= len(plan), 3.0)
    got = [m.value[1] for m in s.since(mark) if m.is_result() and m.value[1] in want]
    req(len(got) >= 3, f"{s.label}: of {len(plan)} requests outstanding at once only {len(got)} were answered")
    if len(got) < len(want):
        s.retries.extend([plan[want.index(t)] for t in want if t not in got])  # lost on the way
    req(got == sorted(got, key=want.index), f"{s.label}: requests with tids {want} were answered in the order {got}")
