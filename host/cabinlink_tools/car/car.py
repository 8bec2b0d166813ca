"""The reference car (head unit), async: CAN and BLE at once, bindings, a vehicle, events.

::

    async with Car(can="cabinlink:127.0.0.1:40123", ble=sim.ble) as car:
        car.on(lambda ev: print(ev.line()))           # or: async for ev in car.events(): ...
        amb = await car.wait_ready(lambda a: a.has("co2"))
        print(await amb.read("co2.value"), amb.value("temperature.value"))
        await amb.subscribe("humidity.value", min_ms=500, max_s=30)
        car.vehicle.set_speed(50)                      # the mounts are told at once

What it does (spec sections in brackets): claims its CAN address 0x00..0x0F and sends its
heartbeat [7.3, 7.6]; asks who is on the bus and tracks accessories by NAME across address
changes [7.3]; scans for the CabinLink service UUID over BLE and connects [8.2]; says HELLO,
reads DESCRIBE, binds by capability (:mod:`.bindings`), writes the mount's
``vehicle_moving``, subscribes [5.3, 5.4, 6]; notices an accessory gone (more than 3000 ms
without a frame on CAN, a disconnection on BLE) [7.6, 8.7] and brings its session back
(HELLO, DESCRIBE if it may have restarted, the policy writes, every subscription) as soon
as it is heard again [M-6.6-4]. An accessory reachable both ways is used over CAN [2.2].

Threading: everything runs in the event loop that called :meth:`Car.start`; the protocol
core's ``CanLink`` is polled by a task as soon as a frame arrives (python-can's ``Notifier``
queues it and wakes the task) and at least every ``poll_ms`` (2 ms) for its timers, and the
simulated BLE radio's callbacks are handed over with ``call_soon_threadsafe``: nothing
blocks the loop. Vehicle changes may come from any
thread. Other calls (``read``, ``write``, ...) belong to the car's loop; from another thread
use ``asyncio.run_coroutine_threadsafe``.

Replay: :meth:`Car.replay` builds a passive car that reads a ``candump -L`` log recorded by
``record=`` (or any candump of a CabinLink bus) and turns it into the same events as live.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import can

from cabinlink import claim
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock, ManualClock

from ..sim.vehicle import Vehicle
from .accessory import Accessory, RequestFailed
from .ble import BleAdvert, BleTransport, CarBleLink, open_ble
from .bindings import Bindings, BindingRunner, load_bindings
from .can import (BusMeter, CandumpRecorder, CarController, Sniffer, is_claim_request, open_can,
                  read_candump)
from .engine import CanSide, Engine
from .events import CarEvent, EventHub

log = logging.getLogger(__name__)

CAR_FUNCTION = 0xBF  # the NAME function of the reference car (spec Appendix A)
CAN_GRACE_S = 2.0  # a BLE advertiser flagged "also on CAN" is given this long to show up on CAN
BLE_RETRY_S = 2.0


class _Wake:
    """The poll task's wake-up, set from the loop's thread (a frame arrived): the task's
    wait ends at the next turn of the loop. asyncio.Event with wait_for() costs a task and
    three turns per frame, which is most of the car's reaction time to a flow control."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Return once :meth:`set` was called (since the last wait), or after ``timeout`` s."""
        if not self._set:
            w = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _release, w)
            try:
                await w
            finally:
                timer.cancel()
                self._waiter = None
        self._set = False


