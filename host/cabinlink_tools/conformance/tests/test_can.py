"""Section 7.1 (physical layer, frame kinds) and 7.2 (identifier layout): which frames the
accessory must process and which it must ignore."""
from __future__ import annotations

import time
from typing import Any

import pytest

from cabinlink import claim, isotp, msg
from cabinlink import registry as reg
from cabinlink.codec import encode

from cabinlink_tools.conformance.check import Req, first, must
from cabinlink_tools.conformance.scenarios import sf

AUX = 0x01


@pytest.fixture
def can_dut(dut: Any) -> Any:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    return dut


def _read_sf(dut: Any, tid: int) -> bytes:
    return sf(encode(msg.read(tid, dut.info_slot(), reg.ATTR_DEVICE_INFO_VENDOR)))


def _answered(dut: Any, sa: int, tid: int, fi: int, window: float = 0.3) -> bool:
    """Whether the accessory sent anything that starts a RESULT with ``tid`` to ``sa`` (SF or
    FF on any priority) after frame index ``fi``."""
    def hit() -> bool:
        for f in dut.acc_frames(fi, lambda f: f.pf == 0xDA and f.ta == sa):
            k = f.data[0] >> 4 if f.data else -1
            body = f.data[1:] if k == 0 else f.data[2:] if k == 1 else b""
            if body[:1] in (b"\x83", b"\x84") and len(body) > 2 and body[1] == msg.RESULT:
                t = body[2] if body[2] < 24 else int.from_bytes(body[3:3 + (1 << (body[2] - 24))], "big")
                if t == tid:
                    return True
        return False

    return bool(dut.probe.wait(hit, window))


def _processed(dut: Any, can_id: int, tid: int) -> bool:
    """A READ with ``tid`` sent from the main address on ``can_id``, answered: sent up to
    three times (the same frame; one lost on the way, in a controller with two receive
    buffers, is sent again as a car repeats a request, counted)."""
    s = dut.session()
    for k in range(3):
        if k:
            s.retries.append(["READ", tid])
        fi = len(dut.probe.frames)
        dut.probe.send(can_id, _read_sf(dut, tid))
        if _answered(dut, 0, tid, fi, 0.6 if k < 2 else 1.0):
            return True
    return False


def _ignored(dut: Any, tid: int, fi: int) -> bool:
    """Whether a request with ``tid`` sent from the main address (any priority, any odd
    identifier) went unanswered: a good READ from the same address follows, and its RESULT
    travels on the same connection after any RESULT to the earlier one (5.2)."""
    s = dut.session()
    r = s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH)
    assert r[2] == msg.OK, r
    return not _answered(dut, s.peer.sa, tid, fi, 0)


@must("M-7.1-1")
def test_M_7_1_1_talks_at_500kbit(can_dut: Any, req: Req) -> None:
    d = can_dut
    rate = getattr(d.probe.bus, "bitrate", None)
    if rate is not None:
        req(rate == 500_000, f"the suite's bus runs at {rate} bit/s, not 500 kbit/s: fix the adapter set-up")
    req(d.acc_frames(), "the accessory sent no frame on the 500 kbit/s bus")
    req.status(d.session().ask(msg.hello), msg.OK, "HELLO over the 500 kbit/s bus")


@must("M-7.2-1")
def test_M_7_2_1_any_priority_only_edp_dp_zero(can_dut: Any, req: Req) -> None:
    d = can_dut
    s = d.session()
    for prio in (0, 1, 3, 5, 7):
        req(_processed(d, isotp.phys_id(prio, d.addr, 0), s.next_tid()),
            f"a READ on priority {prio} (id {isotp.phys_id(prio, d.addr, 0):08X}) was not answered (sent three times)")
    for name, bits in (("DP = 1", 1 << 24), ("EDP = 1", 1 << 25), ("EDP = DP = 1", 3 << 24)):
        tid = s.next_tid()
        fi = len(d.probe.frames)
        d.probe.send(isotp.phys_id(6, d.addr, 0) | bits, _read_sf(d, tid))
        req(_ignored(d, tid, fi), f"a READ with {name} was processed: only EDP = 0, DP = 0 is CabinLink")


@must("M-7.2-2")
def test_M_7_2_2_null_and_global_source_dropped(can_dut: Any, req: Req) -> None:
    d = can_dut
    for sa in (claim.NULL, claim.GLOBAL):
        fi = len(d.probe.frames)
        d.probe.send(isotp.phys_id(6, d.addr, sa), _read_sf(d, 0x4242))
        d.session().ask(msg.hello)  # the accessory has processed the frame by then
        time.sleep(0.03)
        back = d.acc_frames(fi, lambda f: f.pf == 0xDA and f.ta == sa)
        req(not back, f"an ISO-TP frame from source address 0x{sa:02X} was answered: {first(back)}")
    req.status(d.session().ask(msg.hello), msg.OK, "HELLO afterwards")


@must("M-7.2-3")
def test_M_7_2_3_own_address_or_global_only(can_dut: Any, req: Req) -> None:
    d = can_dut
    s = d.session()
    other = d.addr + 1 if d.addr < 0xF7 else 0x80
    tid = s.next_tid()
    fi = len(d.probe.frames)
    d.probe.send(isotp.phys_id(6, other, 0), _read_sf(d, tid))
    req(_ignored(d, tid, fi), f"a READ addressed to 0x{other:02X} (not the accessory) was answered")
    tid = s.next_tid()
    fi = len(d.probe.frames)
    d.probe.send(isotp.func_id(6, other, 0), _read_sf(d, tid))
    req(_ignored(d, tid, fi), f"a functional READ to 0x{other:02X} (not the accessory, not 0xFF) was answered")
    for ta in (d.addr, claim.GLOBAL):
        req(_processed(d, isotp.func_id(6, ta, 0), s.next_tid()),
            f"a functional READ to 0x{ta:02X} was not processed (sent three times)")
