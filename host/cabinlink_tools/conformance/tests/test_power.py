"""What must hold over time and over a restart: the description while the accessory runs
(3.2-2, 5.4-2) and persistent values over a power cycle (3.3-3)."""
from __future__ import annotations

from typing import Any

import pytest

from cabinlink import msg

from cabinlink_tools.conformance.check import Req, must, show


def _describe_now(dut: Any) -> dict[Any, Any]:
    r = dut.session().ask(msg.describe)
    assert r[2] == msg.OK, r
    return r[3]


@must("M-5.4-2")
def test_M_5_4_2_description_unchanged_while_running(dut: Any, req: Req) -> None:
    now = _describe_now(dut)
    first = dut.declaration.raw
    diff = sorted(k for k in set(now) | set(first) if now.get(k) != first.get(k))
    req(not diff, f"the description changed while the accessory ran (keys {diff}), e.g. key {diff[:1]}: "
                  f"{show(first.get(diff[0]) if diff else None)} -> {show(now.get(diff[0]) if diff else None)}")


@must("M-3.2-2")
def test_M_3_2_2_capability_list_unchanged(dut: Any, req: Req) -> None:
    now = _describe_now(dut).get(msg.D_CAPS)
    first = dut.declaration.raw.get(msg.D_CAPS)
    req(now == first, f"the capability list (slots) changed while the accessory ran: {show(first, 200)} -> {show(now, 200)}")


def _other(a: Any, v: Any) -> Any:
    for x in a.samples_valid():
        if x != v:
            return x
    return None


def cycle(d: Any) -> dict[str, Any]:
    """Persistent attributes written, then the accessory restarted, then read back (and put
    back). On a simulated target the restart is the power cycle that ends the
    no-address-left scenario of test_claim (one power cycle for both); elsewhere the
    device_info.reboot command."""
    s = d.session()
    written = []
    for c, a in [(c, a) for c, a in d.declaration.writable() if a.persistent and a.readable]:
        old = s.value(msg.read, c.slot, a.id)
        new = _other(a, old)
        if new is not None and s.ask(msg.write, c.slot, a.id, new)[2] == msg.OK:
            written.append((c, a, old, new))
        if len(written) >= 3:
            break
    out: dict[str, Any] = {"written": written, "read": [], "no_address": None}
    if d.probe is not None and d.target.can_power_cycle:
        from cabinlink_tools.conformance.tests.test_claim import no_address

        out["no_address"] = no_address(d)  # ends with a power cycle
        out["how"] = out["no_address"].recovered
    else:
        out["how"] = d.restart()
    s = d.session()
    s.ask(msg.hello)
    for c, a, old, new in written:
        out["read"].append(s.value(msg.read, c.slot, a.id))
        s.ask(msg.write, c.slot, a.id, old)
    return out


@must("M-3.3-3")
def test_M_3_3_3_persistent_value_survives_power_cycle(dut: Any, req: Req) -> None:
    r = dut.cached("cycle", lambda: cycle(dut))
    if not r["written"]:
        pytest.skip("the accessory lists no persistent writable attribute that accepted a new value")
    if not dut.target.can_power_cycle:
        dut.notes.append(f"M-3.3-3 checked over a restart by {r['how']}, not a power cycle")
    for (c, a, old, new), got in zip(r["written"], r["read"]):
        req(got == new, f"{a.label} was written {new!r} (answered OK) but reads {got!r} after a {r['how']}")
