"""Background scenarios: what needs seconds of real time runs in its own thread from the
start of the session, while the quick tests run; verdict tests read the results later.

- ``liveness`` (spec 6.6, 7.6-3, 2.3-4): a silent car and a car heard only every 2.7 s, each
  with a subscription reporting every second: the first session must end between 3 and
  about 3.5 s after the car was last heard, the second must live on.
- ``isotp_rx`` (7.4-11, 2.3-4): the accessory as ISO-TP receiver: a CF that comes 0.9 s after
  the flow control must still be taken, one that comes after 1.3 s must not (N_Cr).
- ``isotp_tx`` (7.4-5, 7.4-6, 7.4-10, 7.4-11): the accessory as sender of a multi-frame
  DESCRIBE answer to a car that plays the flow control by hand: block size and STmin,
  reserved STmin values, FC WAIT (restarting N_Bs; more than N_WFTmax), OVFLW, an undefined
  flow status, N_Bs expiry and not before.

Each scenario uses its own car address (or its own priority) so that it cannot disturb the
main session, and only well-formed messages, so that counters read by other tests stay
exact. The suite keeps at most four CAN sessions open at once (the spec's minimum, 5.3)
while these run: main 0x00, 0x0C, 0x0D, 0x0E.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cabinlink import isotp, msg
from cabinlink import registry as reg
from cabinlink.codec import encode

from .can_probe import PAD, Frame
from .check import early

SILENT, KEEPALIVE, TX_PEER = 0x0E, 0x0D, 0x0C
# How much shorter than STmin 20 ms a gap between two CFs may look on the bus: a CF that
# waited (for the bus, or on a busy simulation host, for the SPI controller) shortens the next
# gap. A sender that ignores STmin or halves it is still far outside.
STMIN_TOL = 0.004
RX_PRIO = 7  # the receive-timer scenario uses the main address on priority 7
KEEP_EVERY = 2.7


def sf(payload: bytes, pad: bool = True) -> bytes:
    d = bytes([len(payload)]) + payload
    return d + bytes([PAD] * (8 - len(d))) if pad else d


def ff(total: int, first: bytes) -> bytes:
    return bytes([0x10 | (total >> 8), total & 0xFF]) + first[:6]


def cf(sn: int, chunk: bytes, pad: bool = True) -> bytes:
    d = bytes([0x20 | (sn & 0xF)]) + chunk
    return d + bytes([PAD] * (8 - len(d))) if pad and len(d) < 8 else d


def fc(fs: int, bs: int = 0, stmin: int = 0) -> bytes:
    return bytes([0x30 | fs, bs, stmin]) + bytes([PAD] * 5)


def segments(data: bytes) -> tuple[bytes, list[bytes]]:
    """An ISO-TP message of >= 8 bytes as its FF and its CFs (padded)."""
    first = ff(len(data), data[:6])
    rest = data[6:]
    return first, [cf(i + 1, rest[k:k + 7]) for i, k in enumerate(range(0, len(rest), 7))]


def padded_read(tid: int, slot: int, attr: int, size: int) -> bytes:
    """A READ whose trailing elements (ignored by 5.1) make it exactly ``size`` bytes long."""
    for extra in ([], [0], [0, 0]):
        for n in range(0, size):
            m = encode([msg.READ, tid, slot, attr] + extra + [b"x" * n])
            if len(m) == size:
                return m
            if len(m) > size:
                break
    raise ValueError(f"cannot pad a READ to {size} bytes")


# --- liveness ----------------------------------------------------------------------------------
@dataclass
class LivenessResult:
    silent_last_heard: float = 0.0
    silent_reports: list[float] = field(default_factory=list)
    keep_heard: list[float] = field(default_factory=list)
    keep_reports: list[float] = field(default_factory=list)
    end: float = 0.0
    subscribed: dict[str, Any] = field(default_factory=dict)


def liveness(d: Any) -> LivenessResult:
    probe = d.probe
    info = d.info_slot()
    out = LivenessResult()
    silent = d.peer(SILENT, claim_address=False, heartbeat_s=None)
    keep = d.peer(KEEPALIVE, claim_address=False, heartbeat_s=None)
    for name, s in (("silent", silent), ("keep", keep)):
        r = s.ask(msg.subscribe, info, reg.ATTR_DEVICE_INFO_HEALTH, 0, 1)
        out.subscribed[name] = r
    t0 = time.time()
    # Each car's words are requests, not heartbeats: their RESULTs prove the accessory heard
    # them (a controller with two receive buffers may drop a frame now and then; a request
    # that got no answer is repeated, as a car does).
    heard = {"silent": [], "keep": []}

    def word(name: str, s: Any) -> None:
        m = s.mark()
        r = s.ask(msg.read, info, reg.ATTR_DEVICE_INFO_HEALTH)
        res = next((x for x in s.since(m) if x.is_result(r[1])), None)
        heard[name].append(res.t if res is not None else time.time())

    # The silent car's last word comes about 0.45 s after one of its REPORTs, so that the
    # REPORTs before the session ends fall near 0.55, 1.55 and 2.55 s after it, clear of the
    # 3000 ms timeout, whatever the subscription's phase.
    rep = silent.wait(lambda: silent.reports(0, info, reg.ATTR_DEVICE_INFO_HEALTH), 2.5)
    time.sleep(max(0.0, (rep[-1].t if rep else time.time()) + 0.45 - time.time()))
    word("silent", silent)  # the silent car's last word
    for k in range(3):
        time.sleep(max(0.0, t0 + 0.65 + k * KEEP_EVERY - time.time()))
        word("keep", keep)
    time.sleep(max(0.0, t0 + 7.2 - time.time()))
    with probe.lock:
        out.silent_last_heard = heard["silent"][-1]
        out.keep_heard = [t0] + heard["keep"]
        out.silent_reports = [m.t for m in silent.reports(0, info, reg.ATTR_DEVICE_INFO_HEALTH)]
        out.keep_reports = [m.t for m in keep.reports(0, info, reg.ATTR_DEVICE_INFO_HEALTH)]
        out.end = probe.last_t
    keep.ask(msg.unsubscribe, info, reg.ATTR_DEVICE_INFO_HEALTH)
    keep.peer.stop()
    return out


# --- the accessory as ISO-TP receiver ---------------------------------------------------------------
@dataclass
class RxTimerResult:
    pause_ok: float = 0.9
    pause_late: float = 1.3
    answered_after_short_pause: list[Any] | None = None
    answered_after_long_pause: list[Any] | None = None
    fc_seen: list[bytes] = field(default_factory=list)
    error: str = ""
    retried: int = 0


def isotp_rx(d: Any) -> RxTimerResult:
    out = RxTimerResult()
    main = d.main
    probe = d.probe
    acc = d.addr
    cap = main.peer.capture(RX_PRIO, acc)
    send_id = isotp.phys_id(RX_PRIO, acc, main.peer.sa)

    def play(pause: float) -> tuple[bool, Any]:
        """One padded READ sent as FF + CFs, the CFs ``pause`` s after the FC. Returns
        (the FC came, the RESULT's value or None)."""
        tid = main.next_tid()
        data = padded_read(tid, d.info_slot(), reg.ATTR_DEVICE_INFO_VENDOR, 20)
        first, cfs = segments(data)
        n = len(cap)
        mark = main.mark()
        probe.send(send_id, first)
        if not probe.wait(lambda: len(cap) > n, 1.0):
            main.unanswerable.add(tid)
            return False, None
        fc0 = cap[n]
        out.fc_seen.append(fc0.data)
        time.sleep(pause)  # N_Cr runs from the FC to the first CF
        bs = fc0.data[1]
        i = 0
        seen = len(cap)
        while i < len(cfs):
            block = cfs[i:i + bs] if bs else cfs[i:]
            for c in block:
                probe.send(send_id, c)
            i += len(block)
            if i < len(cfs):  # the next block waits for the receiver's FC
                if not probe.wait(lambda: len(cap) > seen, 0.3):
                    break
                seen = len(cap)
        r = main.result(tid, 1.0, mark)
        if r is None:
            main.unanswerable.add(tid)
        return True, None if r is None else r.value

    try:
        # A frame the accessory lost (two receive buffers) looks like a timer that ran out
        # too early: the case that must be answered is played up to three times.
        for pause, attr, want in ((out.pause_ok, "answered_after_short_pause", True),
                                  (out.pause_late, "answered_after_long_pause", False)):
            played = False
            for k in range(3):
                if k:
                    out.retried += 1
                fc_came, value = play(pause)
                if not fc_came:
                    continue
                played = True
                setattr(out, attr, value)
                if value is not None or not want:
                    break
            if not played:
                out.error = "no flow control after a first frame on priority 7 (three tries)"
                return out
    finally:
        main.peer.release(RX_PRIO, acc)
    if out.retried:
        d.notes.append(f"ISO-TP receiver timing (N_Cr) played {out.retried} more time(s) after a frame was lost")
    return out


# --- the accessory as ISO-TP sender ------------------------------------------------------------
@dataclass
class TxCase:
    """One DESCRIBE answer played by hand: the frames that came back and when."""

    name: str
    frames: list[Frame] = field(default_factory=list)
    fcs: list[tuple[float, bytes]] = field(default_factory=list)  # (time sent, FC)
    complete: bool = False
    note: str = ""

    def cfs(self) -> list[Frame]:
        return [f for f in self.frames if f.data and f.data[0] >> 4 == 2]

    def cfs_after(self, t: float) -> list[Frame]:
        return [f for f in self.cfs() if f.t > t]


ABORTED = {"fc_after_1.3s", "eleven_waits", "overflow", "undefined_fs"}


@dataclass
class TxTimerResult:
    cases: dict[str, TxCase] = field(default_factory=dict)
    total_cfs: int = 0
    error: str = ""
    retried: list[str] = field(default_factory=list)


def isotp_tx(d: Any) -> TxTimerResult:
    out = TxTimerResult()
    probe = d.probe
    peer = d.peer(TX_PEER, heartbeat_s=1.0)
    time.sleep(max(0.0, peer.peer.ready_at - time.time()))
    acc = d.addr
    cap = peer.peer.capture(6, acc)
    to_acc = isotp.phys_id(6, acc, TX_PEER)
    n_total = (len(d.describe_raw) - 6 + 6) // 7  # CFs of the DESCRIBE answer
    out.total_cfs = n_total

    def start(name: str) -> TxCase | None:
        case = out.cases[name] = TxCase(name)
        case._fi = len(probe.frames)  # type: ignore[attr-defined]
        i = len(cap)
        tid = peer.next_tid()
        if name in ABORTED:
            peer.unanswerable.add(tid)  # its answer is cut short on purpose
        probe.send(to_acc, sf(encode(msg.describe(tid))))
        if not probe.wait(lambda: len(cap) > i and cap[i].data[:1] and cap[i].data[0] >> 4 == 1, 1.5):
            case.note = "no first frame"
            peer.unanswerable.add(tid)  # lost on the way: the case is played again
            return None
        case.frames = cap  # shared list; sliced at the end
        case._from = i  # type: ignore[attr-defined]
        return case

    def send_fc(case: TxCase, fs: int, bs: int = 0, stmin: int = 0) -> None:
        probe.send(to_acc, fc(fs, bs, stmin))

    def finish(case: TxCase | None, settle: float) -> None:
        if case is None:
            return
        time.sleep(settle)
        with probe.lock:
            case.frames = list(cap[case._from:])  # type: ignore[attr-defined]
            # the FCs as they went on the bus (their echoes), in the bus's time base
            case.fcs = [(f.t, f.data) for f in probe.frames[case._fi:]  # type: ignore[attr-defined]
                        if f.own and f.can_id == to_acc and f.data and f.data[0] >> 4 == 3]
        case.complete = len(case.cfs()) >= n_total

    def wait_cfs(case: TxCase, k: int, timeout: float) -> bool:
        base = case._from  # type: ignore[attr-defined]
        return bool(probe.wait(lambda: sum(1 for f in cap[base:] if f.data[0] >> 4 == 2) >= k, timeout))

    def attempts(name: str, body: Callable[[TxCase], None], ok: Callable[[TxCase], bool], n: int = 3) -> None:
        # A frame lost on the way (a controller with two receive buffers drops one now and
        # then) looks like a fault: a flow control not heard, a request never answered. A
        # case that did not go as the spec says is played again, up to n times; the last
        # one is judged. A unit that gets it wrong gets it wrong every time.
        for k in range(n):
            if k:
                out.retried.append(name)
            c = start(name)
            if c is None:
                continue
            body(c)
            if ok(c):
                return
            if name not in ABORTED:
                peer.unanswerable.add(peer.peer._tid)  # that answer never came whole

    def complete(c: TxCase) -> bool:
        return c.complete

    def cut_short(c: TxCase) -> bool:
        # an aborted case: no CF after the flow control that ends the transfer (the one
        # before the final CTS; the only one when the FC came too late), as test_isotp judges
        if not c.fcs:
            return False
        return not c.cfs_after(c.fcs[-2][0] if len(c.fcs) > 1 else c.fcs[-1][0])

    # block size 2, STmin 20 ms, renewed after each block (7.4-5): after odd blocks the FC
    # comes 50 ms late (the sender must wait for it), after even ones at once (STmin still
    # separates the blocks).
    def block_fc(c: TxCase, got: int) -> None:
        # the FC for the next block; sent once more when no CF follows within 150 ms (the
        # unit did not hear it: with eleven FCs per answer, one is lost now and then). A
        # second CTS that did arrive is taken as the FC of the block after (never more than
        # BS CFs follow one FC: test_isotp checks that).
        for _ in range(3):
            send_fc(c, 0, 2, 20)
            if wait_cfs(c, got + 1, 0.15):
                return

    def bs2(c: TxCase) -> None:
        got = 0
        blocks = 0
        block_fc(c, got)
        while got < n_total:
            if not wait_cfs(c, min(got + 2, n_total), 1.5):
                break
            got = min(got + 2, n_total)
            blocks += 1
            if got < n_total:
                if blocks % 2:
                    time.sleep(0.05)
                block_fc(c, got)
        finish(c, 0.05)

    def bs2_ok(c: TxCase) -> bool:
        # complete, and STmin kept as seen on the bus (a CF that waited for the bus, or on a
        # busy simulation host, makes a gap look short: played again, up to three times)
        return c.complete and not early([f.t for f in c.cfs()], 0.020, STMIN_TOL)

    attempts("bs2_stmin20", bs2, bs2_ok)

    # reserved STmin 0x80 and 0xFA: 127 ms (7.4-6); 0xF5: 500 us
    for name, st in (("stmin_0x80", 0x80), ("stmin_0xFA", 0xFA), ("stmin_0xF5", 0xF5)):
        def stmin_case(c: TxCase, st: int = st) -> None:
            send_fc(c, 0, 3, st)
            wait_cfs(c, 3, 1.5)
            time.sleep(0.02)
            send_fc(c, 0, 0, 0)
            wait_cfs(c, n_total, 1.5)
            finish(c, 0.02)

        def stmin_ok(c: TxCase, st: int = st) -> bool:
            first3 = [f.t for f in c.cfs()[:3]]
            if st == 0xF5:
                return c.complete and all(b - a >= 0.0003 for a, b in zip(first3, first3[1:]))
            return c.complete and not early(first3, 0.127, 0.002)

        attempts(name, stmin_case, stmin_ok)

    # N_Bs: the FC 0.9 s after the FF still works; after 1.3 s the sender gave up (7.4-11)
    def late_fc(c: TxCase) -> None:
        time.sleep(0.9)
        send_fc(c, 0)
        wait_cfs(c, n_total, 1.5)
        finish(c, 0.02)

    attempts("fc_after_0.9s", late_fc, complete)

    def too_late(c: TxCase) -> None:
        time.sleep(1.3)
        send_fc(c, 0)
        finish(c, 0.3)

    attempts("fc_after_1.3s", too_late, cut_short, 2)

    # FC WAIT restarts N_Bs: WAITs at 0.7 and 1.4 s, CTS at 2.1 s (7.4-10)
    def waits(c: TxCase) -> None:
        for _ in range(2):
            time.sleep(0.7)
            send_fc(c, 1)
        time.sleep(0.7)
        send_fc(c, 0)
        wait_cfs(c, n_total, 1.5)
        finish(c, 0.02)

    attempts("wait_restarts_nbs", waits, complete)
    # more than N_WFTmax = 10 WAITs, OVFLW, an undefined flow status: the sender aborts
    # (13 WAITs: more than 10 reach it even if a frame or two are lost on the way)
    for name, statuses in (("eleven_waits", [1] * 13), ("overflow", [2]), ("undefined_fs", [5])):
        def bad_fc(c: TxCase, statuses: list[int] = statuses) -> None:
            for fs in statuses:
                send_fc(c, fs)
                time.sleep(0.01)
            send_fc(c, 0)
            finish(c, 0.3)

        attempts(name, bad_fc, cut_short, 2)
    peer.peer.release(6, acc)
    d.probe.remove_peer(TX_PEER)
    if out.retried:
        d.notes.append(f"ISO-TP sender cases (7.4) played again (a frame lost on the way, or a gap the bus or a busy "
                       f"host shortened): {', '.join(out.retried)}")
    return out


def start_background(d: Any) -> None:
    """Start the scenarios that apply to the target (CAN ones need the CAN link)."""
    if d.probe is None:
        return
    d.probe.quiet_sa |= {SILENT, KEEPALIVE, TX_PEER}
    d.probe.quiet_prio.add(RX_PRIO)
    # staggered, so their first frames do not all reach the accessory at once
    live = d.background("liveness", lambda: liveness(d))
    d.background("isotp_rx", lambda: (time.sleep(0.4), isotp_rx(d))[1])
    d.background("isotp_tx", lambda: (time.sleep(0.8), isotp_tx(d))[1])

    # once the liveness cars are gone: the reporting rule (car addresses 0x02 and 0x03) and,
    # next to it, the stalled connection (0x0B); test_subscriptions judges them
    from .tests.test_subscriptions import SECOND, STALL, THIRD, observe, stall_result

    d.probe.quiet_sa |= {SECOND, THIRD, STALL}
    d.background("phase2", lambda: (live._thread.join(60), d.cached("reporting", lambda: observe(d)))[1])
    d.background("stall", lambda: (live._thread.join(60), time.sleep(0.2), stall_result(d))[2])


class RawConn:
    """One ISO-TP connection played by hand: frames from car address ``sa`` to the
    accessory on priority ``prio``, and the accessory's frames back (captured)."""

    def __init__(self, d: Any, sa: int, prio: int) -> None:
        self.d = d
        self.probe = d.probe
        self.sa = sa
        self.prio = prio
        self.session = d.peers.get(sa) or d.peer(sa)
        time.sleep(max(0.0, self.session.peer.ready_at - time.time()))
        self.acc = d.addr
        self.cap = self.session.peer.capture(prio, self.acc)
        self.to_acc = isotp.phys_id(prio, self.acc, sa)

    def send(self, data: bytes) -> None:
        self.probe.send(self.to_acc, data)

    def mark(self) -> int:
        return len(self.cap)

    def wait_frame(self, since: int, kind: int | None = None, timeout: float = 1.0) -> Frame | None:
        """The first captured frame from index ``since`` (of PCI type ``kind``: 0 SF, 1 FF,
        2 CF, 3 FC), waiting up to ``timeout`` s."""
        def find() -> Frame | None:
            for f in self.cap[since:]:
                if kind is None or (f.data and f.data[0] >> 4 == kind):
                    return f
            return None

        return self.probe.wait(find, timeout)

    def send_message(self, data: bytes, pad: bool = True, fc_timeout: float = 1.0) -> str:
        """Send ``data`` (>= 8 bytes) as FF + CFs, honouring the accessory's flow control
        (BS, STmin, WAIT). Returns "" or what went wrong."""
        first, cfs = segments(data)
        if not pad:
            cfs = [c.rstrip(bytes([PAD])) if i == len(cfs) - 1 else c for i, c in enumerate(cfs)]
        m = self.mark()
        self.send(first)
        i = 0
        while i < len(cfs):
            f = self.wait_frame(m, 3, fc_timeout)
            if f is None:
                return f"no flow control after {i} CFs"
            m = self.cap.index(f) + 1
            fs, bs, st = f.data[0] & 0xF, f.data[1], f.data[2]
            if fs == 1:
                continue
            if fs != 0:
                return f"flow status {fs}"
            gap = isotp.stmin_ms(st) / 1000
            n = bs or len(cfs)
            for c in cfs[i:i + n]:
                self.send(c)
                time.sleep(gap + 0.0005)
            i += n
        return ""

    def close(self) -> None:
        self.session.peer.release(self.prio, self.acc)
