"""A car's session with the accessory over one transport, as the tests use it.

:class:`CanSession` is one of the suite's car addresses talking to the accessory (whose
address may change: it is looked up on every send); :class:`BleLinkSession` is one BLE
connection. Both offer the same calls: :meth:`Session.ask` builds a request with a fresh tid
and returns the decoded RESULT, :meth:`Session.request` sends a given message (a list, or
raw bytes for malformed input) and waits for the RESULT of its tid, :meth:`Session.mark` /
:meth:`Session.since` slice what arrived.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cabinlink import msg

from .ble_probe import BleSession
from .can_probe import PRIO_NORMAL, CanProbe, CarPeer, Message, Sent, wait_on


class NoResult(AssertionError):
    pass


class Session:
    label = "?"
    transport = "?"
    retries: list[list[Any]]
    unanswerable: set[int]  # tids sent while the accessory could not answer (restarting)
    messages: list[Message]
    sent: list[Sent]

    def send(self, m: list[Any] | bytes, **kw: Any) -> Sent:
        raise NotImplementedError

    def result(self, tid: int, timeout: float = 2.0, since: int = 0) -> Message | None:
        raise NotImplementedError

    def next_tid(self) -> int:
        raise NotImplementedError

    def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        raise NotImplementedError

    def mark(self) -> int:
        return len(self.messages)

    def since(self, mark: int, type_: int | None = None) -> list[Message]:
        return [m for m in self.messages[mark:] if type_ is None or m.type == type_]

    def request(self, m: list[Any] | bytes, tid: int | None = None, timeout: float = 2.0,
                again: bool = True, **kw: Any) -> list[Any] | None:
        """Send ``m`` and return the decoded RESULT carrying ``tid`` (taken from ``m`` when
        it is a list), or None when none arrives within ``timeout`` s. Unless ``again`` is
        False, a request left unanswered is sent once more as it was (lost on the way: a
        controller with two receive buffers drops a frame now and then); counted."""
        if tid is None and isinstance(m, list):
            tid = m[1]
        mark = self.mark()
        self.send(m, **kw)
        if tid is None:
            return None
        r = self.result(tid, timeout, mark)
        if r is None and again:
            self.retries.append(m if isinstance(m, list) else [bytes(m).hex()])
            mark = self.mark()
            self.send(m, **kw)
            r = self.result(tid, timeout, mark)
        return None if r is None else r.value

    def ask(self, build: Callable[..., list[Any]], *args: Any, timeout: float = 1.2, retry: bool = True,
            **kw: Any) -> list[Any]:
        """``build(tid, *args)`` (a :mod:`cabinlink.msg` builder) sent with a fresh tid; the
        decoded RESULT. Raises :class:`NoResult` when the accessory does not answer."""
        tid = self.next_tid()
        m = build(tid, *args)
        r = self.request(m, tid, timeout, again=False, **kw)
        for _ in range(2 if retry else 0):
            if r is not None:
                break
            # Lost on the way (a controller with two receive buffers drops a frame when
            # its firmware pauses): a car repeats with a new tid (5.2), up to twice; counted.
            self.retries.append(m)
            tid = self.next_tid()
            m = build(tid, *args)
            r = self.request(m, tid, timeout, again=False, **kw)
        if r is None:
            raise NoResult(f"{self.label}: no RESULT to {m!r} within {timeout} s"
                           f"{' (sent three times, a new tid each)' if retry else ''}")
        return r

    def ask_many(self, calls: list[tuple[Callable[..., list[Any]], tuple[Any, ...]]],
                 timeout: float = 1.2) -> list[list[Any]]:
        """Several requests sent one after the other without waiting (a car SHOULD keep one
        outstanding, 5.2; the suite pipelines where the order of the answers does not
        matter to it, to save time), then their decoded RESULTs in the same order. One that
        got no RESULT is asked again on its own (:meth:`ask`)."""
        mark = self.mark()
        sent = []
        for build, args in calls:
            tid = self.next_tid()
            self.send(build(tid, *args))
            sent.append((tid, build, args))
        out = []
        for tid, build, args in sent:
            r = self.result(tid, timeout, mark)
            if r is None:
                self.retries.append(build(tid, *args))
                out.append(self.ask(build, *args, timeout=timeout, retry=False))
            else:
                out.append(r.value)
        return out

    def value(self, build: Callable[..., list[Any]], *args: Any, **kw: Any) -> Any:
        """The value of an OK RESULT (AssertionError otherwise): for the suite's own
        bookkeeping reads, not for verdicts."""
        r = self.ask(build, *args, **kw)
        if r[2] != msg.OK:
            raise AssertionError(f"{self.label}: {build.__name__}{args} answered status {r[2]}")
        return r[3] if len(r) > 3 else None

    def expect_no_result(self, tid: int, window: float, since: int) -> Message | None:
        """Wait ``window`` s; the RESULT with ``tid`` if one came (it should not have)."""
        return self.result(tid, window, since)

    def reports(self, mark: int, slot: int | None = None, attr: int | None = None) -> list[Message]:
        return [m for m in self.messages[mark:] if m.type == msg.REPORT and len(m.value) >= 4
                and (slot is None or m.value[1] == slot) and (attr is None or m.value[2] == attr)]

    def events(self, mark: int = 0) -> list[Message]:
        return [m for m in self.messages[mark:] if m.type == msg.EVENT]

    def timeline(self, t0: float, t1: float = float("inf"), limit: int = 40) -> str:
        """What this session sent and got between ``t0`` and ``t1`` (epoch s), one item
        per message with its time in ms after ``t0``: for failure messages."""
        items: list[tuple[float, str]] = []
        for x in list(self.sent):
            if t0 <= x.t <= t1:
                items.append((x.t, f"sent type {x.type} tid {x.tid}"))
        for m in list(self.messages):
            if t0 <= m.t <= t1:
                v = m.value
                if m.type == msg.RESULT and isinstance(v, list) and len(v) >= 3:
                    what = f"RESULT tid {v[1]} status {v[2]}"
                elif m.type == msg.REPORT and isinstance(v, list) and len(v) >= 3:
                    what = f"REPORT {v[1]}/{v[2]}"
                else:
                    what = f"type {m.type}"
                items.append((m.t, what))
        items.sort(key=lambda i: i[0])
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return f"{self.label}: " + ", ".join(f"{1000 * (t - t0):.0f} ms {w}" for t, w in items[:limit]) + more


class CanSession(Session):
    transport = "can"

    def __init__(self, probe: CanProbe, peer: CarPeer, acc: Callable[[], int]) -> None:
        self.probe = probe
        self.peer = peer
        self.acc = acc
        self.label = f"CAN 0x{peer.sa:02X}"
        self.born = time.time()
        self.retired: float | None = None  # when another session of the suite took the address
        self.retries = []
        self.unanswerable = set()

    @property
    def messages(self) -> list[Message]:  # type: ignore[override]
        return self.peer.messages

    @property
    def sent(self) -> list[Sent]:  # type: ignore[override]
        return self.peer.sent

    def send(self, m: list[Any] | bytes, prio: int = PRIO_NORMAL, **kw: Any) -> Sent:
        return self.peer.send(self.acc(), m, prio)

    def result(self, tid: int, timeout: float = 2.0, since: int = 0) -> Message | None:
        return self.peer.result(tid, timeout, since)

    def next_tid(self) -> int:
        return self.peer.next_tid()

    def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        return self.probe.wait(pred, timeout)


class BleLinkSession(Session):
    transport = "ble"

    def __init__(self, s: BleSession) -> None:
        self.s = s
        self.label = s.label
        self._tid = 0x8000
        self.retries = []
        self.unanswerable = set()

    @property
    def messages(self) -> list[Message]:  # type: ignore[override]
        return self.s.messages

    @property
    def sent(self) -> list[Sent]:  # type: ignore[override]
        return self.s.sent

    def send(self, m: list[Any] | bytes, response: bool = True, **kw: Any) -> Sent:
        return self.s.send(m, response=response)

    def result(self, tid: int, timeout: float = 2.0, since: int = 0) -> Message | None:
        return self.s.result(tid, timeout, since)

    def next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        return wait_on(self.s.cv, pred, timeout)
