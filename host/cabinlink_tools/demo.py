"""``cabinlink demo`` (``make demo``): a short drive with the real firmware, the reference car
and its screen, on the simulated world. No hardware.

What runs: the simulation (:class:`~.sim.simulation.Simulation`) with the three reference
accessories, each its real firmware on a simulated ESP32 board: the **controller** on CAN
only (MicroPython unix port), the **ambient** sensor on BLE only (CPython), the phone
**mount** on both (CPython; the car uses it over CAN, spec 2.2). The reference car
(:class:`~.car.car.Car`, default bindings) drives the simulated vehicle, which the cabin
follows (fresh air really lowers the CO2 the sensor measures), and serves the car screen
(:class:`~.car.screen.CarScreen`), whose address is printed first.

The scripted drive, each step checked against the car's events:

1. the three accessories are found and ready, each over its transport;
2. the driver closes the door and switches the ignition on;
3. a press of the controller's button 0 starts the music (binding ``play/pause``);
4. a phone goes into the mount and the car clamps it;
5. four people breathe: the CO2 rises, the ambient raises ``co2.air_quality`` poor, the car
   switches to fresh air (binding ``stale air: fresh air``);
6. the knob turns four detents: the volume goes up by four;
7. the car drives off: the mount is told ``vehicle_moving`` and refuses a release without
   the driver's confirmation.

Then the demo keeps running (the screen stays live) until Ctrl-C; ``--headless`` ends after
the script instead. Contract: :func:`run` returns 0 when every step was observed, 1 when one
was not (a line names it), and prints a timeline: the car's events (:meth:`CarEvent.line`)
and the script's own ``drive`` lines, in seconds since the car started.
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

BOARD = "esp32-devkitc"
READY_TIMEOUT_S = 60.0  # boot and bring-up of all three; generous for a loaded machine
WAIT_S = 20.0  # for one scripted effect to show
# Value reports shown in the timeline without --verbose: the quantities the story is about.
STORY_VALUES = frozenset(("co2.value", "co2.level", "clamp.state", "clamp.vehicle_moving",
                          "phone_presence.present", "rotary_encoder.position"))


@dataclass
class Step:
    """One scripted step: ``title`` names it in the timeline and in a failure."""

    title: str
    observed: bool = False
    why: str = ""


class Drive:
    """The scripted drive against a started car (see the module text)."""

    def __init__(self, car: Any, sim: Any, accessories: dict[str, Any], out: TextIO,
                 speed: float = 1.0) -> None:
        self.car = car
        self.sim = sim
        self.boards = accessories  # "controller" / "ambient" / "mount" -> sim Accessory
        self.out = out
        self.speed = speed
        self.steps: list[Step] = []
        self.acc: dict[str, Any] = {}  # the car's Accessory objects

    # --- output and time ---------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.out.write(f"{self.car.engine.seconds():9.3f}  {'drive':<14} {text}\n")
        self.out.flush()

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)

    async def step(self, title: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run one step; it is observed when ``body`` returns, missing when it raises."""
        s = Step(title)
        self.steps.append(s)
        self.say(f"▶ {title}")
        try:
            await body()
            s.observed = True
        except (TimeoutError, asyncio.TimeoutError):
            s.why = "not seen in time"
        except AssertionError as e:
            s.why = str(e) or "an effect differed"
        except Exception as e:  # noqa: BLE001 - a failed step is reported, the drive goes on
            s.why = f"{type(e).__name__}: {e}"
        if not s.observed:
            self.say(f"✗ {title}: {s.why}")

    async def wait(self, kind: str, since: int, acc: Any = None,
                   match: Callable[[Any], bool] | None = None, timeout: float = WAIT_S) -> Any:
        return await self.car.wait_for(kind, acc=acc, since=since, match=match, timeout=timeout)

    # --- the script --------------------------------------------------------------------------
    async def run(self) -> list[Step]:
        await self.step("three accessories: controller on CAN, ambient on BLE, mount on both",
                        self._ready)
        if len(self.acc) < 3:
            return self.steps  # nothing to drive with
        await self.pause(1.0)
        await self.step("doors close, ignition on", self._doors)
        await self.pause(1.0)
        await self.step("button 0 on the controller: music plays", self._play)
        await self.pause(1.0)
        await self.step("phone inserted and clamped", self._phone)
        await self.pause(1.0)
        await self.step("four people breathe: CO2 rises -> air-quality event -> fresh air",
                        self._co2)
        await self.pause(1.0)
        await self.step("the knob turns 4 detents: volume +4", self._knob)
        await self.pause(1.0)
        await self.step("speed rises: clamp locked, release refused without confirmation",
                        self._speed)
        return self.steps

    async def _ready(self) -> None:
        car = self.car
        for key, transport in (("controller", "can"), ("ambient", "ble"), ("mount", "can")):
            acc = await car.wait_ready(key, timeout=READY_TIMEOUT_S)
            assert acc.transport == transport, f"{key} is on {acc.transport}, expected {transport}"
            self.acc[key] = acc

    async def _doors(self) -> None:
        v, n = self.car.vehicle, len(self.car.timeline)
        v.close_door("front_left")
        await self.pause(0.5)
        v.set_ignition(True)
        await self.wait("vehicle", n, match=lambda e: e.data["name"] == "door.front_left"
                        and e.data["value"] is False)
        await self.wait("vehicle", n, match=lambda e: e.data["name"] == "ignition"
                        and e.data["value"] is True)

    async def _play(self) -> None:
        ctl, n = self.boards["controller"], len(self.car.timeline)
        await asyncio.to_thread(ctl.press, 0)
        await asyncio.sleep(0.15)
        await asyncio.to_thread(ctl.release, 0)
        await self.wait("binding", n, self.acc["controller"],
                        lambda e: e.data["action"] == "media.play_pause")
        assert self.car.vehicle.playing, "the music did not start"

    async def _phone(self) -> None:
        mnt, acc, n = self.boards["mount"], self.acc["mount"], len(self.car.timeline)
        await asyncio.to_thread(mnt.insert_phone)
        await self.wait("value", n, acc, lambda e: e.data["path"] == "phone_presence.present"
                        and e.data["value"] is True)
        result = await self.car.clamp_phone()
        assert result == "clamped", f"clamp: {result}"
        await self.wait("value", n, acc, lambda e: e.data["path"] == "clamp.state"
                        and e.data["text"] == "clamped")

    async def _co2(self) -> None:
        sim, acc, n = self.sim, self.acc["ambient"], len(self.car.timeline)
        with sim.world.lock:
            sim.cabin.occupants = 4
        for ppm in (800, 1000, 1300):  # four people in a closed car, sped up
            with sim.world.lock:
                sim.cabin.set_co2(max(ppm, sim.cabin.co2))
            await self.pause(2.0)
        await self.wait("event", n, acc, lambda e: e.data["path"] == "co2.air_quality"
                        and e.data["text"] == "poor", timeout=30)
        await self.wait("binding", n, acc, lambda e: e.data["action"] == "climate.fresh_air")
        assert self.car.vehicle.fresh_air and sim.cabin.fresh_air, "fresh air is not on"

    async def _knob(self) -> None:
        ctl, v, n = self.boards["controller"], self.car.vehicle, len(self.car.timeline)
        want = min(v.volume + 4, 40)
        await asyncio.to_thread(ctl.turn, 4)
        await self.wait("vehicle", n, match=lambda e: e.data["name"] == "media.volume"
                        and e.data["value"] == want)

    async def _speed(self) -> None:
        car, v, acc = self.car, self.car.vehicle, self.acc["mount"]
        n = len(car.timeline)
        for kmh in (12, 30, 50):
            v.set_speed(kmh)
            await self.pause(1.0)
        await self.wait("request", n, acc, lambda e: e.data["path"] == "clamp.vehicle_moving"
                        and e.data["status"] == 0)
        assert acc.value("clamp.vehicle_moving") is True, "the mount was not told"
        self.say("the driver asks to release the phone, without confirming")
        result = await car.release_phone()
        assert result == "confirm_required", f"release while moving: {result}"
        await asyncio.sleep(0.5)
        assert acc.value("clamp.state") == 2, "the clamp let go"  # 2: clamped
        self.say("release refused: the mount wants the driver's confirmation while moving")


