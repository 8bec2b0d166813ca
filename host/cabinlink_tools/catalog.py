"""Human-readable names and units for wire values, from ``spec/registry.json``.

Host tools print ``temperature.value = 21.50 °C`` instead of ``slot 1 attr 0 = 2150``;
this module is the one place that knows how.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from cabinlink import msg

REGISTRY = Path(__file__).resolve().parents[2] / "spec" / "registry.json"

# unit name -> (divisor, suffix)
_UNITS: dict[str, tuple[int, str]] = {
    "centi_celsius": (100, " °C"),
    "centi_percent": (100, " %"),
    "percent": (1, " %"),
    "ppm": (1, " ppm"),
    "lux": (1, " lx"),
    "ug_per_m3": (1, " µg/m³"),
    "mV": (1000, " V"),
    "mA": (1, " mA"),
    "mW": (1, " mW"),
    "ms": (1, " ms"),
    "s": (1, " s"),
    "deg": (1, "°"),
}
UNITS = _UNITS  # public view for screens: unit name -> (divisor, suffix); do not modify

STATUS_NAMES = {v: k for k, v in vars(msg).items()
                if k.isupper() and isinstance(v, int) and k in (
                    "OK", "MALFORMED", "UNSUPPORTED", "NOT_FOUND", "ACCESS_DENIED",
                    "INVALID_VALUE", "BUSY", "CONFIRM_REQUIRED", "NO_RESOURCES",
                    "HW_FAULT", "VERSION_MISMATCH", "AUTH_REQUIRED", "INVALID_STATE")}


@cache
def registry() -> dict[str, Any]:
    with open(REGISTRY, encoding="utf-8") as f:
        return json.load(f)


@cache
def _caps() -> dict[int, dict[str, Any]]:
    return {c["id"]: c for c in registry()["capabilities"]}


def capability(cap_id: int) -> dict[str, Any] | None:
    return _caps().get(cap_id)


def cap_name(cap_id: int) -> str:
    c = capability(cap_id)
    return c["name"] if c else f"cap_0x{cap_id:04x}"


def _member(cap_id: int, kind: str, member_id: int) -> dict[str, Any] | None:
    c = capability(cap_id)
    for m in (c or {}).get(kind, []):
        if m["id"] == member_id:
            return m
    return None


def attr_name(cap_id: int, attr_id: int) -> str:
    a = _member(cap_id, "attributes", attr_id)
    return a["name"] if a else f"attr{attr_id}"


def command_name(cap_id: int, cmd_id: int) -> str:
    c = _member(cap_id, "commands", cmd_id)
    return c["name"] if c else f"cmd{cmd_id}"


def event_name(cap_id: int, ev_id: int) -> str:
    e = _member(cap_id, "events", ev_id)
    return e["name"] if e else f"event{ev_id}"


def class_name(device_class: int) -> str:
    for c in registry().get("device_classes", []):
        if c.get("id") == device_class or c.get("value") == device_class:
            return str(c["name"])
    return f"class{device_class}"


def status_name(status: int | None) -> str:
    if status is None:
        return "NO ANSWER"
    return STATUS_NAMES.get(status, f"status{status}")


def format_value(cap_id: int, attr_id: int, value: Any) -> str:
    """``2150`` for temperature.value -> ``21.50 °C``; enums by name."""
    a = _member(cap_id, "attributes", attr_id)
    if a is None or value is None or isinstance(value, bool):
        return repr(value)
    for v in a.get("values", []):
        if v["value"] == value:
            return str(v["name"])
    unit = _UNITS.get(a.get("unit", ""))
    if unit and isinstance(value, int):
        div, suffix = unit
        if div == 1:
            return f"{value}{suffix}"
        digits = len(str(div)) - 1
        return f"{value / div:.{digits}f}{suffix}"
    return repr(value)
