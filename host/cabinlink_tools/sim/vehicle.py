"""The vehicle around the accessories: speed, ignition, doors, media and climate.

Plain state with setters; every change calls the listeners ``fn(name, value)`` with a dotted
name (``speed_kmh``, ``ignition``, ``door.<door>``, ``media.playing``, ``media.track``,
``media.volume``, ``climate.setpoint_c``, ``climate.fresh_air``). It stands in for the car's
own systems: the reference car's bindings act on it (a knob turns ``media.volume``, a CO2
event switches ``climate.fresh_air``) and its speed feeds the phone mount's lock policy.
:func:`couple_cabin` makes the simulated cabin follow the climate settings.

Contract: setters validate and raise ValueError naming the quantity; a setter that does
not change the value calls no listener; listeners run synchronously in the caller's thread.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

DOORS = ("front_left", "front_right", "rear_left", "rear_right", "tailgate")
MOVING_KMH = 1.0  # below this the car counts as standing (GNSS/wheel-speed noise)
VOLUME_MAX = 40  # media volume steps, 0 = silent
TRACKS = 12  # tracks on the simulated playlist (track numbers 1..TRACKS, wrapping)
SETPOINT_MIN_C, SETPOINT_MAX_C, SETPOINT_STEP_C = 16.0, 28.0, 0.5


class Vehicle:
    def __init__(self, *, speed_kmh: float = 0.0, ignition: bool = False, volume: int = 10,
                 setpoint_c: float = 21.0, fresh_air: bool = False) -> None:
        self._speed = 0.0
        self._ignition = False
        self.doors: dict[str, bool] = {d: False for d in DOORS}
        self.listeners: list[Callable[[str, object], None]] = []
        self._playing = False
        self._track = 1
        self._volume = 0
        self._setpoint = SETPOINT_MIN_C
        self._fresh_air = False
        self.set_ignition(ignition)
        self.set_speed(speed_kmh)
        self.set_volume(volume)
        self.set_setpoint(setpoint_c)
        self.set_fresh_air(fresh_air)

    def _changed(self, name: str, value: object) -> None:
        for fn in list(self.listeners):
            fn(name, value)

    # --- driving ------------------------------------------------------------------------
    @property
    def speed_kmh(self) -> float:
        return self._speed

    def set_speed(self, kmh: float) -> None:
        if kmh < 0:
            raise ValueError("speed is a magnitude (km/h >= 0)")
        if kmh != self._speed:
            self._speed = float(kmh)
            self._changed("speed_kmh", self._speed)

    @property
    def ignition(self) -> bool:
        return self._ignition

    def set_ignition(self, on: bool) -> None:
        on = bool(on)
        if on != self._ignition:
            self._ignition = on
            self._changed("ignition", on)

    def set_door(self, door: str, is_open: bool) -> None:
        if door not in self.doors:
            raise ValueError(f"unknown door {door!r}; one of {', '.join(DOORS)}")
        if self.doors[door] != bool(is_open):
            self.doors[door] = bool(is_open)
            self._changed("door." + door, bool(is_open))

    def open_door(self, door: str) -> None:
        self.set_door(door, True)

    def close_door(self, door: str) -> None:
        self.set_door(door, False)

    @property
    def any_door_open(self) -> bool:
        return any(self.doors.values())

    @property
    def moving(self) -> bool:
        return self._speed >= MOVING_KMH

    # --- media ----------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def track(self) -> int:
        return self._track

    @property
    def volume(self) -> int:
        return self._volume

    def set_playing(self, on: bool) -> None:
        on = bool(on)
        if on != self._playing:
            self._playing = on
            self._changed("media.playing", on)

    def play_pause(self) -> None:
        self.set_playing(not self._playing)

    def set_track(self, n: int) -> None:
        if not 1 <= n <= TRACKS:
            raise ValueError(f"track must be 1..{TRACKS}, not {n}")
        if n != self._track:
            self._track = n
            self._changed("media.track", n)

    def next_track(self) -> None:
        self.set_track(self._track % TRACKS + 1)

    def previous_track(self) -> None:
        self.set_track((self._track - 2) % TRACKS + 1)

    def set_volume(self, v: int) -> None:
        if not 0 <= v <= VOLUME_MAX:
            raise ValueError(f"volume must be 0..{VOLUME_MAX}, not {v}")
        if v != self._volume:
            self._volume = int(v)
            self._changed("media.volume", self._volume)

    def volume_step(self, steps: int) -> None:
        """Change the volume by ``steps``, clamped to 0..VOLUME_MAX."""
        self.set_volume(max(0, min(VOLUME_MAX, self._volume + int(steps))))

    # --- climate --------------------------------------------------------------------------
    @property
    def setpoint_c(self) -> float:
        return self._setpoint

    @property
    def fresh_air(self) -> bool:
        """True: outside air; False: recirculation."""
        return self._fresh_air

    def set_setpoint(self, c: float) -> None:
        if not SETPOINT_MIN_C <= c <= SETPOINT_MAX_C:
            raise ValueError(f"climate setpoint must be {SETPOINT_MIN_C}..{SETPOINT_MAX_C} °C, not {c}")
        c = round(c / SETPOINT_STEP_C) * SETPOINT_STEP_C
        if c != self._setpoint:
            self._setpoint = float(c)
            self._changed("climate.setpoint_c", self._setpoint)

    def setpoint_step(self, steps: int) -> None:
        """Change the setpoint by ``steps`` × 0.5 °C, clamped to the range."""
        c = self._setpoint + int(steps) * SETPOINT_STEP_C
        self.set_setpoint(max(SETPOINT_MIN_C, min(SETPOINT_MAX_C, c)))

    def set_fresh_air(self, on: bool) -> None:
        on = bool(on)
        if on != self._fresh_air:
            self._fresh_air = on
            self._changed("climate.fresh_air", on)

    # --- views ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every quantity, JSON-ready, under the names the listeners get."""
        out: dict[str, Any] = {
            "speed_kmh": self._speed, "moving": self.moving, "ignition": self._ignition,
            "media.playing": self._playing, "media.track": self._track,
            "media.volume": self._volume, "climate.setpoint_c": self._setpoint,
            "climate.fresh_air": self._fresh_air}
        out.update({"door." + d: v for d, v in self.doors.items()})
        return out


def couple_cabin(vehicle: Vehicle, cabin: Any,
                 lock: AbstractContextManager[Any] | None = None) -> Callable[[], None]:
    """Make ``cabin`` (a :class:`~cabinlink_tools.sim.cabin.Cabin`) follow the vehicle's
    climate: fresh air or recirculation, and the HVAC setpoint. ``lock`` (the world's) is
    held while the cabin changes. Returns a function that undoes the coupling."""
    guard = lock if lock is not None else threading.Lock()

    def apply(name: str, value: object) -> None:
        if name == "climate.fresh_air":
            with guard:
                cabin.fresh_air = bool(value)
        elif name == "climate.setpoint_c":
            with guard:
                cabin.hvac_setpoint = float(value)  # type: ignore[arg-type]

    apply("climate.fresh_air", vehicle.fresh_air)
    apply("climate.setpoint_c", vehicle.setpoint_c)
    vehicle.listeners.append(apply)
    return lambda: vehicle.listeners.remove(apply)