class _Printer:
    """The timeline: every car event but the bus load; value reports of the story only
    (all with ``verbose``), and only when they change."""

    def __init__(self, out: TextIO, verbose: bool) -> None:
        self.out = out
        self.verbose = verbose
        self.last: dict[tuple[str | None, str], Any] = {}

    def __call__(self, ev: Any) -> None:
        if ev.kind == "bus":
            return
        if ev.kind == "value":
            key = (ev.acc, ev.data.get("path"))
            if not self.verbose and key[1] not in STORY_VALUES:
                return
            if self.last.get(key, object()) == ev.data.get("value"):
                return
            self.last[key] = ev.data.get("value")
        self.out.write(ev.line() + "\n")
        self.out.flush()


def start_world(sim: Any) -> dict[str, Any]:
    """The three reference accessories on ``sim`` (a started Simulation), by role."""
    from .sim.simulation import default_config

    ambient = default_config(BOARD, "ambient", "ambient", ble=True)
    ambient["links"]["can"]["enabled"] = False  # BLE only
    return {
        "controller": sim.add(BOARD, "controller", "micropython", name="controller"),
        "ambient": sim.add(BOARD, "ambient", "cpython", name="ambient", config=ambient),
        "mount": sim.add(BOARD, "mount", "cpython", name="mount",
                         config=default_config(BOARD, "mount", "mount", ble=True)),
    }


