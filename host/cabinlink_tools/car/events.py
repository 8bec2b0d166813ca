"""The car's event stream: everything that happens, as :class:`CarEvent` records.

Every change the car sees or makes becomes one event: an accessory discovered, online,
described, ready, moved, restarted or offline; a value reported; an accessory event; a
binding fired; a request answered; the vehicle changed; the bus load. A web page (the car
screen) mirrors the car from :meth:`Car.snapshot` plus this stream; the CLI prints it as a
timeline; tests wait on it.

Kinds (``CarEvent.kind``) and their ``data`` keys:

============== =====================================================================
``car``        the car itself: ``what`` (``claimed``, ``cannot_claim``, ``started``,
               ``stopped``, ``ble_scanning``), ``address``
``discovered`` an accessory seen for the first time: ``transport``, ``address``, ``name``
               (CAN NAME, hex) or ``short_id`` (BLE)
``online``     heard from (again): ``transport``, ``address``, ``restarted``
``described``  DESCRIBE read: ``description`` (dict), ``changed`` (bool)
``ready``      HELLO, description, policy writes and every subscription in place:
               ``subscriptions`` (list of paths), ``bindings`` (list of names)
``moved``      new CAN address, same NAME (spec 7.3): ``old``, ``new``
``restarted``  claim at its own address or uptime went backwards: ``why``
``offline``    ``why``: ``silent`` (CAN, > 3000 ms without a frame) or ``disconnected`` (BLE)
``value``      a REPORT: ``slot``, ``attr``, ``path``, ``value``, ``text``
``event``      an EVENT: ``slot``, ``event``, ``path``, ``data``, ``text``
``binding``    a binding fired: ``binding``, ``action``, ``result``
``request``    a READ/WRITE/INVOKE/UNSUBSCRIBE answered: ``op``, ``path``, ``status``,
               ``status_name``, ``value``
``warning``    something the car could not do: ``text`` only
``vehicle``    the vehicle changed: ``name``, ``value``
``bus``        once a second per CAN bus: ``frames_per_s``, ``load`` (0..1), ``bitrate``
============== =====================================================================

Contract: callbacks run synchronously in the car's event loop, in order, and must not
block; an exception in a callback is logged and does not stop the car. Async iterators get
every event after they were created; a slow consumer's queue grows without bound (read
it, or use a callback).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("car", "discovered", "online", "described", "ready", "moved", "restarted",
         "offline", "value", "event", "binding", "request", "warning", "vehicle", "bus")


@dataclass(frozen=True)
class CarEvent:
    """One thing that happened. ``t``: seconds on the car's clock since it started;
    ``acc``: the accessory's uid (None for the car, the vehicle, the bus); ``who``: the
    accessory's label when the event was made; ``text``: one readable line."""

    t: float
    kind: str
    acc: str | None
    who: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: byte strings become hex text, tuples lists."""
        return {"t": round(self.t, 3), "kind": self.kind, "acc": self.acc, "who": self.who,
                "text": self.text, "data": jsonable(self.data)}

    def line(self) -> str:
        """The timeline line: ``   12.345  ctl1          buttons.press 0 -> ...``."""
        return f"{self.t:9.3f}  {self.who:<14} {self.text}"


Callback = Callable[[CarEvent], None]


def jsonable(x: Any) -> Any:
    """``x`` with bytes as hex text and tuples as lists (json.dumps takes the result)."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).hex()
    if isinstance(x, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else str(k): jsonable(v)
                for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


class EventHub:
    """Fan-out of :class:`CarEvent` to callbacks and async iterators; keeps the history."""

    def __init__(self, keep: int = 10000) -> None:
        self.history: list[CarEvent] = []
        self._keep = keep
        self._callbacks: list[tuple[Callback, frozenset[str] | None]] = []
        self._queues: list[tuple[asyncio.Queue[CarEvent | None], frozenset[str] | None]] = []

    def on(self, callback: Callback, kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (of ``kinds``); returns an unsubscribe."""
        entry = (callback, frozenset(kinds) if kinds is not None else None)
        self._callbacks.append(entry)
        return lambda: self._callbacks.remove(entry) if entry in self._callbacks else None

    def emit(self, ev: CarEvent) -> None:
        self.history.append(ev)
        if len(self.history) > self._keep:
            del self.history[: len(self.history) - self._keep]
        for cb, kinds in list(self._callbacks):
            if kinds is None or ev.kind in kinds:
                try:
                    cb(ev)
                except Exception:  # noqa: BLE001 - a listener never stops the car
                    log.exception("car event callback %r failed", cb)
        for q, kinds in self._queues:
            if kinds is None or ev.kind in kinds:
                q.put_nowait(ev)

    async def stream(self, kinds: Iterable[str] | None = None) -> AsyncIterator[CarEvent]:
        """Every event from now on (of ``kinds``), until the car stops."""
        q: asyncio.Queue[CarEvent | None] = asyncio.Queue()
        entry = (q, frozenset(kinds) if kinds is not None else None)
        self._queues.append(entry)
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            if entry in self._queues:
                self._queues.remove(entry)

    def close(self) -> None:
        """End every async iterator."""
        for q, _ in self._queues:
            q.put_nowait(None)
