"""What the suite knows about an accessory: its DESCRIBE answer read against the registry
(``spec/registry.json``), as the spec's section 11 says ("the suite derives its test cases
from that declaration and the registry").

:class:`Declaration` wraps a description map; :class:`AttrSpec` and :class:`CmdSpec` are the
registry entries the tests need (type, access, range, report and persist flags), with the
declared range of 3.3 applied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cabinlink import msg

from ..catalog import registry

INT_TYPES = ("int", "uint")
WRITE_ACCESS = ("write", "read_write")
READ_ACCESS = ("read", "read_write")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class AttrSpec:
    """One attribute as the registry defines it (``lo``/``hi`` narrowed by a declared range)."""

    cap: str
    name: str
    id: int
    type: str
    access: str
    lo: int | None = None
    hi: int | None = None
    reg_lo: int | None = None
    reg_hi: int | None = None
    values: int | None = None  # enum: number of values (0..values-1)
    bits: int | None = None
    max_length: int | None = None
    items: dict[str, Any] | None = None
    max_items: int | None = None
    reportable: bool = False
    persistent: bool = False
    optional: bool = False

    @property
    def label(self) -> str:
        return f"{self.cap}.{self.name}"

    @property
    def readable(self) -> bool:
        return self.access in READ_ACCESS

    @property
    def writable(self) -> bool:
        return self.access in WRITE_ACCESS

    def check(self, v: Any) -> str | None:
        """None when ``v`` is a value of this attribute's type within its range, else why not."""
        return check_value(self.type, v, self.lo, self.hi, self.values, self.bits, self.max_length,
                           self.items, self.max_items)

    def samples_valid(self) -> list[Any]:
        """Values a WRITE must accept on type and range (the accessory may still refuse
        them for its own reasons, 5.6 step 5)."""
        t = self.type
        if t == "bool":
            return [False, True]
        if t in INT_TYPES and self.lo is not None and self.hi is not None:
            return sorted({self.lo, self.hi})
        if t == "enum" and self.values:
            return [0, self.values - 1]
        if t == "bitmap" and self.bits:
            return [0, (1 << self.bits) - 1]
        if t == "str":
            return ["", "x" * (self.max_length or 1)]
        return []

    def samples_invalid(self) -> list[Any]:
        """Values of the wrong type or out of range: each must be refused INVALID_VALUE."""
        t = self.type
        out: list[Any] = []
        if t == "bool":
            out += [1, "true", None]
        elif t in INT_TYPES:
            if self.lo is not None:
                out.append(self.lo - 1)
            if self.hi is not None:
                out.append(self.hi + 1)
            out += [True, "1"]  # (a float where an integer is due: test_encoding, M-4.3-2)
        elif t == "enum":
            out += [self.values or 0, -1, "a"]
        elif t == "bitmap":
            out += [1 << (self.bits or 0), -1, False]
        elif t == "str":
            out += ["x" * ((self.max_length or 0) + 1), b"x", 1]
        elif t == "bytes":
            out += [b"x" * ((self.max_length or 0) + 1), "x", 1]
        elif t == "list":
            out += [{0: 1}, 1, "x"]
        return out


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type: str
    lo: int | None
    hi: int | None
    values: int | None
    optional: bool

    def check(self, v: Any) -> str | None:
        return check_value(self.type, v, self.lo, self.hi, self.values)


@dataclass(frozen=True)
class CmdSpec:
    cap: str
    name: str
    id: int
    args: tuple[ArgSpec, ...]
    result: tuple[dict[str, Any], ...]

    @property
    def label(self) -> str:
        return f"{self.cap}.{self.name}"


def check_value(t: str, v: Any, lo: int | None = None, hi: int | None = None, values: int | None = None,
                bits: int | None = None, max_length: int | None = None, items: dict[str, Any] | None = None,
                max_items: int | None = None) -> str | None:
    """None when ``v`` fits type ``t`` (registry type names, spec 3.3) and range, else why not."""
    if t == "bool":
        return None if isinstance(v, bool) else f"{v!r} is not a bool"
    if t in INT_TYPES or t in ("enum", "bitmap"):
        if not _is_int(v):
            return f"{v!r} is not an integer"
        if t == "uint" and v < 0 or t in ("enum", "bitmap") and v < 0:
            return f"{v} is negative"
        if lo is not None and v < lo or hi is not None and v > hi:
            return f"{v} is outside {lo}..{hi}"
        if t == "enum" and values is not None and v >= values:
            return f"{v} is not one of the {values} enum values"
        if t == "bitmap" and bits is not None and v >> bits:
            return f"{v} sets bits beyond the first {bits}"
        return None
    if t == "str":
        if not isinstance(v, str):
            return f"{v!r} is not a text string"
        if max_length is not None and len(v.encode()) > max_length:
            return f"{len(v.encode())} bytes, more than {max_length}"
        return None
    if t == "bytes":
        if not isinstance(v, (bytes, bytearray)):
            return f"{v!r} is not a byte string"
        if max_length is not None and len(v) > max_length:
            return f"{len(v)} bytes, more than {max_length}"
        return None
    if t == "list":
        if not isinstance(v, list):
            return f"{v!r} is not an array"
        if max_items is not None and len(v) > max_items:
            return f"{len(v)} items, more than {max_items}"
        if items:
            for x in v:
                why = check_value(items["type"], x, items.get("min"), items.get("max"), None, None,
                                  items.get("max_length"))
                if why:
                    return f"item {why}"
        return None
    return f"unknown type {t}"


