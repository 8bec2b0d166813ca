"""The car screen: the head-unit view of a running :class:`~.car.Car` as a local web page.

::

    async with Car(can=..., ble=sim.ble) as car, CarScreen(car, port=0) as screen:
        print("car screen:", screen.url)        # http://127.0.0.1:PORT/
        ...

One asyncio server (websockets' ``serve``) on the car's event loop answers both the plain
HTTP GETs of the page and its websocket:

=================== ==============================================================
``GET /``           the page (``screen/index.html``); ``/screen.js``, ``/screen.css``
``GET /state.json`` the ``hello`` message below, for scripts and curl
``GET /ws``         the live websocket
=================== ==============================================================

The page is static: no build step, nothing fetched from elsewhere (its Content Security
Policy allows its own origin only). It mirrors the car from the websocket.

Websocket messages are JSON text frames (docs/tools/screen.md has the full format).
Server to page: ``hello`` first (``snapshot`` = :meth:`Car.snapshot`, ``history`` per
accessory and numeric attribute, ``units``, recent ``events``), then ``event`` for every
car event, and ``accessory`` (the accessory's whole :meth:`Accessory.to_dict`) after every
event of an accessory except value reports, and ``reply`` to each request. Page to server:
``{"id": N, "op": OP, ...}`` with OP ``read``/``write``/``invoke`` (``acc``, ``path``,
``value``/``args``), ``clamp``, ``release`` (``confirm``), ``vehicle`` (``name``,
``value``); each gets ``{"type": "reply", "id": N, "ok": ..., ...}``.

Contract: the server listens on loopback by default and answers only requests whose Host
is the address it listens on (or ``localhost``), and websocket upgrades only from its own
origin (or from clients that send no Origin, such as scripts): another web site open in the
same browser cannot drive the car. Requests go to the car as the application's (origin
``api``); a failure is a reply with ``ok: false`` and the status name, never a closed
socket. A page that reads too slowly (more than :data:`MAX_QUEUE` messages behind) is
disconnected; it reconnects and starts again from a fresh ``hello``. Everything runs in
the car's loop; :meth:`CarScreen.start` must be called from it.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .. import catalog
from .accessory import RequestFailed
from .events import CarEvent, jsonable

if TYPE_CHECKING:
    from .car import Car

log = logging.getLogger(__name__)

PROTOCOL = 1  # version of the websocket message format (docs/tools/screen.md)
STATIC = Path(__file__).resolve().parent / "screen"
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/index.html": ("index.html", "text/html; charset=utf-8"),
         "/screen.js": ("screen.js", "text/javascript; charset=utf-8"),
         "/screen.css": ("screen.css", "text/css; charset=utf-8")}
MAX_QUEUE = 5000  # messages waiting for one page before it is dropped
HISTORY_POINTS = 300  # per attribute in the hello message
RECENT_EVENTS = 60  # events in the hello message (not value reports or bus load)
ACC_KINDS = frozenset(("discovered", "online", "described", "ready", "moved", "restarted",
                       "offline", "event", "binding", "request", "warning", "car"))
# What the page may change on the vehicle stand-in: name -> (setter, value check).
VEHICLE_CONTROLS = {
    "media.playing": ("set_playing", bool),
    "media.volume": ("set_volume", int),
    "media.track": ("set_track", int),
    "climate.fresh_air": ("set_fresh_air", bool),
    "climate.setpoint_c": ("set_setpoint", float),
}


class CarScreen:
    """The car screen server for one :class:`Car`; see the module text.

    ``host``: the address to listen on (default loopback); ``port``: 0 for a free one.
    ``static``: another directory with index.html, screen.js and screen.css (default: the
    shipped page)."""

    def __init__(self, car: Car, host: str = "127.0.0.1", port: int = 0,
                 static: Path | None = None) -> None:
        self.car = car
        self.host = host
        self.port = port
        self.static = static or STATIC
        self._server: Server | None = None
        self._queues: dict[ServerConnection, asyncio.Queue[str | None]] = {}
        self._off: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requests = 0  # requests handled from pages (for tests and the docs)

    # --- life cycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def clients(self) -> int:
        """Pages connected now."""
        return len(self._queues)

    async def start(self) -> str:
        """Listen and follow the car's events; returns :attr:`url`. OSError if the port is
        taken."""
        for name, _ in FILES.values():
            if not (self.static / name).is_file():
                raise FileNotFoundError(f"car screen: {self.static / name} is missing")
        self._server = await serve(self._client, self.host, self.port,
                                   process_request=self._http, max_size=64 * 1024,
                                   ping_interval=20, ping_timeout=20)
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        self._off = self.car.on(self._on_event)
        return self.url

    async def stop(self) -> None:
        """Close every page's socket and stop listening."""
        if self._off is not None:
            self._off()
            self._off = None
        for q in self._queues.values():
            q.put_nowait(None)
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CarScreen:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- plain HTTP -------------------------------------------------------------------------
    def _hosts(self) -> set[str]:
        names = {self.host, "localhost", "127.0.0.1"} if self.host in ("127.0.0.1", "localhost") \
            else {self.host, f"[{self.host}]"}
        return {f"{h}:{self.port}" for h in names}

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request``: files and state over plain HTTP; None lets the
        websocket handshake go on (only for ``/ws``)."""
        host = request.headers.get("Host", "")
        if host not in self._hosts():
            return _response(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n", "text/plain")
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and origin not in {f"http://{h}" for h in self._hosts()}:
                return _response(HTTPStatus.FORBIDDEN, b"foreign origin\n", "text/plain")
            if "websocket" not in request.headers.get("Upgrade", "").lower():
                return _response(HTTPStatus.UPGRADE_REQUIRED, b"websocket only\n", "text/plain")
            return None
        if path == "/state.json":
            body = json.dumps(self.hello(), default=str).encode()
            return _response(HTTPStatus.OK, body, "application/json", host)
        if path in FILES:
            name, ctype = FILES[path]
            return _response(HTTPStatus.OK, (self.static / name).read_bytes(), ctype, host)
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    # --- state ------------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        """The first message to a page: the whole state."""
        history: dict[str, dict[str, list[list[Any]]]] = {}
        for acc in self.car.accessories():
            per: dict[str, list[list[Any]]] = {}
            for key, points in acc.history.items():
                pts = [[round(t, 3), v] for t, v in list(points)[-HISTORY_POINTS:]
                       if isinstance(v, (int, float)) and not isinstance(v, bool)]
                if pts:
                    per[acc.path(key)] = pts
            history[acc.uid] = per
        recent = [e.to_dict() for e in self.car.timeline[-2000:] if e.kind not in ("value", "bus")]
        return {"type": "hello", "protocol": PROTOCOL, "snapshot": self.car.snapshot(),
                "history": history, "units": units(), "events": recent[-RECENT_EVENTS:]}

    def _on_event(self, ev: CarEvent) -> None:
        if not self._queues:
            return
        out = [json.dumps({"type": "event", "event": ev.to_dict()}, default=str)]
        if ev.acc is not None and ev.kind in ACC_KINDS:
            acc = self.car.accessory(ev.acc)
            if acc is not None:
                out.append(json.dumps({"type": "accessory", "accessory": acc.to_dict()},
                                      default=str))
        for conn, q in list(self._queues.items()):
            if q.qsize() + len(out) > MAX_QUEUE:
                log.warning("car screen: a page is %d messages behind; dropping it", q.qsize())
                self._queues.pop(conn, None)
                q.put_nowait(None)
                continue
            for m in out:
                q.put_nowait(m)

    # --- the websocket ------------------------------------------------------------------------
    async def _client(self, conn: ServerConnection) -> None:
        q: asyncio.Queue[str | None] = asyncio.Queue()
        self._queues[conn] = q
        q.put_nowait(json.dumps(self.hello(), default=str))
        sender = asyncio.create_task(self._send(conn, q))
        try:
            async for raw in conn:
                task = asyncio.create_task(self._handle(q, raw))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            self._queues.pop(conn, None)
            sender.cancel()

    async def _send(self, conn: ServerConnection, q: asyncio.Queue[str | None]) -> None:
        try:
            while (m := await q.get()) is not None:
                await conn.send(m)
            await conn.close(1013, "too far behind; reconnect")
        except ConnectionClosed:
            pass

    async def _handle(self, q: asyncio.Queue[str | None], raw: str | bytes) -> None:
        rid: Any = None
        try:
            m = json.loads(raw)
            if not isinstance(m, dict):
                raise ValueError("a request is a JSON object")
            rid = m.get("id")
            reply = await self.request(m)
        except (ValueError, TypeError) as e:
            reply = {"ok": False, "error": str(e)}
        q.put_nowait(json.dumps({"type": "reply", "id": rid, **jsonable(reply)}, default=str))

    async def request(self, m: dict[str, Any]) -> dict[str, Any]:
        """Carry out one page request (without ``id``); returns the reply's fields:
        ``ok`` and ``result`` (and ``text``), or ``ok: false`` with ``error`` and, for an
        accessory's answer, ``status``. ValueError for a request that makes no sense."""
        self.requests += 1
        op = m.get("op")
        car = self.car
        try:
            if op in ("read", "write", "invoke"):
                acc = car.accessory(str(m.get("acc")))
                if acc is None:
                    raise ValueError(f"no accessory {m.get('acc')!r}")
                path = m.get("path")
                if not isinstance(path, str):
                    raise ValueError("path must be capability.member, e.g. co2.value")
                if op == "read":
                    v = await acc.read(path)
                    return {"ok": True, "result": v, "text": f"{path} = {v!r}"}
                if op == "write":
                    if "value" not in m:
                        raise ValueError("write needs a value")
                    await acc.write(path, m["value"])
                    return {"ok": True, "result": None, "text": f"{path}: OK"}
                args = m.get("args")
                if args is not None and not isinstance(args, list):
                    raise ValueError("args must be a list")
                res = await acc.invoke(path, args)
                return {"ok": True, "result": res,
                        "text": f"{path}: OK" + ("" if res is None else f" {res!r}")}
            if op == "clamp":
                res = await car.clamp_phone()
                return {"ok": res == "clamped", "result": res, "text": res}
            if op == "release":
                res = await car.release_phone(confirm=bool(m.get("confirm")))
                return {"ok": res == "released", "result": res, "text": res}
            if op == "vehicle":
                return self._vehicle(m.get("name"), m.get("value"))
            raise ValueError(f"unknown op {op!r}; one of read, write, invoke, clamp, release, "
                             "vehicle")
        except RequestFailed as e:
            return {"ok": False, "error": str(e), "status": e.status_name}
        except LookupError as e:
            return {"ok": False, "error": str(e).strip("'\"")}

    def _vehicle(self, name: Any, value: Any) -> dict[str, Any]:
        if name not in VEHICLE_CONTROLS:
            raise ValueError(f"vehicle: {name!r} is not something the screen sets; one of "
                             + ", ".join(VEHICLE_CONTROLS))
        setter, typ = VEHICLE_CONTROLS[name]
        if typ is bool and not isinstance(value, bool) or \
                typ is not bool and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"vehicle: {name} takes a {typ.__name__}, not {value!r}")
        if typ is int and value != int(value):
            raise ValueError(f"vehicle: {name} takes a whole number, not {value!r}")
        getattr(self.car.vehicle, setter)(typ(value))
        return {"ok": True, "result": self.car.vehicle.snapshot()[name], "text": f"{name} set"}


def units() -> dict[str, dict[str, Any]]:
    """Registry unit -> ``{"scale": divisor, "suffix": " °C"}`` as the timeline shows them."""
    return {u: {"scale": s, "suffix": suffix} for u, (s, suffix) in catalog.UNITS.items()}


def _response(status: HTTPStatus, body: bytes, ctype: str, host: str | None = None) -> Response:
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
        ("Content-Length", str(len(body))), ("Content-Type", ctype),
        ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer")])
    if host is not None:  # the page may load and connect to its own origin only
        headers["Content-Security-Policy"] = (
            f"default-src 'self'; connect-src 'self' ws://{host}; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'none'")
    return Response(status.value, status.phrase, headers, body)