async def _main(sim: Any, boards: dict[str, Any], out: TextIO, *, headless: bool, speed: float,
                port: int, verbose: bool) -> int:
    from .car.car import Car
    from .car.screen import CarScreen

    sim.vehicle.open_door("front_left")  # the driver is getting in
    async with Car(can=f"cabinlink:{sim.bus_address}", ble=sim.ble, bindings=None,
                   vehicle=sim.vehicle) as car:
        quiet = car.on(_Printer(out, verbose))
        async with CarScreen(car, port=port) as screen:
            out.write(f"car screen: {screen.url}\n")
            out.flush()
            drive = Drive(car, sim, boards, out, speed)
            steps = await drive.run()
            missing = [s for s in steps if not s.observed]
            if headless:
                quiet()  # the car's own shutdown is not part of the story
            if not missing and len(steps) == 7:
                out.write(f"demo: every scripted step was observed ({len(steps)}/7)\n")
            else:
                for s in missing:
                    out.write(f"demo: step not observed: {s.title} ({s.why})\n")
                if len(steps) < 7:
                    out.write(f"demo: the drive stopped after {len(steps)} of 7 steps\n")
            out.flush()
            if not headless:
                out.write(f"demo: the drive is over; the car and its screen keep running at "
                          f"{screen.url} (Ctrl-C to stop)\n")
                out.flush()
                await asyncio.Event().wait()
            return 0 if not missing and len(steps) == 7 else 1


def run(out: TextIO = sys.stdout, *, headless: bool = False, speed: float = 1.0, port: int = 0,
        verbose: bool = False) -> int:
    """The demo (see the module text): 0 when every scripted step was observed, else 1;
    without ``headless`` it runs on after the script until interrupted."""
    from .sim.simulation import Simulation
    from .sim.vehicle import couple_cabin

    if speed <= 0:
        raise ValueError("speed must be > 0")
    out.write("demo: starting the simulated world: controller (CAN, MicroPython), ambient "
              "(BLE, CPython), mount (CAN + BLE, CPython), each its real firmware on a "
              f"simulated {BOARD}\n")
    out.flush()
    with Simulation() as sim:
        couple_cabin(sim.vehicle, sim.cabin, sim.world.lock)
        boards = start_world(sim)
        try:
            return asyncio.run(_main(sim, boards, out, headless=headless, speed=speed,
                                     port=port, verbose=verbose))
        except KeyboardInterrupt:
            out.write("demo: stopped\n")
            return 0
