"""The car's protocol engine: sessions, requests and liveness, synchronous and poll-driven.

The engine is the car side of spec sections 5, 6, 7.3, 7.6 and 8 above the transports. It
owns no I/O and no event loop: links hand it whole messages (``can_receive``,
``ble_receive``), address claims (``can_claim``) and connections; it sends through them;
``poll()`` (every few ms) runs its timers on the injected clock (``ticks_ms`` semantics,
spec 2.3). The async :class:`~cabinlink_tools.car.car.Car` runs it in its event loop.

Per accessory it keeps one request queue with at most one request outstanding (spec 5.2),
and runs the **bring-up** of a session: HELLO (M-5.3-8), DESCRIBE when the accessory may
have restarted, the policy writes (``clamp.vehicle_moving``), then a SUBSCRIBE for every
wanted attribute; when all are answered the accessory is **ready**. The bring-up runs again
whenever the session may have been lost (M-6.6-4): after the accessory was offline and is
heard again, when it claims its own address again (restart or bus-off, M-7.3-7), when its
heartbeat uptime goes backwards (5.10), after every BLE connection, and when a subscribed
attribute stays silent past its ceiling.

**Passive mode** (replay of a recorded bus): the engine sends nothing. The car's own
recorded requests are *observed* (``can_observe_sent``) and matched to their RESULTs by tid,
so the same code turns the same bus traffic into the same events as live.

Contract: malformed input from a link never raises; it is dropped and counted in
``malformed``. RESULTs whose tid matches no outstanding request are ignored (M-5.2-4); so are
REPORTs and EVENTs for slots or members the car does not know (M-5.8-2, M-5.9-1), and
message types the car does not receive (5.1 case 5).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cabinlink import claim, msg
from cabinlink.codec import ProtocolError, encode

from .. import catalog
from .accessory import HISTORY, Accessory, SubSpec
from .model import Description, DescriptionError, format_event_data, format_value

log = logging.getLogger(__name__)

OFFLINE_MS = 3000  # spec 7.6: offline after more than 3000 ms without a message
REQUEST_TIMEOUT_MS = 2000  # spec 5.2 (SHOULD)
CLAIM_ANSWER_MS = 250  # claims this soon after a Request for Address Claimed are answers
UNKNOWN_CLAIM_EVERY_MS = 1000  # at most one Request per unknown address per second
RETRY_MS = 500  # a failed bring-up starts again after this
SILENT_GRACE_MS = 3000  # a subscription silent past max_s + this is lost
UPTIME_SLACK_S = 3  # heartbeat uptime this far below the expected value: a restart
# Frames from an address's previous owner may still arrive this long after another NAME
# claimed it: the loser gives the address up at once (M-7.3-3), so only what its controller
# had queued still goes out (at most a few ms). Far less than the settle time, since a
# winner that defended the address settles from its first claim, not from the defence.
IN_FLIGHT_MS = 50
_REQUESTS = (msg.HELLO, msg.DESCRIBE, msg.READ, msg.WRITE, msg.SUBSCRIBE, msg.UNSUBSCRIBE,
             msg.INVOKE)
_OP = {msg.HELLO: "hello", msg.DESCRIBE: "describe", msg.READ: "read", msg.WRITE: "write",
       msg.SUBSCRIBE: "subscribe", msg.UNSUBSCRIBE: "unsubscribe", msg.INVOKE: "invoke"}


class Clock(Protocol):
    def ticks_ms(self) -> int: ...
    def ticks_diff(self, a: int, b: int) -> int: ...


class Planner(Protocol):
    """What the car wants of an accessory, decided from its description (the bindings)."""

    def subscriptions(self, acc: Accessory) -> dict[tuple[int, int], SubSpec]: ...
    def setup_writes(self, acc: Accessory) -> dict[tuple[int, int], Any]: ...


class Sender(Protocol):
    """A link as the engine uses it (CanLink and the car's BLE link satisfy it)."""

    def send(self, peer: Any, data: bytes, urgent: bool = False) -> bool: ...


@dataclass
class Request:
    """One request: built by the engine, answered by one RESULT or failed by a timeout."""

    acc: Accessory
    kind: int
    args: list[Any]
    origin: str  # "bringup", "api", "binding", "policy", "observed"
    session: int
    timeout_ms: int
    on_done: list[Callable[[Request], None]] = field(default_factory=list)
    tid: int | None = None
    sent_at: int | None = None
    status: int | None = None
    value: Any = None
    done: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.status == msg.OK

    @property
    def message(self) -> list[Any]:
        return [self.kind, self.tid, *self.args]


Emit = Callable[[str, "Accessory | None", str, dict[str, Any]], None]


class NullPlanner:
    def subscriptions(self, acc: Accessory) -> dict[tuple[int, int], SubSpec]:
        return {}

    def setup_writes(self, acc: Accessory) -> dict[tuple[int, int], Any]:
        return {}


class CanSide:
    """The engine's endpoint on one CAN bus: what ``CanLink`` calls (``receive``,
    ``peer_lost``, ``poll``, ``heartbeat``) plus ``on_peer`` for its address claim."""

    def __init__(self, engine: Engine, index: int, link: Any | None) -> None:
        self.engine = engine
        self.index = index
        self.link = link  # CanLink, or None in passive mode
        self.car_address: int | None = None
        self.claims_requested_at: int | None = None
        self.unknown_asked: dict[int, int] = {}
        self.cars: dict[int, int] = {}  # address -> NAME of car nodes (bit 63 clear)
        # address -> (when, previous owner): a new NAME just claimed it; frames within
        # IN_FLIGHT_MS are the old owner's (the new one sends nothing but claims yet)
        self.settling: dict[int, tuple[int, Accessory]] = {}
        self.ready_reported = False

    # CanLink endpoint interface
    def receive(self, link: Any, peer: int, data: bytes | memoryview) -> None:
        try:
            self.engine.can_receive(self, peer, bytes(data))
        except Exception:  # noqa: BLE001 - never out into the link's receive path
            log.exception("car engine: message from 0x%02X", peer)

    def peer_lost(self, link: Any, peer: int) -> None:  # liveness is the engine's own
        pass

    def poll(self) -> None:  # the car polls the engine once for all links
        pass

    def heartbeat(self) -> bytes:
        return encode(msg.heartbeat(self.engine.uptime_s()))

    def on_peer(self, addr: int, name: int) -> None:
        self.engine.can_claim(self, addr, name)

    def send(self, peer: Any, data: bytes, urgent: bool = False) -> bool:
        return self.link is not None and bool(self.link.send(peer, data, urgent))


class Engine:
    """See the module text. ``emit(kind, acc, text, data)`` receives every event."""

    def __init__(self, clock: Clock, emit: Emit, planner: Planner | None = None,
                 passive: bool = False, request_timeout_ms: int = REQUEST_TIMEOUT_MS) -> None:
        self.clock = clock
        self.emit = emit
        self.planner: Planner = planner or NullPlanner()
        self.passive = passive
        self.request_timeout_ms = request_timeout_ms
        self.accessories: dict[str, Accessory] = {}
        self.sides: list[CanSide] = []
        self._by_addr: dict[tuple[int, int], Accessory] = {}
        self._t0 = clock.ticks_ms()
        self._uptime_ms = 0
        self._t_last = self._t0
        self.malformed = 0
        self.ignored = 0

    # --- time ----------------------------------------------------------------------------
    def now(self) -> int:
        return self.clock.ticks_ms()

    def seconds(self) -> float:
        """Seconds since the engine started (the events' ``t``), read from the clock now."""
        return (self._uptime_ms + max(0, self.clock.ticks_diff(self.now(), self._t_last))) / 1000.0

    def uptime_s(self) -> int:
        return self._uptime_ms // 1000

    def _since(self, t: int | None) -> int:
        return 1 << 30 if t is None else self.clock.ticks_diff(self.now(), t)

    # --- accessories ---------------------------------------------------------------------
    def _get(self, uid: str, transport: str) -> tuple[Accessory, bool]:
        acc = self.accessories.get(uid)
        if acc is not None:
            return acc, False
        acc = Accessory(self, uid, transport)
        self.accessories[uid] = acc
        return acc, True

    def _event(self, kind: str, acc: Accessory | None, line: str, **data: Any) -> None:
        self.emit(kind, acc, line, data)

    # --- CAN: claims and tracking by NAME (spec 7.3) ---------------------------------------
    def add_can(self, link: Any | None) -> CanSide:
        side = CanSide(self, len(self.sides), link)
        self.sides.append(side)
        return side

    def claims_requested(self, side: CanSide) -> None:
        """A Request for Address Claimed went over the bus (the car's, or another node's):
        the claims that follow at once are answers, not restarts. Nodes answer at once
        (J1939-81), so the window is short: a restart inside it is caught later by the
        heartbeat uptime."""
        side.claims_requested_at = self.now()

    def request_claims(self, side: CanSide, da: int = claim.GLOBAL) -> None:
        if side.link is None or self.passive:
            return
        if side.link.claim.request_claims(da):
            self.claims_requested(side)

    def can_claim(self, side: CanSide, addr: int, name: int) -> None:
        """An Address Claimed frame from another node (not ours, not Cannot Claim)."""
        if not name >> 63:  # a car (not arbitrary address capable)
            side.cars[addr] = name
            return
        if not 0x80 <= addr <= 0xF7:
            return
        answer = side.claims_requested_at is not None and \
            self._since(side.claims_requested_at) <= CLAIM_ANSWER_MS
        uid = f"can:{name:016X}"
        acc, new = self._get(uid, "can")
        other = self._by_addr.get((side.index, addr))
        if other is not None and other is not acc:
            del self._by_addr[(side.index, addr)]  # that address now belongs to this NAME
            side.settling[addr] = (self.now(), other)
        if new:
            acc.name, acc.address, acc.bus = name, addr, side.index
            acc.advert_class = (name >> 40 & 0xFF) - 0xC0 if 0xC0 <= (name >> 40 & 0xFF) <= 0xFF else None
            self._by_addr[(side.index, addr)] = acc
            acc._await_heartbeat = True
            self._event("discovered", acc, f"claimed CAN address 0x{addr:02X}, NAME {name:016X}",
                        transport="can", address=addr, name=f"{name:016X}")
            return
        if acc.address != addr or acc.bus != side.index:
            old = acc.address
            if self._by_addr.get((acc.bus, old)) is acc:  # type: ignore[arg-type]
                del self._by_addr[(acc.bus, old)]  # type: ignore[arg-type]
            acc.address, acc.bus = addr, side.index
            self._by_addr[(side.index, addr)] = acc
            if side.link is not None and isinstance(old, int):
                _abort_channels(side.link, old)
            if not acc.online:  # gone, and now back elsewhere: it has been off, a new session
                acc._need_describe = True
                acc._await_heartbeat = True
            self._event("moved", acc, f"moved from CAN address 0x{old:02X} to 0x{addr:02X}",
                        old=old, new=addr)
            return
        self._by_addr[(side.index, addr)] = acc
        if answer:
            return  # it answered our Request for Address Claimed: nothing happened to it
        if other is not None and other is not acc:
            return  # another NAME claimed its address and it defended it (7.3): no restart
        # its own address claimed again: it restarted, or recovered from bus-off (M-7.3-7)
        self._restarted(acc, "claimed its address again")
        acc._await_heartbeat = True

    def can_receive(self, side: CanSide, sa: int, data: bytes) -> None:
        late = side.settling.get(sa)
        if late is not None:
            if self._since(late[0]) < IN_FLIGHT_MS:
                self._receive(late[1], data)  # still in flight from the previous owner
                return
            del side.settling[sa]
        acc = self._by_addr.get((side.index, sa))
        if acc is None:
            if 0x80 <= sa <= 0xF7 and not self.passive and \
                    self._since(side.unknown_asked.get(sa)) >= UNKNOWN_CLAIM_EVERY_MS:
                side.unknown_asked[sa] = self.now()
                self.request_claims(side, sa)  # who is that? its claim tells its NAME
            self.ignored += 1
            return
        self._receive(acc, data)

    def can_observe_sent(self, side: CanSide, ta: int, data: bytes) -> None:
        """Passive mode: a message the recorded car sent to ``ta``."""
        acc = self._by_addr.get((side.index, ta))
        if acc is None:
            return
        try:
            m = msg.parse(data)
        except ProtocolError:
            return
        if m[0] not in _REQUESTS or len(m) < 2:
            return
        req = Request(acc, m[0], list(m[2:]), "observed", acc._session.number,
                      self.request_timeout_ms, tid=m[1], sent_at=self.now())
        acc._pending[m[1]] = req
        self._on_sent(req)

    def car_claimed(self, side: CanSide, address: int) -> None:
        side.car_address = address
        self._event("car", None, f"claimed CAN address 0x{address:02X} on bus {side.index}",
                    what="claimed", address=address, bus=side.index)

    # --- BLE -----------------------------------------------------------------------------
    def ble_seen(self, address: str, short_id: int | None, device_class: int | None,
                 flags: int) -> Accessory:
        acc, new = self._get(f"ble:{address}", "ble")
        if new:
            acc.address, acc.short_id, acc.advert_class = address, short_id, device_class
            sid = "" if short_id is None else f", short id {short_id:04X}"
            self._event("discovered", acc, f"advertising over BLE at {address}{sid}"
                        + (" (also on CAN)" if flags & 1 else ""),
                        transport="ble", address=address, short_id=short_id, flags=flags)
        return acc

    def ble_connected(self, acc: Accessory, link: Sender) -> None:
        acc._link = link
        acc._last_heard = self.now()
        self._went_online(acc, restarted=False)
        self._bring_up(acc)

    def ble_receive(self, acc: Accessory, data: bytes) -> None:
        try:
            self._receive(acc, data)
        except Exception:  # noqa: BLE001 - never out into the transport's callback
            log.exception("car engine: message from %s", acc.address)

    def ble_disconnected(self, acc: Accessory) -> None:
        acc._link = None
        acc._need_describe = True  # no heartbeat over BLE: it may restart unseen (5.3)
        if acc.online:
            self._went_offline(acc, "disconnected")

    def find_can_by_short_id(self, short_id: int) -> Accessory | None:
        for a in self.accessories.values():
            if a.transport == "can" and a.name is not None and a.name & 0xFFFF == short_id:
                return a
        return None

    # --- receiving -----------------------------------------------------------------------
    def _receive(self, acc: Accessory, data: bytes) -> None:
        try:
            m = msg.parse(data)
        except ProtocolError:
            self.malformed += 1  # 5.1 cases 1-3: dropped and counted
            return
        now = self.now()
        t = m[0]
        if t == msg.HEARTBEAT and acc.transport == "ble":
            self.ignored += 1  # M-8.7-1: never over BLE; a car ignores one
            return
        acc._last_heard = now
        if t == msg.HEARTBEAT:
            self._heartbeat(acc, m)
            return
        if not acc.online:
            self._went_online(acc, restarted=False)
            self._bring_up(acc)
        if t == msg.RESULT:
            self._result(acc, m)
        elif t == msg.REPORT:
            self._report(acc, m)
        elif t == msg.EVENT:
            self._accessory_event(acc, m)
        else:
            self.ignored += 1  # types a car does not receive (5.1 case 5)

    def _heartbeat(self, acc: Accessory, m: list[Any]) -> None:
        up = m[1] if len(m) > 1 and isinstance(m[1], int) and not isinstance(m[1], bool) else None
        acc.health = m[2] if len(m) > 2 and isinstance(m[2], int) else None
        acc.mode = m[3] if len(m) > 3 and isinstance(m[3], int) else None
        now = self.now()
        back = False  # uptime went backwards, other than by its wrap (5.10)
        if up is not None and acc.uptime_s is not None and acc._uptime_at is not None:
            expected = acc.uptime_s + self.clock.ticks_diff(now, acc._uptime_at) // 1000
            behind = (expected - up + 32768) % 65536 - 32768  # signed, modulo the wrap
            back = behind > UPTIME_SLACK_S
        if up is not None:
            acc.uptime_s, acc._uptime_at = up, now
        if acc._await_heartbeat:  # after its claim: the settle time is over now
            acc._await_heartbeat = False
            if not acc.online:
                self._went_online(acc, restarted=acc._restart_seen)
            self._bring_up(acc)
        elif not acc.online:
            if back and not acc._need_describe:
                acc._need_describe = True
                acc.restarts += 1
            self._went_online(acc, restarted=back)
            self._bring_up(acc)
        elif back:
            self._restarted(acc, "its uptime went backwards")
            self._bring_up(acc)
        acc._restart_seen = False

    def _result(self, acc: Accessory, m: list[Any]) -> None:
        if len(m) < 3 or not isinstance(m[1], int):
            self.malformed += 1
            return
        req = acc._pending.pop(m[1], None)
        if req is None:
            self.ignored += 1  # M-5.2-4
            return
        status = m[2] if isinstance(m[2], int) and not isinstance(m[2], bool) else -1
        self._complete(req, status, m[3] if len(m) > 3 else None)

    def _report(self, acc: Accessory, m: list[Any]) -> None:
        if len(m) < 4 or not all(isinstance(x, int) for x in m[1:3]):
            self.malformed += 1
            return
        slot, attr, value = m[1], m[2], m[3]
        cap = acc._cap(slot)
        if cap is None or not cap.known or attr not in cap.attributes:
            self.ignored += 1  # M-5.8-2
            return
        key = (slot, attr)
        acc._session.last_report[key] = self.now()
        self._store(acc, key, value)
        self._event("value", acc, f"{acc.path(key)} = {acc.text(key)}", slot=slot, attr=attr,
                    path=acc.path(key), value=value, text=acc.text(key))

    def _store(self, acc: Accessory, key: tuple[int, int], value: Any) -> None:
        t = self.seconds()
        acc.values[key] = value
        acc.value_times[key] = t
        h = acc.history.get(key)
        if h is None:
            from collections import deque

            h = acc.history[key] = deque(maxlen=HISTORY)
        h.append((t, value))

    def _accessory_event(self, acc: Accessory, m: list[Any]) -> None:
        if len(m) < 3 or not all(isinstance(x, int) for x in m[1:3]):
            self.malformed += 1
            return
        slot, ev = m[1], m[2]
        data = m[3] if len(m) > 3 else None
        cap = acc._cap(slot)
        if cap is None or not cap.known or ev not in cap.events:
            self.ignored += 1  # M-5.9-1
            return
        path = f"{cap.path}.{cap.member_name('events', ev)}"
        text = format_event_data(cap.id, ev, data)
        self._event("event", acc, f"{path} {text}".rstrip(), slot=slot, event=ev, path=path,
                    data=data, text=text, capability=cap.name, name=cap.member_name("events", ev))

    # --- sessions ------------------------------------------------------------------------
    def _went_online(self, acc: Accessory, restarted: bool) -> None:
        if acc.online:
            return
        acc.online = True
        acc.last_online_t = self.seconds()
        where = f"CAN 0x{acc.address:02X}" if isinstance(acc.address, int) else f"BLE {acc.address}"
        self._event("online", acc, f"online ({where})" + (", restarted" if restarted else ""),
                    transport=acc.transport, address=acc.address, restarted=restarted)

    def _went_offline(self, acc: Accessory, why: str) -> None:
        acc.online = False
        acc.ready = False
        acc.last_offline_t = self.seconds()
        acc._session.greeted = False
        acc._await_heartbeat = False
        acc._bringup_retry_at = None
        self._fail_all(acc, "offline")
        text = "offline: " + ("no frame for 3 s" if why == "silent" else "BLE disconnected"
                              if why == "disconnected" else why)
        self._event("offline", acc, text, why=why)

    def _restarted(self, acc: Accessory, why: str) -> None:
        acc.restarts += 1
        acc._restart_seen = True
        acc._need_describe = True
        acc.ready = False
        acc._session.greeted = False
        self._fail_all(acc, "accessory restarted")
        self._event("restarted", acc, f"restarted: {why}", why=why)

    def _fail_all(self, acc: Accessory, why: str) -> None:
        reqs = list(acc._pending.values()) + list(acc._queue)
        if acc._current is not None and acc._current not in reqs:
            reqs.append(acc._current)
        acc._pending.clear()
        acc._queue.clear()
        acc._current = None
        for r in reqs:
            if not r.done:
                r.error = why
                self._finish(r)

    def _bring_up(self, acc: Accessory) -> None:
        """Start a session: HELLO, then DESCRIBE if needed, policy writes, subscriptions."""
        acc._bringup_retry_at = None
        if self.passive or not acc.online:
            return
        acc.ready = False
        # requests of an earlier bring-up are void; the application's stay queued
        for r in [r for r in acc._queue if r.origin in ("bringup", "policy")]:
            acc._queue.remove(r)
        self._enqueue(self._new(acc, msg.HELLO, [msg.VERSION_MAJOR, msg.VERSION_MINOR], "bringup",
                                self._after_hello), front=True)

    def _after_hello(self, req: Request) -> None:
        acc = req.acc
        if not req.ok:
            if req.status == msg.VERSION_MISMATCH:
                self._event("warning", acc, f"speaks protocol {req.value!r}, not "
                            f"{msg.VERSION_MAJOR}.x: not used")
                return
            self._retry(acc, f"HELLO: {req.error or catalog.status_name(req.status)}")
            return
        if acc._need_describe or acc.description is None:
            self._enqueue(self._new(acc, msg.DESCRIBE, [], "bringup", self._after_describe),
                          front=True)
        else:
            self._setup(acc)

    def _after_describe(self, req: Request) -> None:
        if not req.ok or req.acc.description is None or req.acc._need_describe:
            self._retry(req.acc, f"DESCRIBE: {req.error or catalog.status_name(req.status)}")
            return
        self._setup(req.acc)

    def _setup(self, acc: Accessory) -> None:
        front = 0
        for (slot, attr), value in self.planner.setup_writes(acc).items():
            self._enqueue(self._new(acc, msg.WRITE, [slot, attr, value], "policy"), front=True,
                          at=front)
            front += 1
        for (slot, attr), s in acc.wanted.items():
            args: list[Any] = [slot, attr, s.min_ms, s.max_s]
            if s.threshold is not None:
                args.append(s.threshold)
            self._enqueue(self._new(acc, msg.SUBSCRIBE, args, "bringup"), front=True, at=front)
            front += 1
        self._check_ready(acc)

    def _retry(self, acc: Accessory, why: str) -> None:
        if not acc.online:
            return
        log.info("%s: bring-up: %s; again in %d ms", acc.label, why, RETRY_MS)
        acc._bringup_retry_at = self.now()

    def _check_ready(self, acc: Accessory) -> None:
        s = acc._session
        if acc.ready or not acc.online or not s.greeted or acc.description is None:
            return
        if any(k not in s.granted and k not in s.refused for k in acc.wanted):
            return
        if any(k not in s.setup_done for k in self.planner.setup_writes(acc)):
            return
        acc.ready = True
        acc.last_ready_t = self.seconds()
        subs = sorted(acc.path(k) for k in s.granted)
        self._event("ready", acc, f"ready: {len(subs)} subscriptions, bindings: "
                    + (", ".join(acc.bindings) or "none"),
                    subscriptions=subs, bindings=list(acc.bindings))

    # --- requests ------------------------------------------------------------------------
    def _new(self, acc: Accessory, kind: int, args: list[Any], origin: str,
             then: Callable[[Request], None] | None = None) -> Request:
        r = Request(acc, kind, args, origin, acc._session.number, self.request_timeout_ms)
        if then is not None:
            r.on_done.append(then)
        return r

    def request(self, acc: Accessory, kind: int, args: list[Any], origin: str = "api",
                then: Callable[[Request], None] | None = None) -> Request:
        """Queue a request (READ, WRITE, INVOKE, SUBSCRIBE, UNSUBSCRIBE) for ``acc``. The
        returned Request completes (``done``) with its RESULT, a timeout, or at once when it
        cannot be sent (passive mode, accessory offline)."""
        r = self._new(acc, kind, args, origin, then)
        if self.passive:
            r.error = "replay: the car sends nothing"
            self._finish(r)
        elif not acc.online:
            r.error = "offline"
            self._finish(r)
        else:
            self._enqueue(r)
        return r

    def _enqueue(self, r: Request, front: bool = False, at: int = 0) -> None:
        q = r.acc._queue
        if front:
            q.insert(min(at, len(q)), r)
        else:
            q.append(r)
        self._pump(r.acc)

    def _route(self, acc: Accessory) -> tuple[Sender | None, Any]:
        if acc.transport == "ble":
            return acc._link, acc.address
        if acc.bus < len(self.sides):
            side = self.sides[acc.bus]
            ready = side.link is not None and side.link.claim.ready
            return (side if ready else None), acc.address
        return None, None

    def _pump(self, acc: Accessory) -> None:
        while acc._current is None and acc._queue:
            sender, peer = self._route(acc)
            if sender is None:
                return
            r = acc._queue[0]
            acc._tid = (acc._tid + 1) & 0xFFFF
            r.tid = acc._tid
            if not sender.send(peer, encode(r.message), False):
                return  # the link is busy (an ISO-TP transfer in this direction): next poll
            acc._queue.popleft()
            r.sent_at = self.now()
            acc._current = r
            acc._pending[r.tid] = r
            self._on_sent(r)

    def _on_sent(self, r: Request) -> None:
        """A request left (or, passive, was seen leaving): what it means for the session."""
        acc = r.acc
        if r.kind == msg.HELLO:
            s = acc._session
            acc._session = type(s)(number=s.number + 1)
            acc.ready = False
            r.session = acc._session.number

    def _complete(self, r: Request, status: int | None, value: Any) -> None:
        r.status, r.value = status, value
        ok = status == msg.OK
        acc = r.acc
        s = acc._session
        if r.kind == msg.HELLO and ok:
            s.greeted = True
        elif r.kind == msg.DESCRIBE and ok:
            self._described(acc, value)
        elif r.kind == msg.SUBSCRIBE and len(r.args) >= 2:
            key = (r.args[0], r.args[1])
            if ok and isinstance(value, list) and len(value) >= 2:
                s.granted[key] = (value[0], value[1])
                s.last_report[key] = self.now()
                s.refused.discard(key)
            elif r.status is not None and r.status != msg.OK:
                s.refused.add(key)
                self._event("warning", acc, f"subscribe {acc.path(key)}: "
                            f"{catalog.status_name(r.status)}")
        elif r.kind in (msg.READ, msg.WRITE, msg.INVOKE, msg.UNSUBSCRIBE):
            self._answered(r)
        self._finish(r)
        self._check_ready(acc)

    def _described(self, acc: Accessory, value: Any) -> None:
        try:
            d = Description.parse(value)
        except DescriptionError as e:
            self._event("warning", acc, f"unusable description: {e}")
            return
        changed = acc.description is not None and not d.equivalent(acc.description)
        first = acc.description is None
        acc.description = d
        acc._need_describe = False
        if changed:
            acc.values.clear()
        self.plan(acc)
        caps = ", ".join(c.path for c in d.capabilities if c.known and c.name != "device_info")
        ident = d.identity
        text = f"{d.class_name} {ident.vendor} {ident.product} (serial {ident.serial}): {caps}"
        if not first:
            text = ("description changed: " if changed else "description unchanged: ") + text
        self._event("described", acc, text, description=d.to_dict(), changed=changed)

    def plan(self, acc: Accessory) -> None:
        """Ask the planner what to subscribe (plus the application's subscriptions)."""
        wanted = dict(self.planner.subscriptions(acc))
        for k, spec in acc.user_subscriptions.items():
            wanted[k] = spec
        acc.wanted = wanted

    def replan(self) -> None:
        """The planner changed (new bindings): plan again and start a new session with
        every online accessory (HELLO, policy writes, subscriptions; harmless, M-6.6-4)."""
        for acc in self.accessories.values():
            if acc.description is not None:
                self.plan(acc)
                if acc.online:
                    acc.ready = False
                    self._bring_up(acc)

    def _answered(self, r: Request) -> None:
        acc = r.acc
        kind = "commands" if r.kind == msg.INVOKE else "attributes"
        key = (r.args[0], r.args[1]) if len(r.args) >= 2 else (-1, -1)
        path = acc.path(key, kind)
        op = _OP[r.kind]
        ok = r.status == msg.OK
        status = catalog.status_name(r.status)
        if r.kind == msg.WRITE and len(r.args) >= 3:
            cap = acc._cap(key[0])
            shown = format_value(cap.id, key[1], r.args[2]) if cap else repr(r.args[2])
            text = f"write {path} = {shown}: {status}"
            if ok:
                self._store(acc, key, r.args[2])
                if key in self.planner.setup_writes(acc):
                    acc._session.setup_done.add(key)
        elif r.kind == msg.READ:
            if ok:
                self._store(acc, key, r.value)
            text = f"read {path}: " + (acc.text(key) if ok else status)
        elif r.kind == msg.INVOKE:
            args = r.args[2] if len(r.args) > 2 else None
            text = f"invoke {path}({'' if args is None else ', '.join(map(repr, args))}): {status}"
            if ok and r.value is not None:
                text += f" -> {r.value!r}"
        else:
            text = f"{op} {path}: {status}"
        self._event("request", acc, text, op=op, path=path, status=r.status,
                    status_name=status, value=r.value if ok else None, origin=r.origin)

    def _finish(self, r: Request) -> None:
        r.done = True
        acc = r.acc
        if acc._current is r:
            acc._current = None
        for fn in list(r.on_done):
            try:
                fn(r)
            except Exception:  # noqa: BLE001 - a callback never breaks the engine
                log.exception("request callback failed")
        self._pump(acc)

    # --- timers --------------------------------------------------------------------------
    def poll(self) -> None:
        now = self.now()
        self._uptime_ms += max(0, self.clock.ticks_diff(now, self._t_last))
        self._t_last = now
        for acc in list(self.accessories.values()):
            for tid, r in list(acc._pending.items()):
                if r.sent_at is not None and self.clock.ticks_diff(now, r.sent_at) > r.timeout_ms:
                    del acc._pending[tid]
                    r.error = "no RESULT within %d ms" % r.timeout_ms
                    self._complete(r, None, None)
            if acc.transport == "can" and acc.online and acc._last_heard is not None and \
                    self.clock.ticks_diff(now, acc._last_heard) > OFFLINE_MS:
                self._went_offline(acc, "silent")  # M-7.6-3
                continue
            if acc._bringup_retry_at is not None and \
                    self.clock.ticks_diff(now, acc._bringup_retry_at) >= RETRY_MS:
                self._bring_up(acc)
            if acc.ready:
                self._check_silent(acc, now)
            if acc._queue and acc._current is None:
                self._pump(acc)

    def _check_silent(self, acc: Accessory, now: int) -> None:
        s = acc._session
        for key, (_, max_s) in s.granted.items():
            last = s.last_report.get(key)
            if last is not None and self.clock.ticks_diff(now, last) > max_s * 1000 + SILENT_GRACE_MS:
                self._event("warning", acc, f"{acc.path(key)} silent for more than {max_s} s: "
                            "session lost, starting again")
                acc.ready = False
                s.last_report[key] = now
                self._bring_up(acc)
                return


def _abort_channels(link: Any, remote: int) -> None:
    """Abort and forget the CanLink's ISO-TP connections with ``remote`` (it moved)."""
    chans = getattr(link, "channels", {})
    for key in [k for k in chans if k & 0xFF == remote]:
        try:
            chans[key].abort()
        finally:
            del chans[key]