def _release(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_result(None)


def car_name(identity: int = 1) -> int:
    """The car's NAME: not arbitrary address capable (bit 63 clear), spec 7.3."""
    return claim.make_name(identity, CAR_FUNCTION, arbitrary=False)


class Car:
    """The reference car; see the module text.

    ``can``: one or more python-can ``INTERFACE:CHANNEL`` strings or ``can.BusABC`` objects
    (None: no CAN). ``ble``: a simulation's BleWorld, ``"bleak[:ADAPTER]"``,
    ``"bumble:TRANSPORT"`` or a :class:`~.ble.BleTransport` (None: no BLE). ``bindings``: a
    :class:`~.bindings.Bindings`, a file, or None for the shipped default. ``vehicle``: the
    vehicle stand-in (a new :class:`~cabinlink_tools.sim.vehicle.Vehicle` by default).
    ``address``: the CAN address to claim (0x00..0x0F). ``record``: write a candump log.
    """

    def __init__(self, can: str | can.BusABC | Sequence[str | can.BusABC] | None = None,
                 ble: Any = None, *, bindings: Bindings | str | Path | None = None,
                 vehicle: Vehicle | None = None, address: int = 0x00, identity: int = 1,
                 record: str | Path | None = None, request_timeout_ms: int = 2000,
                 poll_ms: float = 2.0, stats_every_s: float = 1.0,
                 _passive_clock: ManualClock | None = None) -> None:
        if not 0 <= address <= 0x0F:
            raise ValueError(f"a car's CAN address is 0x00..0x0F (spec 7.3), not 0x{address:02X}")
        if can is None:
            self._can_specs: list[str | Any] = []
        elif isinstance(can, (str, bytes)) or not isinstance(can, Sequence):
            self._can_specs = [can]
        else:
            self._can_specs = list(can)
        self._ble_spec = ble
        self.bindings = bindings if isinstance(bindings, Bindings) else load_bindings(bindings)
        self.vehicle = vehicle if vehicle is not None else Vehicle()
        self.address = address
        self.identity = identity
        self.name = car_name(identity)
        self.poll_s = poll_ms / 1000.0
        self.stats_every_s = stats_every_s
        self.passive = _passive_clock is not None
        self.clock: Any = _passive_clock if _passive_clock is not None else Clock()
        self.hub = EventHub()
        self.engine = Engine(self.clock, self._emit, passive=self.passive,
                             request_timeout_ms=request_timeout_ms)
        self.runner = BindingRunner(self.bindings, self.vehicle, self._request, self._note,
                                    lambda: list(self.engine.accessories.values()))
        self.engine.planner = self.runner
        self._record_path = Path(record) if record is not None else None
        self.recorder: CandumpRecorder | None = None
        self.controllers: list[CarController] = []
        self.links: list[CanLink] = []
        self._sides: list[CanSide] = []
        self._claimed: list[bool] = []
        self.meters: list[BusMeter] = []
        self.bus_stats: list[dict[str, Any]] = []
        self._ble: BleTransport | None = None
        self._ble_links: dict[str, CarBleLink] = {}
        self._ble_busy: set[str] = set()
        self._ble_first_seen: dict[str, float] = {}
        self._ble_retry_at: dict[str, float] = {}
        self._ble_via_can: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poll_task: asyncio.Task[None] | None = None
        self._wake: _Wake | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._running = False
        self._t_stats = 0.0
        self._epoch0 = time.time()
        self._mono0 = time.monotonic()
        self.vehicle.listeners.append(self._on_vehicle)

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> Car:
        if self.passive:
            raise RuntimeError("a replay car runs with run_replay(), not start()")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake = _Wake(self._loop)
        self._running = True
        if self._record_path is not None:
            self.recorder = CandumpRecorder(self._record_path, "can0", self._epoch)
        try:
            for i, spec in enumerate(self._can_specs):
                self._open_can(i, spec)
            if self._ble_spec is not None:
                self._ble = await open_ble(self._ble_spec)
                await self._ble.start(self._on_advert)
                self._note("car", None, f"scanning for CabinLink accessories over BLE "
                           f"({self._ble.name})", what="ble_scanning")
        except BaseException:
            await self.stop()
            raise
        self._t_stats = time.monotonic()
        self._poll_task = self._loop.create_task(self._poll_loop(), name="cabinlink-car-poll")
        return self

    def _open_can(self, i: int, spec: Any) -> None:
        if isinstance(spec, str):
            ctl = open_can(spec, record=self.recorder)
        else:
            ctl = CarController(spec, repr(spec), record=self.recorder)
        self.controllers.append(ctl)
        side = self.engine.add_can(None)

        def rx(can_id: int, data: bytes, side: CanSide = side) -> None:
            if is_claim_request(can_id, data):  # another node asked: answers follow
                self.engine.claims_requested(side)

        ctl.on_rx = rx
        # M-7.4-9: a car receives 4095. One ISO-TP connection per accessory address and
        # priority, all at once if need be: 16 accessories plugged in together answer
        # DESCRIBE together (the core's default of 8 would drop the others' frames).
        link = CanLink(ctl, side, self.clock, self.name, self.address, pool=(0x00, 0x0F),
                       rx_max=4095, on_peer=side.on_peer, max_channels=2 * 120)
        side.link = link
        self.links.append(link)
        self._sides.append(side)
        self._claimed.append(False)
        self.meters.append(ctl.meter)
        self.bus_stats.append({"bus": i, "spec": ctl.spec, "frames_per_s": 0.0, "load": 0.0,
                               "bitrate": ctl.meter.bitrate})
        link.start()
        assert self._loop is not None and self._wake is not None
        ctl.wake_on_rx(self._loop, self._wake.set)

    async def stop(self) -> None:
        if not self._running and self._poll_task is None:
            return
        started = self._poll_task is not None
        self._running = False
        if self._poll_task is not None:
            self._poll_task.cancel()
            try:
                await self._poll_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._poll_task = None
        for t in list(self._tasks):
            t.cancel()
        for link in list(self._ble_links.values()):
            if link.conn is not None:
                try:
                    await asyncio.wait_for(link.conn.disconnect(), 3)
                except Exception:  # noqa: BLE001 - going anyway
                    pass
            link.close()
        if self._ble is not None:
            await self._ble.close()
        for ctl in self.controllers:
            try:
                ctl.shutdown()
            except Exception:  # noqa: BLE001
                pass
        if self.recorder is not None:
            self.recorder.close()
        if self._on_vehicle in self.vehicle.listeners:
            self.vehicle.listeners.remove(self._on_vehicle)
        if started:
            self._note("car", None, "stopped", what="stopped")
        self.hub.close()

    async def __aenter__(self) -> Car:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _epoch(self) -> float:
        return self._epoch0 + (time.monotonic() - self._mono0)

    # --- the poll task ---------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        wake = self._wake
        assert wake is not None
        while self._running:
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the car keeps running
                log.exception("car poll failed")
            await wake.wait(self.poll_s)

    def poll_once(self) -> None:
        """One round: every CAN link (frames in, timers, frames out), the engine's timers,
        the car's own claim, the bus load. The poll task calls it when a frame has arrived,
        and at least every ``poll_ms``."""
        for i, link in enumerate(self.links):
            link.poll()
            if not self._claimed[i]:
                if link.claim.ready:
                    self._claimed[i] = True
                    self.engine.car_claimed(self._sides[i], link.address)
                    self.engine.request_claims(self._sides[i])  # SHOULD after the claim (7.3)
                elif link.claim.state == claim.CANNOT_CLAIM:
                    self._claimed[i] = True
                    self._note("warning", None, f"cannot claim CAN address 0x{self.address:02X} "
                               "on bus %d: a car with a lower NAME holds it" % i)
        self.engine.poll()
        now = time.monotonic()
        if now - self._t_stats >= self.stats_every_s:
            self._bus_stats(now - self._t_stats)
            self._t_stats = now

    def _bus_stats(self, dt: float) -> None:
        if self.recorder is not None:
            self.recorder.flush()  # at most a second of the log is lost if the car dies
        for i, m in enumerate(self.meters):
            fps, load = m.take(dt)
            st = self.bus_stats[i]
            st.update(frames_per_s=round(fps, 1), load=round(load, 4))
            self._note("bus", None, f"bus {i}: {fps:.0f} frames/s, load {load * 100:.1f} %",
                       bus=i, frames_per_s=round(fps, 1), load=round(load, 4),
                       bitrate=m.bitrate)

    # --- events ----------------------------------------------------------------------------
    def _emit(self, kind: str, acc: Accessory | None, text: str, data: dict[str, Any]) -> None:
        who = acc.label if acc is not None else {"vehicle": "vehicle", "bus": "bus"}.get(kind, "car")
        ev = CarEvent(self.engine.seconds(), kind, acc.uid if acc is not None else None, who,
                      text, data)
        self.hub.emit(ev)
        if acc is not None:
            if kind == "event":
                self.runner.on_event(acc, data["slot"], data["event"], data.get("data"))
            elif kind == "value":
                self.runner.on_value(acc, data["slot"], data["attr"], data["value"])

    def _note(self, kind: str, acc: Accessory | None, line: str, **data: Any) -> None:
        self._emit(kind, acc, line, data)

    def _request(self, acc: Accessory, kind: int, args: list[Any], origin: str) -> Any:
        return self.engine.request(acc, kind, args, origin)

    def _on_vehicle(self, name: str, value: object) -> None:
        if self._loop is not None and threading.get_ident() != self._thread:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._vehicle_changed, name, value)
            return
        self._vehicle_changed(name, value)

    def _vehicle_changed(self, name: str, value: object) -> None:
        shown = f"{value:g}" if isinstance(value, float) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        self._note("vehicle", None, f"{name} = {shown}", name=name, value=value)
        self.runner.on_vehicle(name, value)

    def on(self, callback: Callable[[CarEvent], None],
           kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` in the car's loop for every event (of ``kinds``); returns
        a function that removes it."""
        return self.hub.on(callback, kinds)

    def events(self, kinds: Iterable[str] | None = None) -> AsyncIterator[CarEvent]:
        """``async for ev in car.events(): ...`` - every event from now on, until stop."""
        return self.hub.stream(kinds)

    @property
    def timeline(self) -> list[CarEvent]:
        """Every event so far (the last 10000)."""
        return list(self.hub.history)

    async def wait_for(self, kind: str | None = None, *, acc: Accessory | str | None = None,
                       match: Callable[[CarEvent], bool] | None = None, timeout: float = 10.0,
                       since: int | None = None) -> CarEvent:
        """The first event of ``kind`` (for ``acc``, passing ``match``) - from the history
        index ``since`` if given, else from now. TimeoutError after ``timeout`` s."""
        uid = acc.uid if isinstance(acc, Accessory) else acc

        def ok(ev: CarEvent) -> bool:
            return (kind is None or ev.kind == kind) and (uid is None or ev.acc == uid) \
                and (match is None or match(ev))

        if since is not None:
            for ev in self.hub.history[since:]:
                if ok(ev):
                    return ev
        fut: asyncio.Future[CarEvent] = asyncio.get_running_loop().create_future()

        def cb(ev: CarEvent) -> None:
            if not fut.done() and ok(ev):
                fut.set_result(ev)

        off = self.hub.on(cb)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            off()

    async def wait_ready(self, match: Callable[[Accessory], bool] | str | None = None,
                         timeout: float = 20.0) -> Accessory:
        """An accessory that is ready (and matches: a predicate, or a uid/label)."""
        def fits(a: Accessory) -> bool:
            if match is None:
                return True
            if isinstance(match, str):
                return match in (a.uid, a.label)
            return match(a)

        for a in self.engine.accessories.values():
            if a.ready and fits(a):
                return a
        ev = await self.wait_for("ready", match=lambda e: fits(self.engine.accessories[e.acc or ""]),
                                 timeout=timeout)
        return self.engine.accessories[ev.acc or ""]

    # --- accessories ----------------------------------------------------------------------
    def accessories(self, online: bool | None = None) -> list[Accessory]:
        """Every accessory the car knows (``online=True``: only those online)."""
        out = list(self.engine.accessories.values())
        return out if online is None else [a for a in out if a.online == online]

    def accessory(self, key: str | int) -> Accessory | None:
        """By uid (``can:<NAME>``, ``ble:<address>``), label (serial) or CAN NAME."""
        for a in self.engine.accessories.values():
            if key in (a.uid, a.label) or (isinstance(key, int) and a.name == key):
                return a
        return None

    def with_capability(self, cap: int | str) -> list[Accessory]:
        """The accessories that have capability ``cap`` (registry id or name)."""
        return [a for a in self.engine.accessories.values() if a.has(cap)]

    def set_bindings(self, bindings: Bindings | str | Path | None) -> None:
        """Use other bindings from now on (a file, a Bindings, None for the default): every
        online accessory gets a new session with the new subscriptions and policy."""
        b = bindings if isinstance(bindings, Bindings) else load_bindings(bindings)
        self.bindings = b
        self.runner.b = b
        self.engine.replan()

    # --- the phone mount policy -----------------------------------------------------------
    async def clamp_phone(self, acc: Accessory | None = None) -> str:
        """Close the clamp of ``acc`` (or of every mount); returns what happened."""
        return await self._mount("clamp", acc, False)

    async def release_phone(self, acc: Accessory | None = None, confirm: bool = False) -> str:
        """Open the clamp. While the vehicle moves the mount answers CONFIRM_REQUIRED unless
        ``confirm`` (the driver confirmed on the screen); the policy ``refuse`` never sends
        it. Returns ``released``, ``confirm_required``, ``refused: ...`` or a failure."""
        return await self._mount("release", acc, confirm)

    async def _mount(self, what: str, acc: Accessory | None, confirm: bool) -> str:
        targets = self.runner.mount_targets(acc)
        if not targets:
            return "no phone mount"
        if what == "release" and self.vehicle.moving and \
                self.bindings.mount.release_while_moving == "refuse":
            text = "refused: the vehicle is moving (mount policy)"
            self._note("warning", targets[0], f"release {text}")
            return text
        outcome = "clamped" if what == "clamp" else "released"
        for t in targets:
            try:
                await t.invoke(f"clamp.{what}", [True] if what == "release" and confirm else None)
            except RequestFailed as e:
                if e.status_name == "CONFIRM_REQUIRED":
                    self._note("warning", t, "release needs the driver's confirmation while "
                               "the vehicle moves")
                    outcome = "confirm_required"
                else:
                    outcome = f"failed: {e}"
            except LookupError as e:
                outcome = f"failed: {e}"
        return outcome

    # --- BLE ---------------------------------------------------------------------------------
    def _on_advert(self, adv: BleAdvert) -> None:
        if not self._running:
            return
        now = time.monotonic()
        uid = f"ble:{adv.address}"
        known = self.engine.accessories.get(uid)
        if known is not None and (known.online or uid in self._ble_busy):
            return
        if adv.flags & 1 and self.links:  # also on CAN: CAN by preference (spec 2.2)
            can_acc = self.engine.find_can_by_short_id(adv.short_id)
            if can_acc is not None:
                if self._ble_via_can.get(adv.address) != can_acc.uid:
                    self._ble_via_can[adv.address] = can_acc.uid
                    self._note("car", can_acc, f"also advertising over BLE at {adv.address}: "
                               "using CAN", what="ble_duplicate", address=adv.address)
                return
            if now - self._ble_first_seen.setdefault(uid, now) < CAN_GRACE_S:
                return
        if now < self._ble_retry_at.get(uid, 0.0):
            return
        acc = self.engine.ble_seen(adv.address, adv.short_id, adv.device_class, adv.flags)
        self._ble_busy.add(uid)
        task = asyncio.get_running_loop().create_task(self._ble_connect(acc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ble_connect(self, acc: Accessory) -> None:
        assert self._ble is not None and isinstance(acc.address, str)
        link = CarBleLink(lambda data: self.engine.ble_receive(acc, data))

        def gone() -> None:
            link.close()
            if self._ble_links.get(acc.uid) is link:
                del self._ble_links[acc.uid]
            self.engine.ble_disconnected(acc)

        try:
            conn = await self._ble.connect(acc.address, link.feed, gone)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed connection is retried later
            self._ble_retry_at[acc.uid] = time.monotonic() + BLE_RETRY_S
            self._note("warning", acc, f"BLE connection failed: {e or type(e).__name__}")
            return
        finally:
            self._ble_busy.discard(acc.uid)
        if not self._running:
            await conn.disconnect()
            return
        link.attach(conn)
        self._ble_links[acc.uid] = link
        self.engine.ble_connected(acc, link)

    # --- state for a screen -----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything a screen shows, JSON-ready; keep it current with :meth:`on`."""
        return {
            "t": round(self.engine.seconds(), 3),
            "car": {"address": self.address, "name": f"{self.name:016X}",
                    "can": [dict(s, claimed=bool(link.claim.ready), address=link.address)
                            for s, link in zip(self.bus_stats, self.links)],
                    "ble": None if self._ble is None else self._ble.name,
                    "replay": self.passive},
            "vehicle": self.vehicle.snapshot(),
            "accessories": [a.to_dict() for a in self.engine.accessories.values()],
            "bindings": [{"name": b.name, "trigger": b.trigger, "action": b.action}
                         for b in self.bindings.bindings],
            "policy": {"release_while_moving": self.bindings.mount.release_while_moving,
                       "tell_vehicle_moving": self.bindings.mount.tell_vehicle_moving},
        }

    # --- replay ----------------------------------------------------------------------------
    @classmethod
    def replay(cls, log: str | Path, *, bindings: Bindings | str | Path | None = None,
               vehicle: Vehicle | None = None, address: int | None = None) -> Replay:
        """A passive car fed by a ``candump -L`` log: ``await car.run(...)``."""
        return Replay(log, bindings=bindings, vehicle=vehicle, address=address)


class Replay:
    """A recorded drive played into a passive :class:`Car` (see :meth:`Car.replay`).

    Frames are fed in file order; the car's clock (a manual clock) follows the log's time
    stamps in 2 ms steps, so its timers (3 s offline, request timeouts) fire where they
    fired live. The car sends nothing; its own recorded requests are matched with their
    RESULTs. BLE traffic is not in a CAN log and is not replayed; nor are vehicle changes
    made from outside the car (the driver, a script)."""

    STEP_MS = 2

    def __init__(self, log: str | Path, *, bindings: Bindings | str | Path | None = None,
                 vehicle: Vehicle | None = None, address: int | None = None) -> None:
        self.path = Path(log)
        self.clock = ManualClock(0)
        self.car = Car(None, None, bindings=bindings, vehicle=vehicle, _passive_clock=self.clock)
        self.side = self.car.engine.add_can(None)
        self.sniffer = Sniffer(self.car.engine, self.side, self.clock, address)
        self.meter = BusMeter(500_000)
        self.frames = 0

    def on(self, callback: Callable[[CarEvent], None],
           kinds: Iterable[str] | None = None) -> Callable[[], None]:
        return self.car.on(callback, kinds)

    @property
    def timeline(self) -> list[CarEvent]:
        return self.car.timeline

    def _advance_to(self, ms: int, state: dict[str, int]) -> None:
        car = self.car
        while self.clock.now < ms:
            self.clock.advance(min(self.STEP_MS, ms - self.clock.now))
            car.engine.poll()
            self.sniffer.poll()
            if self.clock.now - state["stats"] >= 1000:
                fps, load = self.meter.take((self.clock.now - state["stats"]) / 1000.0)
                state["stats"] = self.clock.now
                car._note("bus", None, f"bus 0: {fps:.0f} frames/s, load {load * 100:.1f} %",
                          bus=0, frames_per_s=round(fps, 1), load=round(load, 4),
                          bitrate=self.meter.bitrate)

    async def run(self, speed: float | None = None) -> list[CarEvent]:
        """Play the whole log (``speed`` 1.0 = real time, None = as fast as possible) and
        return the timeline. ValueError for a file that is not a candump log."""
        car = self.car
        car._loop = asyncio.get_running_loop()
        car._thread = threading.get_ident()
        t0: float | None = None
        wall0 = time.monotonic()
        state = {"stats": 0}
        for f in read_candump(self.path):
            if t0 is None:
                t0 = f.t
            ms = max(self.clock.now, int(round((f.t - t0) * 1000)))
            self._advance_to(ms, state)
            if speed:
                lag = (f.t - t0) / speed - (time.monotonic() - wall0)
                if lag > 0:
                    await asyncio.sleep(lag)
            if f.error:
                continue
            self.meter.count(f.can_id, f.data, f.extended)
            self.sniffer.frame(f.can_id, f.data, f.extended)
            self.frames += 1
            if self.frames % 200 == 0:
                await asyncio.sleep(0)  # let async consumers of the events run
        if t0 is None:
            raise ValueError(f"{self.path}: no frames")
        car.engine.poll()
        if car._on_vehicle in car.vehicle.listeners:
            car.vehicle.listeners.remove(car._on_vehicle)
        return car.timeline
