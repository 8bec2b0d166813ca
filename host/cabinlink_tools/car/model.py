"""What a car knows about an accessory from its DESCRIBE answer (spec 3, 5.4), by name.

:class:`Description` parses the description map once; it keeps every slot, also those of
capabilities the car does not know (spec M-3.6-3: ignored, slot numbering kept), and drops
attribute, command and event ids the registry does not define for a known capability
(M-3.6-4). Members are addressed by *path*: ``"co2.value"``, ``"clamp.release"``,
``"temperature[1].value"`` (instance 1), resolved against the description and the
registry, so a car uses an accessory by capability, never by product or slot.

Contract: :meth:`Description.parse` raises :class:`DescriptionError` for a map without the
mandatory keys; unknown keys are ignored (M-5.4-5). Resolution errors are
:class:`LookupError` with the path and what was missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from cabinlink import msg

from .. import catalog

Kind = Literal["attributes", "commands", "events"]
_PATH = re.compile(r"^([a-z0-9_]+)(?:\[(\d+)\])?\.([a-z0-9_]+)$")


class DescriptionError(ValueError):
    """A DESCRIBE answer the car cannot use (a mandatory key missing or of the wrong type)."""


@dataclass(frozen=True)
class Identity:
    vendor: str
    product: str
    serial: str
    firmware: str | None = None
    hardware: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "product": self.product, "serial": self.serial,
                "firmware": self.firmware, "hardware": self.hardware}


@dataclass(frozen=True)
class CapabilityInfo:
    """One slot of the description. ``name`` is None for a capability the registry does
    not define (the car ignores it but keeps its slot)."""

    slot: int
    id: int
    instance: int
    name: str | None
    label: str | None
    attributes: tuple[int, ...]
    commands: tuple[int, ...]
    events: tuple[int, ...]
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.name is not None

    @property
    def path(self) -> str:
        base = self.name or f"cap_0x{self.id:04x}"
        return base if self.instance == 0 else f"{base}[{self.instance}]"

    def member_name(self, kind: Kind, member_id: int) -> str:
        if kind == "attributes":
            return catalog.attr_name(self.id, member_id)
        if kind == "commands":
            return catalog.command_name(self.id, member_id)
        return catalog.event_name(self.id, member_id)

    def member_id(self, kind: Kind, name: str) -> int | None:
        spec = catalog.capability(self.id) or {}
        present = {"attributes": self.attributes, "commands": self.commands,
                   "events": self.events}[kind]
        for m in spec.get(kind, []):
            if m["name"] == name and m["id"] in present:
                return int(m["id"])
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot, "id": self.id, "instance": self.instance, "name": self.name,
            "path": self.path, "label": self.label,
            "attributes": [_attr_info(self, a) for a in self.attributes],
            "commands": [{"id": c, "name": self.member_name("commands", c),
                          "args": _fields(self.id, "commands", c, "args"),
                          "result": _fields(self.id, "commands", c, "result")}
                         for c in self.commands],
            "events": [{"id": e, "name": self.member_name("events", e),
                        "data": _fields(self.id, "events", e, "data")} for e in self.events],
        }


def _attr_info(cap: CapabilityInfo, attr: int) -> dict[str, Any]:
    spec = attr_spec(cap.id, attr) or {}
    out = {"id": attr, "name": cap.member_name("attributes", attr), "type": spec.get("type"),
           "unit": spec.get("unit"), "access": spec.get("access"),
           "reportable": bool(spec.get("reportable"))}
    if attr in cap.ranges:
        out["range"] = list(cap.ranges[attr])
    elif "min" in spec and "max" in spec:
        out["range"] = [spec["min"], spec["max"]]
    if spec.get("values"):
        out["values"] = {int(v["value"]): v["name"] for v in spec["values"]}
    return out


def _fields(cap_id: int, kind: str, member_id: int, key: str) -> list[dict[str, Any]]:
    """The registry's argument, result or data fields of a member, for a screen's forms:
    name, type, unit, range, optional, enum value names."""
    for m in (catalog.capability(cap_id) or {}).get(kind, []):
        if m["id"] == member_id:
            out = []
            for f in m.get(key, []):
                d = {k: f[k] for k in ("name", "type", "unit", "min", "max", "optional",
                                         "max_length") if k in f}
                names = enum_names(cap_id, f)
                if names:
                    d["values"] = names
                out.append(d)
            return out
    return []


def attr_spec(cap_id: int, attr_id: int) -> dict[str, Any] | None:
    for a in (catalog.capability(cap_id) or {}).get("attributes", []):
        if a["id"] == attr_id:
            return a  # type: ignore[no-any-return]
    return None


def event_spec(cap_id: int, ev_id: int) -> dict[str, Any] | None:
    for e in (catalog.capability(cap_id) or {}).get("events", []):
        if e["id"] == ev_id:
            return e  # type: ignore[no-any-return]
    return None


def enum_names(cap_id: int, field_spec: dict[str, Any]) -> dict[int, str]:
    """value -> name for an enum field (an attribute, or event data with ``values_from``)."""
    values = field_spec.get("values")
    if values is None and "values_from" in field_spec:
        for a in (catalog.capability(cap_id) or {}).get("attributes", []):
            if a["name"] == field_spec["values_from"]:
                values = a.get("values")
    return {int(v["value"]): str(v["name"]) for v in values or []}


def event_data_fields(cap_id: int, ev_id: int) -> list[dict[str, Any]]:
    return list((event_spec(cap_id, ev_id) or {}).get("data", []))


def format_event_data(cap_id: int, ev_id: int, data: Any) -> str:
    """``1`` for co2.air_quality -> ``poor``; ``-3`` for rotary_encoder.delta -> ``-3 steps``."""
    fields = event_data_fields(cap_id, ev_id)
    if data is None:
        return ""
    if len(fields) == 1:
        f = fields[0]
        names = enum_names(cap_id, f)
        if names and isinstance(data, int) and not isinstance(data, bool):
            return names.get(data, str(data))
        if f.get("unit") == "steps":
            return f"{data:+d} steps" if isinstance(data, int) else repr(data)
    return repr(data) if not isinstance(data, (int, str)) or isinstance(data, bool) else str(data)


def format_value(cap_id: int, attr_id: int, value: Any) -> str:
    return catalog.format_value(cap_id, attr_id, value)


def _str(d: dict[int, Any], key: int, required: bool) -> str | None:
    v = d.get(key)
    if isinstance(v, str):
        return v
    if required:
        raise DescriptionError(f"description key {key} must be a text string, got {v!r}")
    return None


def _ids(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list):
        return ()
    return tuple(x for x in v if isinstance(x, int) and not isinstance(x, bool) and x >= 0)


@dataclass(frozen=True)
class Description:
    """A parsed DESCRIBE answer (spec 5.4)."""

    raw: dict[int, Any]
    version: tuple[int, int]
    device_class: int
    identity: Identity
    capabilities: tuple[CapabilityInfo, ...]
    max_rx: int

    @classmethod
    def parse(cls, raw: Any) -> Description:
        if not isinstance(raw, dict):
            raise DescriptionError("the description is not a map")
        ver = raw.get(msg.D_VERSION)
        if not (isinstance(ver, list) and len(ver) >= 2 and all(isinstance(x, int) for x in ver[:2])):
            raise DescriptionError(f"D_VERSION must be [major, minor], got {ver!r}")
        cls_ = raw.get(msg.D_CLASS)
        if not isinstance(cls_, int) or isinstance(cls_, bool) or cls_ < 0:
            raise DescriptionError(f"D_CLASS must be an unsigned integer, got {cls_!r}")
        caps_raw = raw.get(msg.D_CAPS)
        if not isinstance(caps_raw, list):
            raise DescriptionError("D_CAPS must be an array of capability entries")
        max_rx = raw.get(msg.D_MAX_RX)
        if not isinstance(max_rx, int) or isinstance(max_rx, bool):
            raise DescriptionError(f"D_MAX_RX must be an integer, got {max_rx!r}")
        identity = Identity(_str(raw, msg.D_VENDOR, True) or "", _str(raw, msg.D_PRODUCT, True) or "",
                            _str(raw, msg.D_SERIAL, True) or "", _str(raw, msg.D_FIRMWARE, False),
                            _str(raw, msg.D_HARDWARE, False))
        caps = []
        for slot, e in enumerate(caps_raw):
            if not isinstance(e, dict) or not isinstance(e.get(msg.C_ID), int) \
                    or not isinstance(e.get(msg.C_INSTANCE, 0), int):
                raise DescriptionError(f"capability entry {slot} lacks C_ID/C_INSTANCE")
            cid = int(e[msg.C_ID])
            spec = catalog.capability(cid)
            known = spec is not None and not spec.get("reserved")

            def keep(kind: str, ids: tuple[int, ...], spec: Any = spec) -> tuple[int, ...]:
                if spec is None:
                    return ids
                defined = {m["id"] for m in spec.get(kind, [])}
                return tuple(i for i in ids if i in defined)  # M-3.6-4

            ranges: dict[int, tuple[int, int]] = {}
            r = e.get(msg.C_RANGES)
            if isinstance(r, dict):
                for k, v in r.items():
                    if isinstance(k, int) and isinstance(v, list) and len(v) == 2 \
                            and all(isinstance(x, int) for x in v):
                        ranges[k] = (v[0], v[1])
            label = e.get(msg.C_LABEL)
            caps.append(CapabilityInfo(
                slot=slot, id=cid, instance=int(e.get(msg.C_INSTANCE, 0)),
                name=str(spec["name"]) if known and spec else None,
                label=label if isinstance(label, str) else None,
                attributes=keep("attributes", _ids(e.get(msg.C_ATTRS))),
                commands=keep("commands", _ids(e.get(msg.C_COMMANDS))),
                events=keep("events", _ids(e.get(msg.C_EVENTS))), ranges=ranges))
        return cls(raw, (int(ver[0]), int(ver[1])), int(cls_), identity, tuple(caps), int(max_rx))

    @property
    def class_name(self) -> str:
        return catalog.class_name(self.device_class)

    def find(self, cap: int | str, instance: int = 0) -> CapabilityInfo | None:
        """The capability with registry id or name ``cap`` and ``instance``, or None."""
        for c in self.capabilities:
            if (c.id == cap if isinstance(cap, int) else c.name == cap) and c.instance == instance:
                return c
        return None

    def all(self, cap: int | str) -> list[CapabilityInfo]:
        """Every instance of a capability, by registry id or name."""
        return [c for c in self.capabilities
                if (c.id == cap if isinstance(cap, int) else c.name == cap)]

    def resolve(self, path: str | tuple[int, int], kind: Kind) -> tuple[CapabilityInfo, int]:
        """``"co2.value"`` (or ``(slot, id)``) -> (capability, member id). LookupError if the
        accessory does not have it."""
        if isinstance(path, tuple):
            slot, mid = path
            if not 0 <= slot < len(self.capabilities):
                raise LookupError(f"no slot {slot} (the accessory has {len(self.capabilities)})")
            return self.capabilities[slot], mid
        m = _PATH.match(path)
        if m is None:
            raise LookupError(f"{path!r}: expected capability.member, e.g. co2.value or "
                              "temperature[1].value")
        cap_name, inst, member = m.group(1), int(m.group(2) or 0), m.group(3)
        cap = self.find(cap_name, inst)
        if cap is None:
            raise LookupError(f"{path!r}: the accessory has no capability {cap_name}"
                              + (f" instance {inst}" if inst else ""))
        mid = cap.member_id(kind, member)
        if mid is None:
            raise LookupError(f"{path!r}: {cap.path} has no {kind[:-1]} {member!r}")
        return cap, mid

    def equivalent(self, other: Description | None) -> bool:
        return other is not None and other.raw == self.raw

    def to_dict(self) -> dict[str, Any]:
        return {"version": list(self.version), "device_class": self.device_class,
                "class_name": self.class_name, "identity": self.identity.to_dict(),
                "max_rx": self.max_rx, "capabilities": [c.to_dict() for c in self.capabilities]}
