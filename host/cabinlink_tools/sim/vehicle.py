"""The vehicle around the accessories: speed, ignition, doors.

Plain state with setters; every change calls the listeners ``fn(name, value)`` (the
world turns them into CAN frames for the simulated car).
"""
from __future__ import annotations

from collections.abc import Callable

DOORS = ("front_left", "front_right", "rear_left", "rear_right", "tailgate")
MOVING_KMH = 1.0  # below this the car counts as standing (GNSS/wheel-speed noise)


class Vehicle:
    def __init__(self, *, speed_kmh: float = 0.0, ignition: bool = False) -> None:
        self._speed = 0.0
        self._ignition = False
        self.doors: dict[str, bool] = {d: False for d in DOORS}
        self.listeners: list[Callable[[str, object], None]] = []
        self.set_ignition(ignition)
        self.set_speed(speed_kmh)

    def _changed(self, name: str, value: object) -> None:
        for fn in list(self.listeners):
            fn(name, value)

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
