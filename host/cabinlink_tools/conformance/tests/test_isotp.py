"""Section 7.4 (ISO-TP) and 7.5 (priorities, separate connections), played frame by frame.
The timer cases (N_Bs, N_Cr, FC WAIT) ran in the background from the start of the session
(scenarios.py); their verdicts are here."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cabinlink import isotp, msg
from cabinlink import registry as reg
from cabinlink.codec import decode, encode

from cabinlink_tools.conformance.check import Req, early, first, must, show
from cabinlink_tools.conformance.scenarios import STMIN_TOL, RawConn, TxTimerResult, cf, fc, ff, padded_read, segments, sf

AUX = 0x01


@pytest.fixture
def conn(dut: Any) -> Iterator[RawConn]:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    c = RawConn(dut, AUX, 6)
    yield c
    c.close()


def _result(dut: Any, c: RawConn, tid: int, since: int, timeout: float = 1.0) -> list[Any] | None:
    """The RESULT with ``tid`` among the captured frames (single frame, or FF + CFs that the
    test acknowledges with FC CTS)."""
    end = time.time() + timeout
    i = since
    buf: bytearray | None = None
    need = 0
    while time.time() < end:
        while i < len(c.cap):
            f = c.cap[i]
            i += 1
            k = f.data[0] >> 4 if f.data else -1
            if k == 0:
                try:
                    v = decode(f.data[1:1 + (f.data[0] & 0xF)])
                except ValueError:
                    continue
                if isinstance(v, list) and v[:2] == [msg.RESULT, tid]:
                    return v
            elif k == 1:
                need = ((f.data[0] & 0xF) << 8) | f.data[1]
                buf = bytearray(f.data[2:8])
                c.send(fc(0))
            elif k == 2 and buf is not None:
                buf.extend(f.data[1:])
                if len(buf) >= need:
                    v = decode(bytes(buf[:need]))
                    buf = None
                    if isinstance(v, list) and v[:2] == [msg.RESULT, tid]:
                        return v
        time.sleep(0.005)
    return None


def _tid_of(f: Any) -> int | None:
    try:
        v = decode(f.data[1:1 + (f.data[0] & 0xF)])
    except ValueError:
        return None
    return v[1] if isinstance(v, list) and len(v) > 1 else None


def _no_result_before_good(dut: Any, c: RawConn, tid: int, since: int) -> list[Any] | None:
    """A good READ on the same connection, answered; the RESULT with ``tid`` if one came
    before it (RESULTs of one session come in request order, 5.2), else None."""
    for _ in range(2):  # a frame lost on the way (two receive buffers) is sent again
        good = c.session.next_tid()
        c.send(sf(encode(msg.read(good, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH))))
        if _result(dut, c, good, since, 1.0) is not None:
            return _result(dut, c, tid, since, 0)
        c.session.retries.append(["READ", good])
    raise AssertionError("the accessory did not answer a good READ (twice)")


@must("M-7.4-3")
def test_M_7_4_3_short_frames_accepted(dut: Any, req: Req, conn: RawConn) -> None:
    info = dut.info_slot()
    s = conn.session
    # a single frame without padding
    tid = s.next_tid()
    m = conn.mark()
    conn.send(sf(encode(msg.read(tid, info, reg.ATTR_DEVICE_INFO_HEALTH)), pad=False))
    r = _result(dut, conn, tid, m)
    req(r is not None and r[2] == msg.OK, f"an unpadded single frame (READ) was answered {show(r)}")
    # a multi-frame request whose last CF is not padded
    tid = s.next_tid()
    m = conn.mark()
    err = conn.send_message(padded_read(tid, info, reg.ATTR_DEVICE_INFO_HEALTH, 24), pad=False)
    req(not err, f"a 24-byte request with an unpadded last CF: {err}")
    r = _result(dut, conn, tid, m)
    req(r is not None and r[2] == msg.OK, f"a multi-frame request with an unpadded last CF was answered {show(r)}")
    # a multi-frame RESULT acknowledged by a 3-byte FC
    tid = s.next_tid()
    m = conn.mark()
    conn.send(sf(encode(msg.describe(tid))))
    f1 = conn.wait_frame(m, 1)
    req(f1 is not None, "no first frame of the DESCRIBE answer")
    total = ((f1.data[0] & 0xF) << 8) | f1.data[1]
    conn.send(bytes([0x30, 0, 0]))
    need = (total - 6 + 6) // 7
    got = conn.probe.wait(lambda: sum(1 for f in conn.cap[m:] if f.data[0] >> 4 == 2) >= need, 2.0)
    req(got, f"after a 3-byte FC (30 00 00) the accessory did not send the {need} CFs of its answer")


@must("M-7.4-4")
def test_M_7_4_4_bad_frames_ignored_without_fc(dut: Any, req: Req, conn: RawConn) -> None:
    info = dut.info_slot()
    s = conn.session
    body = encode(msg.read(0xFFF7, info, 0))  # a tid the suite never uses otherwise
    bad = [("SF_DL 0", bytes([0x00]) + body + bytes(2)),
           ("SF_DL 8", bytes([0x08]) + body + bytes(2)),
           ("SF_DL 15", bytes([0x0F]) + body + bytes(2)),
           ("SF shorter than its SF_DL", bytes([0x07]) + body[:4]),
           ("FF of 7 bytes", ff(20, body + b"xx")[:7]),
           ("FF_DL 5", bytes([0x10, 0x05]) + body + b"x"),
           ("FF_DL 0 (CAN FD escape)", bytes([0x10, 0x00]) + body + b"x"),
           ("CF with no reception", cf(1, b"xxxxxxx")),
           ("FC while not waiting", fc(0, 0, 0))]
    for name, frame in bad:
        m = conn.mark()
        conn.send(frame)
        tid = s.next_tid()
        conn.send(sf(encode(msg.read(tid, info, reg.ATTR_DEVICE_INFO_HEALTH))))
        r = _result(dut, conn, tid, m)
        req(r is not None and r[2] == msg.OK, f"after a bad frame ({name}) a good READ was answered {show(r)}")
        fcs = [f for f in conn.cap[m:] if f.data and f.data[0] >> 4 == 3]
        req(not fcs, f"the accessory answered a bad frame ({name}: {frame.hex(' ').upper()}) with a flow control "
                     f"{fcs[0].data.hex(' ').upper() if fcs else ''}")
        other = [f for f in conn.cap[m:] if f.data and f.data[0] >> 4 == 0 and _tid_of(f) == 0xFFF7]
        req(not other, f"the bad frame ({name}) was processed as a message")


@must("M-7.4-7")
def test_M_7_4_7_overflow_answered_ovflw(dut: Any, req: Req, conn: RawConn) -> None:
    limit = dut.declaration.max_rx
    tid = conn.session.next_tid()
    data = padded_read(tid, dut.info_slot(), 0, limit + 1)
    ff0, cfs = segments(data)
    m = conn.mark()
    conn.send(ff0)
    f = conn.wait_frame(m, 3)
    req(f is not None, f"no flow control after a first frame with FF_DL {limit + 1} > D_MAX_RX {limit}")
    req(f.data[0] == 0x32, f"FF_DL {limit + 1} > D_MAX_RX {limit} must get FC OVFLW (32), got {f.data.hex(' ').upper()}")
    for c in cfs[:8]:
        conn.send(c)
    r = _no_result_before_good(dut, conn, tid, m)
    req(r is None, f"the message refused with OVFLW was processed anyway: {show(r)}")


@must("M-7.4-8")
def test_M_7_4_8_receive_limit_is_max_rx(dut: Any, req: Req, conn: RawConn) -> None:
    limit = dut.declaration.max_rx
    tid = conn.session.next_tid()
    m = conn.mark()
    err = conn.send_message(padded_read(tid, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH, limit), fc_timeout=1.0)
    req(not err, f"a message of exactly D_MAX_RX = {limit} bytes: {err}")
    f = conn.wait_frame(m, 3)
    req(f is not None and f.data[0] & 0xF == 0, f"FF_DL = D_MAX_RX {limit} must get FC CTS, got "
                                                f"{f.data.hex(' ').upper() if f else 'nothing'}")
    r = _result(dut, conn, tid, m, 2.0)
    req(r is not None and r[2] == msg.OK, f"a {limit}-byte READ (D_MAX_RX) was answered {show(r)}")


@must("M-7.4-12")
def test_M_7_4_12_wrong_sequence_number_aborts(dut: Any, req: Req, conn: RawConn) -> None:
    tid = conn.session.next_tid()
    ff0, cfs = segments(padded_read(tid, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH, 30))
    m = conn.mark()
    conn.send(ff0)
    req(conn.wait_frame(m, 3), "no flow control after a first frame")
    m2 = conn.mark()
    conn.send(cf(2, cfs[0][1:]))  # SN 2 where 1 is due
    time.sleep(0.1)
    req(len(conn.cap) == m2, f"the accessory sent {conn.cap[m2].data.hex(' ').upper() if len(conn.cap) > m2 else ''} after a CF with the wrong "
                             "sequence number: it must abort without sending anything")
    for c in cfs:
        conn.send(c)
    r = _no_result_before_good(dut, conn, tid, m)
    req(r is None, f"a message with a wrong sequence number was delivered: {show(r)}")


@must("M-7.4-13")
def test_M_7_4_13_new_sf_or_ff_restarts_reception(dut: Any, req: Req, conn: RawConn) -> None:
    info = dut.info_slot()
    s = conn.session
    for new in ("SF", "FF"):
        tid_a = s.next_tid()
        ff0, cfs = segments(padded_read(tid_a, info, reg.ATTR_DEVICE_INFO_HEALTH, 30))
        m = conn.mark()
        conn.send(ff0)
        req(conn.wait_frame(m, 3), "no flow control after a first frame")
        conn.send(cfs[0])
        tid_b = s.next_tid()
        if new == "SF":
            conn.send(sf(encode(msg.read(tid_b, info, reg.ATTR_DEVICE_INFO_VENDOR))))
        else:
            err = conn.send_message(padded_read(tid_b, info, reg.ATTR_DEVICE_INFO_VENDOR, 20))
            req(not err, f"the new FF: {err}")
        r = _result(dut, conn, tid_b, m)
        req(r is not None and r[2] == msg.OK, f"an {new} during a reception must start a new message: it was answered {show(r)}")
        for c in cfs[1:]:
            conn.send(c)
        r = _no_result_before_good(dut, conn, tid_a, m)
        req(r is None, f"the reception interrupted by an {new} was completed anyway: {show(r)}")


@must("M-7.4-15")
def test_M_7_4_15_functional_frames_single_only(dut: Any, req: Req, conn: RawConn) -> None:
    probe = dut.probe
    tid = conn.session.next_tid()
    ff0, cfs = segments(padded_read(tid, dut.info_slot(), 0, 20))
    fi = len(probe.frames)
    m = conn.mark()
    probe.send(isotp.func_id(6, 0xFF, AUX), ff0)
    for c in cfs:
        probe.send(isotp.func_id(6, 0xFF, AUX), c)
    r = _no_result_before_good(dut, conn, tid, m)
    req(r is None, f"a message sent as FF + CFs on the functional identifier was processed: {show(r)}")
    back = [f for f in dut.acc_frames(fi, lambda f: f.ta == AUX and f.pf in (0xDA, 0xDB)) if f.data[0] >> 4 == 3]
    req(not back, f"a first frame on the functional identifier got an answer: {first(back)}")
    hb = dut.acc_frames(0, lambda f: f.pf == 0xDB)
    multi = [f for f in hb if not f.data or f.data[0] >> 4 != 0]
    req(not multi, f"the accessory sent a frame other than a single frame on a functional identifier: {multi[:1]}")


@must("M-7.5-2")
def test_M_7_5_2_fc_carries_the_data_priority(dut: Any, req: Req) -> None:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    for prio in (3, 5, 7):
        c = RawConn(dut, AUX, prio)
        try:
            tid = c.session.next_tid()
            c.session.unanswerable.add(tid)  # only the flow control is judged here
            m = c.mark()
            err = c.send_message(padded_read(tid, dut.info_slot(), 0, 20))
            f = c.wait_frame(m, 3)
            req(f is not None, f"no flow control on priority {prio} after a first frame on priority {prio} ({err})")
            req(f.prio == prio, f"the FC for a first frame on priority {prio} came on priority {f.prio} ({f.can_id:08X})")
        finally:
            c.close()


@must("M-7.5-3")
def test_M_7_5_3_connections_per_identifier(dut: Any, req: Req, conn: RawConn) -> None:
    info = dut.info_slot()
    s = conn.session
    tid_a = s.next_tid()
    ff0, cfs = segments(padded_read(tid_a, info, reg.ATTR_DEVICE_INFO_HEALTH, 30))
    m = conn.mark()
    conn.send(ff0)
    req(conn.wait_frame(m, 3), "no flow control after a first frame on priority 6")
    # meanwhile a complete request on the priority-3 identifier between the same two nodes
    # (its answer a single frame; sent once more if it got lost on the way, within N_Cr of
    # the reception in progress)
    tid_b = s.next_tid()
    for _ in range(2):
        dut.probe.send(isotp.phys_id(3, conn.acc, AUX), sf(encode(msg.read(tid_b, info, reg.ATTR_DEVICE_INFO_HEALTH))))
        r = _result(dut, conn, tid_b, m, 0.4)
        if r is not None:
            break
    req(r is not None and r[2] == msg.OK, f"a request on priority 3 during a priority-6 reception was answered {show(r)}")
    # the priority-6 reception goes on undisturbed
    m2 = conn.mark()
    conn.send(cfs[0])
    i = 1
    while i < len(cfs):
        f = conn.wait_frame(m2, 3, 0.3)
        if f is not None:
            m2 = conn.cap.index(f) + 1
        conn.send(cfs[i])
        i += 1
        time.sleep(0.005)
    r = _result(dut, conn, tid_a, m, 1.0)
    req(r is not None and r[2] == msg.OK, f"the priority-6 message was lost when a priority-3 message arrived: {show(r)}")


# --- verdicts of the background ISO-TP scenarios ------------------------------------------------------
@pytest.fixture
def tx(dut: Any) -> TxTimerResult:
    if dut.probe is None:
        pytest.skip("needs the CAN link")
    return dut.backgrounds["isotp_tx"].result(60)


def _gaps(frames: list[Any]) -> list[float]:
    return [b.t - a.t for a, b in zip(frames, frames[1:])]


@must("M-7.4-5")
def test_M_7_4_5_sender_honours_bs_and_stmin(dut: Any, req: Req, tx: TxTimerResult) -> None:
    c = tx.cases.get("bs2_stmin20")
    req(c is not None and c.frames, f"the DESCRIBE answer did not start ({c.note if c else 'not run'})")
    cfs = c.cfs()
    req(c.complete, f"with BS 2, STmin 20 ms the answer stopped after {len(cfs)} of {tx.total_cfs} CFs")
    bad = early([f.t for f in cfs], 0.020, STMIN_TOL)
    req(not bad, f"STmin 20 ms: CFs {cfs[bad[0][0] - 1].data[0] & 0xF} and {cfs[bad[0][0]].data[0] & 0xF} only "
                 f"{1000 * bad[0][1]:.1f} ms apart" if bad else "")
    # never more than BS CFs between two FCs
    fc_times = [t for t, _ in c.fcs]
    for k, t in enumerate(fc_times):
        nxt = fc_times[k + 1] if k + 1 < len(fc_times) else float("inf")
        n = sum(1 for f in cfs if t < f.t < nxt)
        req(n <= 2, f"{n} CFs after one FC with BS 2 (the sender must wait for the next FC)")


@must("M-7.4-6")
def test_M_7_4_6_reserved_stmin_is_127ms(dut: Any, req: Req, tx: TxTimerResult) -> None:
    for name in ("stmin_0x80", "stmin_0xFA"):
        c = tx.cases.get(name)
        req(c is not None and c.frames, f"{name}: the DESCRIBE answer did not start")
        first3 = c.cfs()[:3]
        req(len(first3) == 3, f"{name}: {len(first3)} CFs after FC BS 3")
        bad = early([f.t for f in first3], 0.127, 0.002)
        req(not bad, f"FC with STmin {name[6:]} (reserved): CFs {1000 * bad[0][1]:.1f} ms apart, must be >= 127 ms"
            if bad else "")
    c = tx.cases.get("stmin_0xF5")
    if c is not None and len(c.cfs()) >= 3:
        for g in _gaps(c.cfs()[:3]):
            req(g >= 0.0005 - 0.0002, f"FC with STmin 0xF5 (500 us): CFs {1e6 * g:.0f} us apart")


@must("M-7.4-10")
def test_M_7_4_10_wait_overflow_and_bad_status(dut: Any, req: Req, tx: TxTimerResult) -> None:
    c = tx.cases.get("wait_restarts_nbs")
    req(c is not None and c.frames, "the DESCRIBE answer did not start")
    req(c.complete, f"FC WAIT at 0.7 s and 1.4 s, CTS at 2.1 s: the sender must restart N_Bs on each WAIT and send "
                    f"its CFs, it sent {len(c.cfs())} of {tx.total_cfs}")
    for name, what in (("eleven_waits", "13 consecutive FC WAIT (more than N_WFTmax 10)"),
                       ("overflow", "FC OVFLW"), ("undefined_fs", "an FC with the undefined flow status 5")):
        c = tx.cases.get(name)
        req(c is not None and c.frames, f"{name}: the DESCRIBE answer did not start")
        last_fc = c.fcs[-1][0]
        late = c.cfs_after(c.fcs[-2][0] if len(c.fcs) > 1 else last_fc)
        req(not late, f"after {what} the sender must abort, but {len(late)} CF(s) followed the CTS sent after it")


@must("M-7.4-11")
def test_M_7_4_11_timers_applied(dut: Any, req: Req, tx: TxTimerResult) -> None:
    c = tx.cases.get("fc_after_1.3s")
    req(c is not None and c.frames, "the DESCRIBE answer did not start")
    req(not c.cfs(), f"N_Bs: an FC 1.3 s after the first frame came after the sender's timeout (1000 ms), but "
                     f"{len(c.cfs())} CF(s) followed it")
    rx = dut.backgrounds["isotp_rx"].result(30)
    req(not rx.error, rx.error)
    req(rx.answered_after_long_pause is None, f"N_Cr: CFs sent {rx.pause_late} s after the flow control must find the "
                                              f"reception aborted, the message was answered {show(rx.answered_after_long_pause)}")
