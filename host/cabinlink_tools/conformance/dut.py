"""The device under test as the accessory tests see it: one per pytest session.

:class:`Dut` starts the target, joins its links (the suite claims car address 0x00 on CAN
and keeps a heartbeat going; on BLE it connects as a GATT client), finds the accessory
(its NAME and address from the address claims, its declaration from DESCRIBE) and offers:

- :meth:`Dut.session` the main session (CAN when the target has CAN, else BLE);
- :meth:`Dut.peer` further car addresses, for tests that need several sessions;
- :meth:`Dut.ble` the BLE session, connected on first use;
- :attr:`Dut.declaration` the DESCRIBE answer read against the registry;
- background scenarios (:meth:`Dut.background`) that run while other tests run, for the
  requirements that need seconds of waiting (liveness, ISO-TP timers);
- :meth:`Dut.restart` a power cycle where the target can do one.

Everything the accessory sent stays in the logs (``probe.frames``, the sessions' messages),
so requirements about "every message" are checked over the whole run.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from cabinlink import claim, msg
from cabinlink import registry as reg

from .ble_probe import Advert, BleSession
from .can_probe import CanProbe, CarPeer, Frame, Message, Sent, request_info
from .model import Declaration
from .session import BleLinkSession, CanSession, Session
from .targets import AccessoryTarget

MAIN_ADDRESS = 0x00
CLAIM_PF = 0xEE


class SetupError(RuntimeError):
    pass


class Background:
    """A scenario running in its own thread; :meth:`result` waits for it."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.name = name
        self.value: Any = None
        self.error: BaseException | None = None
        self.tb = ""
        self._thread = threading.Thread(target=self._run, args=(fn,), name=f"scenario {name}", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001 - reported by the verdict test
            self.error = e
            self.tb = traceback.format_exc()

    def result(self, timeout: float = 60.0) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"scenario {self.name} did not finish within {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"scenario {self.name} failed:\n{self.tb}") from self.error
        return self.value


class Dut:
    """The accessory under test and the suite's links to it."""

    def __init__(self, target: AccessoryTarget) -> None:
        self.target = target
        self.probe: CanProbe | None = None
        self.main: CanSession | None = None
        self.name: int | None = None
        self.first_addr: int | None = None
        self.declaration: Declaration | None = None
        self.describe_raw: bytes = b""
        self.backgrounds: dict[str, Background] = {}
        self.boot_marks: list[int] = []  # frame index where each observed boot starts
        self._ble: BleLinkSession | None = None
        self._central: Any = None
        self.advert: Advert | None = None
        self.ble_sessions: list[BleLinkSession] = []
        self.peers: dict[int, CanSession] = {}
        self.retired: list[CanSession] = []
        self.notes: list[str] = []
        # when tests ran that failed and passed on a second attempt: their first attempt's
        # requests may have gone unanswered (a frame lost on the way)
        self.lossy: list[tuple[float, float]] = []
        self.restarts = 0
        self._cache: dict[str, tuple[Any, BaseException | None]] = {}
        self._snap: tuple[dict[int, int], tuple[int, int]] | None = None
        self._snap_any: dict[int, int] | None = None  # the latest reading, whoever took it
        self._cache_lock = threading.Lock()
        self._local = threading.local()  # a background scenario's own main session
        self.touched: set[str] = set()  # the observations the running test asked for
        self._running: dict[str, threading.Event] = {}

    # --- start-up ----------------------------------------------------------------------------
    def start(self) -> None:
        t = self.target
        t.prepare()
        if t.has_can:
            bus = t.can_bus()
            self.probe = CanProbe(bus)
            if t.can_power_cycle:  # the suite is on the bus before the unit is powered
                self.boot_marks.append(0)
        t.start()
        if self.probe is not None:
            peer = self.probe.add_peer(MAIN_ADDRESS)
            self.main = CanSession(self.probe, peer, lambda: self.addr)
            self.peers[MAIN_ADDRESS] = self.main
            self._find_on_can()
        s = self.session()
        d = s.ask(msg.describe, timeout=3.0)
        if d[2] != msg.OK or not isinstance(d[3] if len(d) > 3 else None, dict):
            raise SetupError(f"DESCRIBE answered {d!r}: the suite needs the description to go on")
        self.declaration = Declaration(d[3])
        last = next(m for m in reversed(s.messages) if m.is_result(d[1]))
        self.describe_raw = last.raw

    def _find_on_can(self) -> None:
        """The accessory's NAME and address, from its claim (spec 7.3): the first claim of an
        accessory NAME (function 0xC0-0xC3... any, bit 63 set) other than the suite's own."""
        assert self.probe is not None
        own = {p.name for p in self.probe.peers.values()}

        def found() -> tuple[int, int] | None:
            for f in self.probe.frames:  # type: ignore[union-attr]
                if f.pf == CLAIM_PF and f.ext and len(f.data) >= 8 and f.sa < claim.NULL and not f.own:
                    n = claim.name_of(f.data)
                    if n >> 63 and n not in own:
                        return f.sa, n
            return None

        hit = self.probe.wait(found, 3.0)
        if hit is None:
            self.probe.send(claim.request_id(claim.GLOBAL, MAIN_ADDRESS), b"\x00\xee\x00")
            hit = self.probe.wait(found, 5.0)
        if hit is None:
            raise SetupError("no accessory claimed an address on the bus (spec 7.3) within 8 s")
        self.first_addr, self.name = hit
        time.sleep(max(0.0, self.main.peer.ready_at - time.time()))  # type: ignore[union-attr]

    # --- addresses ----------------------------------------------------------------------------
    def claims(self, since: int = 0) -> list[Frame]:
        """Address Claimed frames carrying the accessory's NAME (any source address)."""
        assert self.probe is not None
        return [f for f in self.probe.frames[since:] if f.pf == CLAIM_PF and not f.own and len(f.data) >= 8
                and claim.name_of(f.data) == self.name]

    @property
    def addr(self) -> int:
        """The accessory's current address: the source of its latest claim (not 0xFE)."""
        if self.probe is None:
            raise RuntimeError("no CAN link")
        with self.probe.lock:
            for f in reversed(self.probe.frames):
                if f.pf == CLAIM_PF and not f.own and f.sa < claim.NULL and len(f.data) >= 8 \
                        and claim.name_of(f.data) == self.name:
                    return f.sa
        assert self.first_addr is not None
        return self.first_addr

    def held_addresses(self) -> list[tuple[int, float, float]]:
        """(address, from, until) for each stretch in which the accessory held an address,
        from its claims (the first one the suite saw counts from the start)."""
        out: list[tuple[int, float, float]] = []
        cur: int | None = self.first_addr
        since = 0.0
        for f in self.claims():
            if f.sa != cur:
                if cur is not None and cur < claim.NULL:
                    out.append((cur, since, f.t))
                cur, since = f.sa, f.t
        if cur is not None and cur < claim.NULL:
            out.append((cur, since, float("inf")))
        return out

    def acc_frames(self, since: int = 0, pred: Callable[[Frame], bool] | None = None) -> list[Frame]:
        """Frames the accessory sent (any of its addresses: the source address of a frame
        it sent after claiming, or 0xFE for Cannot Claim with its NAME)."""
        assert self.probe is not None
        addrs = {f.sa for f in self.claims()} | ({self.first_addr} if self.first_addr is not None else set())
        out = []
        with self.probe.lock:
            for f in self.probe.frames[since:]:
                if f.own or f.sa not in addrs and not (f.sa == claim.NULL and len(f.data) >= 8 and
                                                       claim.name_of(f.data) == self.name):
                    continue
                if pred is None or pred(f):
                    out.append(f)
        return out

    # --- sessions -----------------------------------------------------------------------------
    def session(self) -> Session:
        """The main session: CAN 0x00 when the target has CAN, else the BLE connection; in a
        background scenario that set one with :meth:`own_session`, that one."""
        own = getattr(self._local, "session", None)
        if own is not None:
            return own
        if self.main is not None:
            return self.main
        return self.ble()

    def own_session(self, s: Session | None) -> None:
        """Make ``s`` this thread's main session (:meth:`session`), and let
        :meth:`counters_exact` in this thread count only what this thread sent: for a
        background scenario whose inputs are the only ones that change the counters while
        it runs (the suite orders the tests so). None ends it."""
        self._local.session = s

    def peer(self, sa: int, *, claim_address: bool = True, heartbeat_s: float | None = 1.0,
             bs: int = 0, stmin: int = 0) -> CanSession:
        """Another car address of the suite (a new session at the accessory)."""
        if self.probe is None:
            raise RuntimeError("no CAN link")
        p: CarPeer = self.probe.add_peer(sa, claim_address=claim_address, heartbeat_s=heartbeat_s, bs=bs,
                                         stmin=stmin)
        s = CanSession(self.probe, p, lambda: self.addr)
        old = self.peers.get(sa)
        if old is not None:
            old.retired = time.time()
            self.retired.append(old)
        self.peers[sa] = s
        return s

    def all_sessions(self) -> list[Session]:
        """Every session the suite had with the accessory, the retired ones included."""
        return list(self.retired) + list(self.peers.values()) + list(self.ble_sessions)

    def ble_central(self) -> Any:
        if self._central is None:
            self._central = self.target.ble_central()
        return self._central

    def ble_connect(self, enable: bool = True, mtu: int | None = 247, label: str = "BLE") -> BleLinkSession:
        """A new BLE connection with its session (notifications enabled unless told not)."""
        central = self.ble_central()
        adv = central.scan(self.target.ble_match, timeout=30)
        self.advert = adv
        conn = central.connect(adv)
        if mtu:
            conn.exchange_mtu(mtu)
        rx_limit = self.declaration.max_rx if self.declaration else 512
        s = BleLinkSession(BleSession(conn, label, enable=enable, rx_limit=rx_limit))
        self.ble_sessions.append(s)
        return s

    def ble(self) -> BleLinkSession:
        """The suite's standing BLE session (connected, MTU 247, notifications on)."""
        if not self.target.has_ble:
            raise RuntimeError("no BLE link")
        if self._ble is None or not self._ble.s.conn.connected:
            self._ble = self.ble_connect()
        return self._ble

    def drop_ble(self) -> None:
        if self._ble is not None:
            try:
                self._ble.s.conn.disconnect()
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._ble = None

    # --- shared helpers -----------------------------------------------------------------------
    # observations a test that failed may ask for anew before its second attempt (they
    # only watch the unit; a frame lost, or timing blurred by a busy host, spoils one)
    REPLAYABLE = frozenset({"reporting", "stall", "events"})

    def cached(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` run once per session (an observation several tests judge, maybe begun in
        a background scenario: then this waits for it); an error is raised again to every
        test that asks."""
        self.touched.add(name)
        with self._cache_lock:
            ev = self._running.get(name)
            mine = ev is None and name not in self._cache
            if mine:
                ev = self._running[name] = threading.Event()
        if mine:
            try:
                self._cache[name] = (fn(), None)
            except Exception as e:  # noqa: BLE001
                self._cache[name] = (None, e)
            ev.set()
        elif ev is not None:
            ev.wait(120)
        value, err = self._cache[name]
        if err is not None:
            raise err
        return value

    def forget(self, names: set[str]) -> list[str]:
        """Drop the finished observations among ``names`` that may be made again
        (:attr:`REPLAYABLE`): the next :meth:`cached` runs them anew. Returns those dropped."""
        out = []
        with self._cache_lock:
            for n in sorted(names & self.REPLAYABLE):
                if n in self._cache:
                    del self._cache[n]
                    self._running.pop(n, None)
                    out.append(n)
        return out

    def background(self, name: str, fn: Callable[[], Any]) -> Background:
        b = self.backgrounds.get(name)
        if b is None:
            b = self.backgrounds[name] = Background(name, fn)
        return b

    def slot_of(self, cap_id: int) -> int | None:
        assert self.declaration is not None
        c = self.declaration.find(cap_id)
        return None if c is None else c.slot

    def info_slot(self) -> int:
        s = self.slot_of(reg.CAP_DEVICE_INFO)
        if s is None:
            raise SetupError("the accessory lists no device_info capability")
        return s

    def counter(self, attr: int, s: Session | None = None) -> int:
        """A device_info counter (spec 5.1: 10 rx_malformed, 11 rx_dropped, 12 events_dropped),
        after the accessory had time to mirror it (the reference node refreshes them about
        once a second, so the suite reads until the value has settled)."""
        s = s or self.session()
        return int(s.value(msg.read, self.info_slot(), attr))

    def wait_counter(self, attr: int, pred: Callable[[int], bool], timeout: float = 2.5,
                     s: Session | None = None) -> int:
        end = time.time() + timeout
        while True:
            v = self.counter(attr, s)
            if pred(v) or time.time() > end:
                return v
            time.sleep(0.1)

    def _inputs(self) -> tuple[int, int]:
        if getattr(self._local, "session", None) is not None and self.probe is not None:
            return (self.probe.inputs_of_thread(), 0)
        return (self.probe.inputs if self.probe else 0, sum(s.s.writes for s in self.ble_sessions))

    def counters_exact(self, reuse_any: bool = False) -> dict[int, int]:
        """device_info's counters (10 rx_malformed, 11 rx_dropped, 12 events_dropped) with
        everything the suite sent so far counted. The accessory refreshes them at its own
        pace (the reference node once a second, together with uptime_s), so the suite
        waits for the next refresh: uptime_s changes. Reused while the suite (in a thread
        with :meth:`own_session`: that thread) sent nothing; ``reuse_any``: the latest
        reading, whenever and by whichever thread it was taken, if there is one."""
        marker = self._inputs()
        if reuse_any and self._snap_any is not None:
            return self._snap_any
        snap = getattr(self._local, "snap", None) if getattr(self._local, "session", None) is not None else self._snap
        if snap is not None and snap[1] == marker:
            return snap[0]
        s = self.session()
        info = self.info_slot()
        u0 = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_UPTIME_S)
        end = time.time() + 2.5
        while s.value(msg.read, info, reg.ATTR_DEVICE_INFO_UPTIME_S) == u0 and time.time() < end:
            time.sleep(0.05)
        vals = {a: int(s.value(msg.read, info, a)) for a in (reg.ATTR_DEVICE_INFO_RX_MALFORMED,
                                                              reg.ATTR_DEVICE_INFO_RX_DROPPED,
                                                              reg.ATTR_DEVICE_INFO_EVENTS_DROPPED)}
        if getattr(self._local, "session", None) is not None:
            self._local.snap = (vals, self._inputs())
        else:
            self._snap = (vals, self._inputs())
        self._snap_any = vals
        return vals

    def restart(self) -> str:
        """Restart the accessory: a power cycle where the target can (simulation), else the
        device_info.reboot command. Returns how. Waits until it answers again."""
        mark = len(self.probe.frames) if self.probe else 0
        if self.target.can_power_cycle:
            how = "power cycle"
            self.target.power_cycle()
        else:
            how = "device_info.reboot"
            r = self.session().ask(msg.invoke, self.info_slot(), reg.CMD_DEVICE_INFO_REBOOT)
            if r[2] != msg.OK:
                raise SetupError(f"device_info.reboot answered {r!r}")
        self.restarts += 1
        if self.probe is not None:
            self.boot_marks.append(mark)
            ok = self.probe.wait(lambda: self.claims(mark), 10.0)
            if not ok:
                raise SetupError("the accessory did not claim an address after its restart")
            time.sleep(0.3)
        else:
            self.drop_ble()
            time.sleep(1.0)
        end = time.time() + 10
        s = self.session()
        while True:
            tid = s.next_tid()
            r = s.request(msg.hello(tid), tid, timeout=1.0, again=False)
            if r is not None and r[2] == msg.OK:
                break
            s.unanswerable.add(tid)  # sent while it was still starting
            if time.time() > end:
                raise SetupError("the accessory did not answer HELLO within 10 s of its restart")
        return how

    def sent_by(self, s: Session) -> list[Sent]:
        """What one session of the suite actually sent to the accessory, as the accessory
        could take it: on CAN reassembled from the suite's own frames on the bus (single
        frames, and first frames with their consecutive frames in sequence, each within N_Cr
        of the frame before it or of the accessory's flow control), on
        BLE from the fragments written (the core reassembler, as the accessory runs it)."""
        if s.transport == "ble":
            return list(s.sent)
        assert self.probe is not None
        sa = s.peer.sa
        held = self.held_addresses()

        def is_acc(ta: int, t: float) -> bool:
            return any(a == ta and t0 <= t <= t1 for a, t0, t1 in held)

        out: list[Sent] = []
        rx: dict[int, tuple[bytearray, int, int, float]] = {}  # prio -> buffer, length, next SN, last t
        def own_isotp(f: Frame) -> bool:  # the session's frames to the accessory (or to all)
            return f.own and f.sa == sa and (f.pf == 0xDA and is_acc(f.ta, f.t) or
                                             f.pf == 0xDB and (f.ta == 0xFF or is_acc(f.ta, f.t)))

        def acc_flow_control(f: Frame) -> bool:
            return not f.own and f.ta == sa and f.pf == 0xDA and f.data[0] >> 4 == 3 and is_acc(f.sa, f.t)

        with self.probe.lock:
            t0, t1 = s.born - 0.002, s.retired or float("inf")
            frames = [f for f in self.probe.frames if f.ext and not f.rtr and t0 <= f.t <= t1 and f.edp_dp == 0
                      and f.data and (own_isotp(f) or acc_flow_control(f))]
        for f in frames:
            k = f.data[0] >> 4
            if not f.own:  # the accessory's flow control: its N_Cr runs from here; an
                key = (f.prio << 8) | f.sa  # overflow status ends the reception
                if key in rx:
                    if f.data[0] & 0xF == 2:
                        del rx[key]
                    else:
                        rx[key] = rx[key][:3] + (f.t,)
                continue
            key = (f.prio << 8) | f.ta
            if k == 0:
                n = f.data[0] & 0xF
                rx.pop(key, None)
                if 0 < n <= 7 and len(f.data) > n:
                    raw = bytes(f.data[1:1 + n])
                    t, tid = request_info(raw)
                    out.append(Sent(f.t, raw, tid, t, f.ta))
            elif k == 1 and f.pf == 0xDA and len(f.data) == 8:
                n = ((f.data[0] & 0xF) << 8) | f.data[1]
                rx.pop(key, None)
                if n >= 8:
                    rx[key] = (bytearray(f.data[2:]), n, 1, f.t)
            elif k == 2 and key in rx:
                buf, n, sn, t_last = rx[key]
                if f.data[0] & 0xF != sn or f.t - t_last > 1.0:
                    del rx[key]  # a wrong sequence number or N_Cr ran out: the accessory aborted
                    continue
                buf.extend(f.data[1:1 + min(7, n - len(buf))])
                if len(buf) >= n:
                    raw = bytes(buf[:n])
                    t, tid = request_info(raw)
                    out.append(Sent(f.t, raw, tid, t, f.ta))
                    del rx[key]
                else:
                    rx[key] = (buf, n, (sn + 1) & 0xF, f.t)
        return out

    def begun_results(self, s: Session) -> set[int]:
        """tids of RESULTs the accessory began to send to this CAN session (a single frame or
        a first frame), completed or not (the suite cuts some short on purpose)."""
        out: set[int] = set()
        if s.transport != "can" or self.probe is None:
            return out
        t0, t1 = getattr(s, "born", 0.0) - 0.002, getattr(s, "retired", None) or float("inf")
        for f in self.acc_frames(0, lambda f: f.pf == 0xDA and f.ta == s.peer.sa and t0 <= f.t <= t1):
            k = f.data[0] >> 4 if f.data else -1
            p = f.data[1:1 + (f.data[0] & 0xF)] if k == 0 else f.data[2:8] if k == 1 else b""
            if len(p) >= 3 and p[0] in (0x83, 0x84) and p[1] == msg.RESULT:
                h = p[2]
                if h < 24:
                    out.add(h)
                elif h == 0x18 and len(p) >= 4:
                    out.add(p[3])
                elif h == 0x19 and len(p) >= 5:
                    out.add((p[3] << 8) | p[4])
        return out

    def frames_near(self, s: Session, t: float, before: float = 0.3) -> list[str]:
        """The CAN frames between the suite address of ``s`` and anyone in the ``before``
        seconds up to ``t`` (own frames marked '>'), for failure messages."""
        if s.transport != "can" or self.probe is None:
            return []
        sa = s.peer.sa
        with self.probe.lock:
            return [f"{'>' if f.own else '<'}{1000 * (f.t - t):+.1f} ms {f.can_id:08X} {f.data.hex(' ').upper()}"
                    for f in self.probe.frames if t - before <= f.t <= t + 0.001 and f.ext
                    and f.pf in (0xDA, 0xDB) and sa in (f.sa, f.ta)]

    def pairs(self, s: Session) -> tuple[list[tuple[Sent, Message]], list[Sent], list[Message]]:
        """Requests of one session matched with their RESULTs: each RESULT goes with the
        latest unanswered request of its tid sent before it. Returns (pairs, requests left
        unanswered, RESULTs that match no request)."""
        pending: dict[int, list[Sent]] = {}
        events: list[tuple[float, int, Any]] = []
        for x in self.sent_by(s):
            if x.tid is not None:
                events.append((x.t, 0, x))
        for m in s.messages:
            if m.is_result():
                events.append((m.t, 1, m))
        events.sort(key=lambda e: (e[0], e[1]))
        pairs: list[tuple[Sent, Message]] = []
        stray: list[Message] = []
        for t, kind, obj in events:
            if kind == 0:
                pending.setdefault(obj.tid, []).append(obj)
            else:
                q = pending.get(obj.value[1])
                if q:
                    pairs.append((q.pop(), obj))
                else:
                    stray.append(obj)
        left = [x for q in pending.values() for x in q]
        return pairs, left, stray

    def all_messages(self) -> list[Message]:
        out: list[Message] = []
        for s in self.all_sessions():
            out.extend(s.messages)
        return out

    def close(self) -> None:
        for b in self.backgrounds.values():
            b._thread.join(0.1)
        if self._central is not None:
            try:
                self._central.close()
            except Exception:  # noqa: BLE001
                pass
        if self.probe is not None:
            self.probe.close()
            try:
                self.probe.bus.shutdown()
            except Exception:  # noqa: BLE001
                pass
        self.target.close()
