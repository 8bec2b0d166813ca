"""Section 7.7 (bus-off): the suite drives the accessory's controller bus-off three times in a
row (a simulated target: the simulated bus sets its transmit error counter to 256) and
watches when it comes back: off the bus for the back-off (100, 200, 400 ms: doubling, not
reset within 10 s), then its Address Claimed for the same address and the settle time
before anything else; a transfer in progress when it went bus-off is not continued."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from cabinlink import isotp, msg
from cabinlink.codec import encode

from cabinlink_tools.conformance.can_probe import Frame
from cabinlink_tools.conformance.check import Req, must
from cabinlink_tools.conformance.scenarios import sf

AUX = 0x01
TOL = 0.005


@dataclass
class Episode:
    t: float  # bus time of the bus-off (the last frame before it, or the command)
    addr: int
    back: Frame | None = None  # its first frame afterwards
    claim: Frame | None = None
    after_claim: Frame | None = None  # the first non-claim frame after the claim
    old_cfs: list[Frame] = field(default_factory=list)


def episodes(d: Any) -> list[Episode]:
    out = []
    aux = d.peers.get(AUX) or d.peer(AUX)
    time.sleep(max(0.0, aux.peer.ready_at - time.time()))
    for k in range(3):
        addr = d.addr
        # a transfer in progress: a DESCRIBE answer waiting for its flow control
        cap = aux.peer.capture(6, addr) if k == 0 else None
        if cap is not None:
            tid = aux.next_tid()
            aux.unanswerable.add(tid)  # the transfer the bus-off aborts
            d.probe.send(isotp.phys_id(6, addr, AUX), sf(encode(msg.describe(tid))))
            d.probe.wait(lambda: cap, 1.0)
        time.sleep(0.05)
        fi = len(d.probe.frames)
        t_cmd = time.time()  # the bus-off starts right after this (local clock, as the frames')
        d.target.bus_off()
        ep = Episode(t_cmd, addr)
        if cap is not None:
            d.probe.send(isotp.phys_id(6, addr, AUX), bytes([0x30, 0, 0, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]))
        d.probe.wait(lambda: d.acc_frames(fi), 3.0)
        # the settle time after its claim, and a bit (watched after the first and the last
        # bus-off; the second is cut short by the third)
        time.sleep(0.29 if k != 1 else 0.02)
        fs = d.acc_frames(fi)
        ep.back = fs[0] if fs else None
        cl = [f for f in fs if f.pf == 0xEE]
        ep.claim = cl[0] if cl else None
        if ep.claim is not None:
            rest = [f for f in fs if f.t > ep.claim.t and f.pf != 0xEE]
            ep.after_claim = rest[0] if rest else None
        if cap is not None:
            ep.old_cfs = [f for f in cap if f.data and f.data[0] >> 4 == 2]
            aux.peer.release(6, addr)
        out.append(ep)
    return out


@pytest.fixture
def eps(dut: Any) -> list[Episode]:
    if dut.probe is None or not dut.target.can_fault_bus:
        pytest.skip("needs a bus the suite can drive the accessory's controller bus-off on (the simulation); on a real "
                    "bus this takes a fault injector")
    return dut.cached("busoff", lambda: episodes(dut))


@must("M-7.7-1")
def test_M_7_7_1_backoff_doubles_transfers_aborted(dut: Any, req: Req, eps: list[Episode]) -> None:
    want = [0.100, 0.200, 0.400]
    for k, (ep, w) in enumerate(zip(eps, want)):
        req(ep.back is not None, f"bus-off {k + 1}: the accessory never came back (3 s)")
        off = ep.back.t - ep.t
        req(off >= w - TOL, f"bus-off {k + 1}: back on the bus after {1000 * off:.0f} ms, the back-off is {1000 * w:.0f} ms "
                            "(100 ms, doubled after each further bus-off)")
    req(not eps[0].old_cfs, f"{len(eps[0].old_cfs)} CF(s) of a transfer begun before the bus-off were sent after it: "
                            "all ISO-TP transfers must be aborted")


@must("M-7.7-2")
def test_M_7_7_2_claims_again_and_settles(dut: Any, req: Req, eps: list[Episode]) -> None:
    for k, ep in enumerate(eps):
        req(ep.back is not None, f"bus-off {k + 1}: the accessory never came back")
        req(ep.claim is not None and ep.back is ep.claim, f"bus-off {k + 1}: the first frame after the back-off must be its "
                                                          f"Address Claimed, it was {ep.back}")
        req(ep.claim.sa == ep.addr, f"bus-off {k + 1}: claimed 0x{ep.claim.sa:02X}, it held 0x{ep.addr:02X}")
        if ep.after_claim is not None:
            gap = ep.after_claim.t - ep.claim.t
            req(gap >= 0.250 - 0.010, f"bus-off {k + 1}: {ep.after_claim} came {1000 * gap:.0f} ms after the claim, "
                                      "before the 250 ms settle time")


@must("M-7.7-3")
def test_M_7_7_3_backoff_not_reset_early(dut: Any, req: Req, eps: list[Episode]) -> None:
    # the second and third bus-off came well within 10 s of the last recovery: the back-off
    # must not have returned to 100 ms
    for k in (1, 2):
        ep = eps[k]
        req(ep.back is not None, f"bus-off {k + 1}: the accessory never came back")
        off = ep.back.t - ep.t
        req(off >= 0.200 - TOL, f"bus-off {k + 1}, {ep.t - eps[k - 1].t:.1f} s after the previous one: back after "
                                f"{1000 * off:.0f} ms; the back-off returns to 100 ms only after 10 s without bus-off")


@must("M-7.7-4")
def test_M_7_7_4_no_restart_before_backoff(dut: Any, req: Req, eps: list[Episode]) -> None:
    for k, ep in enumerate(eps):
        req(ep.back is not None, f"bus-off {k + 1}: the accessory never came back")
        off = ep.back.t - ep.t
        req(off >= 0.100 - TOL, f"bus-off {k + 1}: a frame {1000 * off:.0f} ms after it ({ep.back}): the controller must "
                                "not leave bus-off before the back-off (its own automatic recovery overridden)")
    req.status(dut.session().ask(msg.hello), msg.OK, "HELLO after the bus-off episodes")
