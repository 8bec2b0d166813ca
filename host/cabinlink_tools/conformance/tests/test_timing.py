"""Section 2.3 (timing conventions), 6.6 and 7.6-3 (when a car goes away): the verdicts of
the background scenarios that ran since the start of the session."""
from __future__ import annotations

from typing import Any

import pytest

from cabinlink import claim

from cabinlink_tools.conformance.check import Req, early, must
from cabinlink_tools.conformance.scenarios import STMIN_TOL, LivenessResult

TOL = 0.030  # see test_subscriptions.TOL
SETTLE_TOL = 0.010  # the claim itself may cross the bus a little after its hand-over


@pytest.fixture
def live(dut: Any) -> LivenessResult:
    if dut.probe is None:
        pytest.skip("liveness on CAN needs the CAN link (on BLE the connection is the liveness, 6.6-3)")
    return dut.backgrounds["liveness"].result(60)


def _check_silent_car_ends(req: Req, r: LivenessResult, why: str) -> None:
    last = r.silent_last_heard
    alive = [t - last for t in r.silent_reports if t > last]
    req(any(2.2 <= x <= 3.0 for x in alive), f"{why}: a car last heard {max(alive, default=0):.2f} s before its last "
                                             f"REPORT (reports every second, last ones at {[round(x, 2) for x in alive]} s "
                                             "after it was last heard): the session ended before 3000 ms of silence")


@must("M-6.6-1")
def test_M_6_6_1_silent_car_session_ends(dut: Any, req: Req, live: LivenessResult) -> None:
    req(live.subscribed.get("silent", [0, 0, -1])[2] == 0, f"SUBSCRIBE of the silent car answered {live.subscribed.get('silent')}")
    last = live.silent_last_heard
    late = [round(t - last, 2) for t in live.silent_reports if t - last > 3.6]
    req(not late, f"a car silent for more than 3000 ms still got REPORTs {late} s after it was last heard: its "
                  "session (and subscriptions) must end")
    req(live.end - last > 4.5, "the observation was too short")


@must("M-6.6-2")
def test_M_6_6_2_session_kept_while_heard(dut: Any, req: Req, live: LivenessResult) -> None:
    heard = live.keep_heard
    gaps = [b - a for a, b in zip(heard, heard[1:])]
    req(gaps and max(gaps) <= 3.0, f"the suite's own heartbeat gaps {gaps} exceed 3 s: the check is void")
    end = live.end
    late = [t for t in live.keep_reports if t > end - 1.6]
    req(late, f"a car heard every {max(gaps):.1f} s stopped getting REPORTs (last one "
              f"{end - max(live.keep_reports, default=0):.1f} s before the end): its session must not end")
    after = [round(t - heard[0], 2) for t in live.keep_reports]
    req(any(x > 3.5 for x in after), f"REPORTs of the kept session at {after} s: none after 3.5 s")


@must("M-7.6-3")
def test_M_7_6_3_offline_after_3000ms_not_before(dut: Any, req: Req, live: LivenessResult) -> None:
    _check_silent_car_ends(req, live, "peer liveness")
    last = live.silent_last_heard
    req(not [t for t in live.silent_reports if t - last > 3.6], "the silent car was still served after 3.6 s")


@must("M-2.3-4")
def test_M_2_3_4_timeouts_not_before_nominal(dut: Any, req: Req, live: LivenessResult) -> None:
    _check_silent_car_ends(req, live, "3000 ms liveness")
    rx = dut.backgrounds["isotp_rx"].result(30)
    req(not rx.error, rx.error)
    req(rx.answered_after_short_pause is not None, f"N_Cr: CFs {rx.pause_ok} s after the flow control (timeout 1000 ms) "
                                                   "must still be taken, the request was not answered")
    tx = dut.backgrounds["isotp_tx"].result(60)
    c = tx.cases.get("fc_after_0.9s")
    req(c is not None and c.complete, f"N_Bs: an FC 0.9 s after the first frame (timeout 1000 ms) must still get the CFs, "
                                      f"got {len(c.cfs()) if c else 0} of {tx.total_cfs}")


@must("M-2.3-2")
def test_M_2_3_2_floors_not_shortened(dut: Any, req: Req) -> None:
    from cabinlink_tools.conformance.tests.test_subscriptions import FLOOR_MS, observe

    checked = []
    obs = dut.cached("reporting", lambda: observe(dut))
    if "floor" in obs.subs:
        f = [m.t for m in obs.subs["floor"].reports()]
        bad = early(f, FLOOR_MS / 1000, 0.015)
        req(not bad, f"subscription min_ms {FLOOR_MS}: REPORTs {1000 * bad[0][1]:.0f} ms apart" if bad else "")
        checked.append("min_ms")
    if dut.probe is not None:
        tx = dut.backgrounds["isotp_tx"].result(60)
        c = tx.cases.get("bs2_stmin20")
        if c is not None:
            cfs = c.cfs()
            bad = early([f.t for f in cfs], 0.020, STMIN_TOL)
            req(not bad, f"ISO-TP STmin 20 ms: CFs {1000 * bad[0][1]:.1f} ms apart" if bad else "")
            checked.append("STmin")
        # the claim settle time of every boot the suite watched from its first frame
        for start in dut.boot_marks:
            claims = dut.claims(start)
            if not claims:
                continue
            c0 = claims[0]
            other = dut.acc_frames(start, lambda f: f.t > c0.t and f.pf != 0xEE and not (f.pf == 0xEA))
            if other:
                gap = other[0].t - c0.t
                req(gap >= 0.250 - SETTLE_TOL, f"claim settle time 250 ms: the first other frame came {1000 * gap:.0f} ms "
                                          f"after the Address Claimed ({other[0]})")
                checked.append("settle")
    req(checked, "no floor could be observed on this target")
