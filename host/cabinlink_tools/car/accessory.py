"""One accessory as the car sees it: identity, capabilities, values, session, and the async
request API an application uses (``await acc.read("co2.value")``).

The :class:`Accessory` object is stable for the car's lifetime: it follows the accessory
across address changes (CAN, tracked by NAME, spec M-7.3-7), unplug and re-plug, restarts
and BLE reconnections. Public attributes are read-only for applications; the engine
(:mod:`.engine`) keeps the underscore ones.

Request methods (all ``async``; they queue behind the accessory's other requests, one
outstanding at a time as spec 5.2 recommends):

- ``read(path)`` -> value; ``write(path, value)``; ``invoke(path, args)`` -> the command
  result (None when the command has none); ``subscribe(path, min_ms, max_s, threshold)`` ->
  granted ``(min_ms, max_s)``, kept across sessions; ``unsubscribe(path)``.
- Each raises :class:`RequestFailed` when the accessory answers another status than OK
  (``status`` set, e.g. CONFIRM_REQUIRED), when no RESULT came within the request timeout,
  or the accessory went offline (``status`` None); :class:`LookupError` when the accessory
  has no such member.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cabinlink import msg

from .. import catalog
from .events import jsonable
from .model import CapabilityInfo, Description, format_value

if TYPE_CHECKING:
    from .engine import Engine, Request

HISTORY = 600  # values kept per attribute (10 minutes at 1 Hz) for the car screen's charts


class RequestFailed(Exception):
    """A request that did not end with RESULT OK. ``status`` is the RESULT status, or None
    for no answer (timeout, offline, not sent)."""

    def __init__(self, text: str, status: int | None = None, value: Any = None) -> None:
        super().__init__(text)
        self.status = status
        self.value = value

    @property
    def status_name(self) -> str:
        return catalog.status_name(self.status)


@dataclass
class SubSpec:
    """A subscription the car wants: floor, ceiling, optional threshold (spec 6.1)."""

    min_ms: int
    max_s: int
    threshold: int | None = None


@dataclass
class _Session:
    """What one session (one HELLO) established; replaced on every HELLO."""

    number: int = 0
    greeted: bool = False
    granted: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    refused: set[tuple[int, int]] = field(default_factory=set)
    setup_done: set[tuple[int, int]] = field(default_factory=set)
    last_report: dict[tuple[int, int], int] = field(default_factory=dict)


class Accessory:
    """The car's record of one accessory (see the module text)."""

    def __init__(self, engine: Engine, uid: str, transport: str) -> None:
        self._engine = engine
        self.uid = uid
        self.transport = transport  # "can" or "ble"
        self.address: int | str | None = None  # CAN address, or BLE address
        self.name: int | None = None  # CAN NAME (spec 7.3)
        self.short_id: int | None = None  # BLE scan response short id (spec 8.2)
        self.bus = 0  # which CAN bus (index into the car's buses)
        self.advert_class: int | None = None
        self.online = False
        self.ready = False
        self.description: Description | None = None
        self.values: dict[tuple[int, int], Any] = {}
        self.value_times: dict[tuple[int, int], float] = {}
        self.history: dict[tuple[int, int], deque[tuple[float, Any]]] = {}
        self.health: int | None = None
        self.mode: int | None = None
        self.uptime_s: int | None = None
        self.bindings: list[str] = []  # names of the bindings that apply to it
        self.user_subscriptions: dict[tuple[int, int], SubSpec] = {}
        self.wanted: dict[tuple[int, int], SubSpec] = {}
        self.restarts = 0
        self.last_online_t: float | None = None
        self.last_ready_t: float | None = None
        self.last_offline_t: float | None = None
        # engine bookkeeping
        self._session = _Session()
        self._queue: deque[Request] = deque()
        self._current: Request | None = None
        self._pending: dict[int, Request] = {}
        self._tid = 0
        self._last_heard: int | None = None
        self._uptime_at: int | None = None
        self._await_heartbeat = False
        self._restart_seen = False
        self._need_describe = True
        self._bringup_retry_at: int | None = None
        self._link: Any = None  # BLE: the connection's link; CAN: the bus side

    # --- views ---------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """A short stable name: the serial once described, else the uid."""
        if self.description is not None and self.description.identity.serial:
            return self.description.identity.serial
        return self.uid

    @property
    def device_class(self) -> int | None:
        if self.description is not None:
            return self.description.device_class
        return self.advert_class

    @property
    def class_name(self) -> str | None:
        c = self.device_class
        return None if c is None else catalog.class_name(c)

    @property
    def capabilities(self) -> tuple[CapabilityInfo, ...]:
        return () if self.description is None else self.description.capabilities

    @property
    def subscriptions(self) -> dict[str, tuple[int, int]]:
        """Granted subscriptions of the current session: path -> (min_ms, max_s)."""
        return {self.path(k): v for k, v in self._session.granted.items()}

    def has(self, cap: int | str) -> bool:
        return self.description is not None and bool(self.description.all(cap))

    def path(self, key: tuple[int, int], kind: str = "attributes") -> str:
        """(slot, member id) -> ``"co2.value"``."""
        slot, mid = key
        if self.description is None or not 0 <= slot < len(self.description.capabilities):
            return f"slot{slot}.{mid}"
        cap = self.description.capabilities[slot]
        return f"{cap.path}.{cap.member_name(kind, mid)}"  # type: ignore[arg-type]

    def key(self, path: str | tuple[int, int], kind: str = "attributes") -> tuple[int, int]:
        """``"co2.value"`` -> (slot, attr). LookupError if the accessory lacks it."""
        if self.description is None:
            raise LookupError(f"{self.label}: not described yet")
        cap, mid = self.description.resolve(path, kind)  # type: ignore[arg-type]
        return cap.slot, mid

    def value(self, path: str | tuple[int, int], default: Any = None) -> Any:
        """The last value reported or read for an attribute (None/default if none yet)."""
        try:
            return self.values.get(self.key(path), default)
        except LookupError:
            return default

    def text(self, key: tuple[int, int]) -> str:
        """The value of (slot, attr) with its unit or enum name: ``21.50 °C``."""
        cap = self._cap(key[0])
        v = self.values.get(key)
        return repr(v) if cap is None else format_value(cap.id, key[1], v)

    def _cap(self, slot: int) -> CapabilityInfo | None:
        if self.description is None or not 0 <= slot < len(self.description.capabilities):
            return None
        return self.description.capabilities[slot]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for a screen: identity, capabilities, values with text."""
        vals = []
        for k, v in sorted(self.values.items()):
            vals.append({"slot": k[0], "attr": k[1], "path": self.path(k), "value": v,
                         "text": self.text(k), "t": round(self.value_times.get(k, 0.0), 3)})
        return jsonable({
            "uid": self.uid, "label": self.label, "transport": self.transport,
            "address": (f"0x{self.address:02X}" if isinstance(self.address, int) else self.address),
            "name": None if self.name is None else f"{self.name:016X}",
            "short_id": self.short_id, "online": self.online, "ready": self.ready,
            "device_class": self.device_class, "class_name": self.class_name,
            "health": self.health, "mode": self.mode, "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "description": None if self.description is None else self.description.to_dict(),
            "values": vals, "subscriptions": self.subscriptions, "bindings": list(self.bindings),
        })

    def __repr__(self) -> str:
        state = "ready" if self.ready else "online" if self.online else "offline"
        return f"<Accessory {self.label} {self.transport} {self.address!r} {state}>"

    # --- requests ----------------------------------------------------------------------
    async def _ask(self, kind: int, args: list[Any], what: str) -> Any:
        req = self._engine.request(self, kind, args, origin="api")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Request] = loop.create_future()

        def done(r: Request) -> None:
            if not fut.done():
                fut.set_result(r)

        if req.done:
            done(req)
        else:
            req.on_done.append(done)
        r = await fut
        if r.ok:
            return r.value
        if r.status is None:
            raise RequestFailed(f"{self.label}: {what}: {r.error or 'no answer'}")
        raise RequestFailed(f"{self.label}: {what}: {catalog.status_name(r.status)}",
                            r.status, r.value)

    async def read(self, path: str | tuple[int, int]) -> Any:
        slot, attr = self.key(path)
        return await self._ask(msg.READ, [slot, attr], f"read {self.path((slot, attr))}")

    async def write(self, path: str | tuple[int, int], value: Any) -> None:
        slot, attr = self.key(path)
        await self._ask(msg.WRITE, [slot, attr, value], f"write {self.path((slot, attr))}")

    async def invoke(self, path: str | tuple[int, int], args: list[Any] | None = None) -> Any:
        slot, cmd = self.key(path, "commands")
        a: list[Any] = [slot, cmd] + ([list(args)] if args is not None else [])
        return await self._ask(msg.INVOKE, a, f"invoke {self.path((slot, cmd), 'commands')}")

    async def subscribe(self, path: str | tuple[int, int], min_ms: int = 0, max_s: int = 60,
                        threshold: int | None = None) -> tuple[int, int]:
        """Subscribe now and in every later session (re-subscribed after re-plug)."""
        key = self.key(path)
        spec = SubSpec(min_ms, max_s, threshold)
        self.user_subscriptions[key] = spec
        self.wanted[key] = spec
        args: list[Any] = [key[0], key[1], min_ms, max_s] + ([threshold] if threshold is not None else [])
        granted = await self._ask(msg.SUBSCRIBE, args, f"subscribe {self.path(key)}")
        return (int(granted[0]), int(granted[1])) if isinstance(granted, list) and len(granted) >= 2 \
            else (min_ms, max_s)

    async def unsubscribe(self, path: str | tuple[int, int]) -> None:
        key = self.key(path)
        self.user_subscriptions.pop(key, None)
        self.wanted.pop(key, None)
        await self._ask(msg.UNSUBSCRIBE, [key[0], key[1]], f"unsubscribe {self.path(key)}")