def _enum_count(cap: dict[str, Any], entry: dict[str, Any]) -> int | None:
    vals = entry.get("values")
    if vals is None and entry.get("values_from"):
        src = next((a for a in cap.get("attributes", []) if a["name"] == entry["values_from"]), None)
        vals = src.get("values") if src else None
    return len(vals) if vals else None


def registry_caps() -> dict[int, dict[str, Any]]:
    return {c["id"]: c for c in registry()["capabilities"]}


@dataclass
class Capability:
    """One DESCRIBE entry, joined with the registry (``reg`` None: not a registry id)."""

    slot: int
    id: int
    instance: int
    attrs: list[int]
    commands: list[int]
    events: list[int]
    ranges: dict[int, list[int]]
    label: str | None
    reg: dict[str, Any] | None
    entry: dict[Any, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.reg["name"] if self.reg else f"0x{self.id:04X}"

    def attr(self, attr_id: int) -> AttrSpec | None:
        if not self.reg:
            return None
        a = next((x for x in self.reg.get("attributes", []) if x["id"] == attr_id), None)
        if a is None:
            return None
        lo, hi = a.get("min"), a.get("max")
        r = self.ranges.get(attr_id)
        if r is not None and isinstance(r, list) and len(r) == 2:
            lo, hi = r
        return AttrSpec(self.name, a["name"], a["id"], a["type"], a["access"], lo, hi, a.get("min"),
                        a.get("max"), _enum_count(self.reg, a), a.get("bits"), a.get("max_length"),
                        a.get("items"), a.get("max_items"), bool(a.get("reportable")),
                        bool(a.get("persistent")), bool(a.get("optional")))

    def listed_attrs(self) -> list[AttrSpec]:
        return [s for s in (self.attr(a) for a in self.attrs) if s is not None]

    def command(self, cmd_id: int) -> CmdSpec | None:
        if not self.reg:
            return None
        c = next((x for x in self.reg.get("commands", []) if x["id"] == cmd_id), None)
        if c is None:
            return None
        args = tuple(ArgSpec(a["name"], a["type"], a.get("min"), a.get("max"), _enum_count(self.reg, a),
                             bool(a.get("optional"))) for a in c.get("args", []))
        return CmdSpec(self.name, c["name"], c["id"], args, tuple(c.get("result", [])))


class Declaration:
    """An accessory's DESCRIBE answer (spec 5.4) read against the registry."""

    def __init__(self, description: dict[Any, Any]) -> None:
        self.raw = description
        self.caps: list[Capability] = []
        reg = registry_caps()
        for slot, e in enumerate(description.get(msg.D_CAPS) or []):
            if not isinstance(e, dict):
                continue
            cid = e.get(msg.C_ID)
            self.caps.append(Capability(
                slot, cid if _is_int(cid) else -1, e.get(msg.C_INSTANCE, 0),
                list(e.get(msg.C_ATTRS) or []), list(e.get(msg.C_COMMANDS) or []),
                list(e.get(msg.C_EVENTS) or []), dict(e.get(msg.C_RANGES) or {}), e.get(msg.C_LABEL),
                reg.get(cid) if _is_int(cid) else None, e))

    @property
    def device_class(self) -> int:
        return self.raw.get(msg.D_CLASS, 0)

    @property
    def max_rx(self) -> int:
        return self.raw.get(msg.D_MAX_RX, 512)

    def identity(self) -> dict[str, Any]:
        d = self.raw
        return {"vendor": d.get(msg.D_VENDOR), "product": d.get(msg.D_PRODUCT), "serial": d.get(msg.D_SERIAL),
                "firmware": d.get(msg.D_FIRMWARE), "hardware": d.get(msg.D_HARDWARE),
                "version": d.get(msg.D_VERSION), "device_class": d.get(msg.D_CLASS),
                "max_rx": d.get(msg.D_MAX_RX)}

    def find(self, cap_id: int, instance: int = 0) -> Capability | None:
        return next((c for c in self.caps if c.id == cap_id and c.instance == instance), None)

    def all_attrs(self) -> list[tuple[Capability, AttrSpec]]:
        return [(c, a) for c in self.caps for a in c.listed_attrs()]

    def reportable(self) -> list[tuple[Capability, AttrSpec]]:
        return [(c, a) for c, a in self.all_attrs() if a.reportable and a.readable]

    def writable(self) -> list[tuple[Capability, AttrSpec]]:
        return [(c, a) for c, a in self.all_attrs() if a.writable]

    def commands(self) -> list[tuple[Capability, CmdSpec]]:
        out = []
        for c in self.caps:
            for cid in c.commands:
                s = c.command(cid)
                if s is not None:
                    out.append((c, s))
        return out
