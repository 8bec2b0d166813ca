"""The car side of a CabinLink link: requests out, results/reports/events in.

:class:`CarClient` is an *endpoint* in the core's sense (like the accessory's
:class:`cabinlink.node.Node`): a link (``CanLink``) hands it whole messages and asks it for
heartbeats. It keeps one :class:`Accessory` record per peer, correlates RESULTs with
requests by transaction id, and marks an accessory offline after the spec's 3 s without
a heartbeat. It is synchronous and single-threaded: the owner calls ``link.poll()``.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cabinlink import msg
from cabinlink.codec import ProtocolError, encode

OFFLINE_MS = 3000


class Link(Protocol):
    """What the client needs of a link (the core's CanLink satisfies it)."""

    liveness_ms: int

    def send(self, peer: int, data: bytes, urgent: bool = False) -> bool: ...


@dataclass
class Pending:
    """One outstanding request; ``done`` once its RESULT arrived or it timed out."""

    tid: int
    request: list[Any]
    sent_at: int
    status: int | None = None
    value: Any = None
    done: bool = False
    timed_out: bool = False
    on_done: Callable[[Pending], None] | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.status == msg.OK


@dataclass
class Accessory:
    """What the car knows about one accessory (keyed by link and address)."""

    peer: int
    name: int | None = None
    online: bool = True
    last_heartbeat: int | None = None
    heartbeats: int = 0
    uptime_s: int | None = None
    health: int | None = None
    mode: int | None = None
    description: dict[int, Any] | None = None
    values: dict[tuple[int, int], Any] = field(default_factory=dict)


class CarClient:
    """Car-side endpoint. Callbacks: ``on_report(acc, slot, attr, value)``,
    ``on_event(acc, slot, event, data)``, ``on_offline(acc)``, ``on_online(acc)``."""

    def __init__(self, clock: Any, request_timeout_ms: int = 2000) -> None:
        self.clock = clock
        self.request_timeout_ms = request_timeout_ms
        self.accessories: dict[tuple[Any, int], Accessory] = {}
        self.pending: dict[tuple[Any, int, int], Pending] = {}
        self._tids = itertools.count(1)
        self._t0 = clock.ticks_ms()
        self._uptime_ms = 0
        self._t_last = self._t0
        self.malformed = 0
        self.on_report: Callable[[Accessory, int, int, Any], None] | None = None
        self.on_event: Callable[[Accessory, int, int, Any], None] | None = None
        self.on_offline: Callable[[Accessory], None] | None = None
        self.on_online: Callable[[Accessory], None] | None = None

    # --- requests ----------------------------------------------------------
    def request(self, link: Link, peer: int, build: Callable[..., list[Any]], *args: Any,
                on_done: Callable[[Pending], None] | None = None) -> Pending:
        """Send ``build(tid, *args)`` (one of :mod:`cabinlink.msg`'s request builders)."""
        tid = next(self._tids) & 0xFFFF
        m = build(tid, *args)
        p = Pending(tid, m, self.clock.ticks_ms(), on_done=on_done)
        self.pending[(link, peer, tid)] = p
        if not link.send(peer, encode(m), False):
            p.done = True
            p.timed_out = True
            self.pending.pop((link, peer, tid), None)
        return p

    def accessory(self, link: Any, peer: int) -> Accessory:
        acc = self.accessories.get((link, peer))
        if acc is None:
            acc = self.accessories[(link, peer)] = Accessory(peer)
        return acc

    # --- endpoint interface (called by the link) ---------------------------
    def receive(self, link: Any, peer: int, data: bytes | memoryview) -> None:
        try:
            m = msg.parse(bytes(data))
        except ProtocolError:
            self.malformed += 1
            return
        t = m[0]
        acc = self.accessory(link, peer)
        now = self.clock.ticks_ms()
        if t == msg.HEARTBEAT:
            acc.last_heartbeat = now
            acc.heartbeats += 1
            acc.uptime_s, acc.health, acc.mode = (m + [None, None, None])[1:4]
            if not acc.online:
                acc.online = True
                if self.on_online:
                    self.on_online(acc)
        elif t == msg.RESULT and len(m) >= 3:
            p = self.pending.pop((link, peer, m[1]), None)
            if p is not None:
                p.status = m[2]
                p.value = m[3] if len(m) > 3 else None
                p.done = True
                if p.request[0] == msg.DESCRIBE and p.ok:
                    acc.description = p.value
                if p.on_done:
                    p.on_done(p)
        elif t == msg.REPORT and len(m) >= 4:
            acc.values[(m[1], m[2])] = m[3]
            if self.on_report:
                self.on_report(acc, m[1], m[2], m[3])
        elif t == msg.EVENT and len(m) >= 3:
            if self.on_event:
                self.on_event(acc, m[1], m[2], m[3] if len(m) > 3 else None)

    def peer_lost(self, link: Any, peer: int) -> None:
        acc = self.accessories.get((link, peer))
        if acc is not None and acc.online:
            acc.online = False
            if self.on_offline:
                self.on_offline(acc)

    def poll(self) -> None:
        now = self.clock.ticks_ms()
        self._uptime_ms += self.clock.ticks_diff(now, self._t_last)
        self._t_last = now
        for key, p in list(self.pending.items()):
            if self.clock.ticks_diff(now, p.sent_at) > self.request_timeout_ms:
                del self.pending[key]
                p.done = True
                p.timed_out = True
                if p.on_done:
                    p.on_done(p)
        for (link, peer), acc in self.accessories.items():
            if acc.online and acc.last_heartbeat is not None and \
                    self.clock.ticks_diff(now, acc.last_heartbeat) > OFFLINE_MS:
                self.peer_lost(link, peer)

    def heartbeat(self) -> bytes:
        return encode(msg.heartbeat(self._uptime_ms // 1000))
