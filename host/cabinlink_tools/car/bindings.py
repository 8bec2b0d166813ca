"""Bindings: what the car does with accessories it has never seen, by capability.

A **binding** connects something an accessory capability says (an event, or an attribute
value crossing a limit) to a car function (media, volume, climate, the phone mount). It
names registry capabilities and members only - ``buttons.press``, ``co2.air_quality``,
``rotary_encoder.delta`` - never a product, a slot or an address, so any accessory that
has the capability is bound the moment its DESCRIBE answer arrives. The same file sets
what the car subscribes to and the phone-mount policy. Format: docs/tools/car.md;
the shipped default is ``default_bindings.toml`` next to this module.

:func:`load_bindings` reads TOML (``tomllib``) or JSON and validates everything, raising
:class:`BindingsError` whose message starts with the file and the field (``binding[2].do:
unknown action 'media.plya'; one of ...``). :class:`BindingRunner` applies a loaded
:class:`Bindings` in a running car: it is the engine's planner (subscriptions and the
``clamp.vehicle_moving`` write of every session), acts on events and values, and tells
mounts when the vehicle starts or stops moving.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cabinlink import msg

from .. import catalog
from .accessory import Accessory, SubSpec
from .model import attr_spec, enum_names, event_data_fields

DEFAULT_FILE = "default_bindings.toml"
POLICY_NAME = "mount policy: vehicle_moving"

# action -> (what it needs of the trigger, help)
ACTIONS: dict[str, str] = {
    "media.play_pause": "toggle play/pause",
    "media.play": "play",
    "media.pause": "pause",
    "media.next": "next track",
    "media.previous": "previous track",
    "media.volume_up": "volume + step",
    "media.volume_down": "volume - step",
    "media.volume": "volume + event data x step (a knob's delta)",
    "climate.fresh_air": "outside air",
    "climate.recirculation": "recirculate the cabin air",
    "climate.toggle_air": "switch between fresh air and recirculation",
    "climate.warmer": "setpoint + step x 0.5 °C",
    "climate.cooler": "setpoint - step x 0.5 °C",
    "climate.setpoint": "setpoint + event data x step x 0.5 °C (a knob's delta)",
    "mount.clamp": "close the phone mount's clamp",
    "mount.release": "open the clamp (the mount policy applies while moving)",
}
_DATA_ACTIONS = ("media.volume", "climate.setpoint")
_DEVICE_INFO_MODES = ("ble", "always", "never")
_RELEASE_POLICIES = ("ask", "refuse")


class BindingsError(ValueError):
    """A bindings file that cannot be used; ``field`` is the offending field's path."""

    def __init__(self, source: str, field_: str, problem: str) -> None:
        super().__init__(f"{source}: {field_}: {problem}" if field_ else f"{source}: {problem}")
        self.source = source
        self.field = field_
        self.problem = problem


@dataclass(frozen=True)
class Binding:
    name: str
    capability: str
    member: str
    kind: str  # "event" or "value"
    action: str
    data: int | None = None  # event data to match (enum names resolved)
    above: int | None = None
    below: int | None = None
    equals: Any = None
    step: int = 1
    device_class: int | None = None
    accessory: str | None = None  # a serial
    haptic_ms: int | None = None

    @property
    def trigger(self) -> str:
        cond = ""
        if self.data is not None:
            cond = f" {self.data}"
        if self.above is not None:
            cond += f" > {self.above}"
        if self.below is not None:
            cond += f" < {self.below}"
        if self.equals is not None:
            cond += f" == {self.equals!r}"
        return f"{self.capability}.{self.member}{cond}"


@dataclass(frozen=True)
class Override:
    capability: str
    attribute: str
    min_ms: int | None = None
    max_s: int | None = None
    threshold: int | None = None


@dataclass(frozen=True)
class SubscribePolicy:
    reportable: bool = True
    min_ms: int = 1000
    state_min_ms: int = 0
    max_s: int = 60
    device_info: str = "ble"
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True)
class MountPolicy:
    tell_vehicle_moving: bool = True
    release_while_moving: str = "ask"


@dataclass(frozen=True)
class Bindings:
    source: str
    bindings: tuple[Binding, ...] = ()
    subscribe: SubscribePolicy = field(default_factory=SubscribePolicy)
    mount: MountPolicy = field(default_factory=MountPolicy)


# --- loading and validation ---------------------------------------------------------------------


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> BindingsError:
        return BindingsError(self.source, where, problem)

    def table(self, v: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"must be a table/object, not {type(v).__name__}")
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                            f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return v

    def int_(self, v: Any, where: str, lo: int, hi: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise self.fail(where, f"must be an integer {lo}..{hi}, not {v!r}")
        return v

    def bool_(self, v: Any, where: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(where, f"must be true or false, not {v!r}")
        return v

    def str_(self, v: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(where, f"must be a non-empty string, not {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(where, f"must be one of {', '.join(choices)}, not {v!r}")
        return v


def _member(ck: _Checker, text: Any, where: str, kind: str) -> tuple[str, str, dict[str, Any]]:
    """``"co2.air_quality"`` -> (capability, member, registry spec); kind events/attributes."""
    if not isinstance(text, str) or text.count(".") != 1:
        raise ck.fail(where, f"must be capability.{kind[:-1]}, e.g. "
                      + ("buttons.press" if kind == "events" else "co2.value") + f", not {text!r}")
    cap_name, member = text.split(".")
    cap = next((c for c in catalog.registry()["capabilities"] if c["name"] == cap_name), None)
    if cap is None:
        names = ", ".join(c["name"] for c in catalog.registry()["capabilities"])
        raise ck.fail(where, f"unknown capability {cap_name!r}; the registry has {names}")
    members = cap.get(kind, [])
    spec = next((m for m in members if m["name"] == member), None)
    if spec is None:
        have = ", ".join(m["name"] for m in members) or "none"
        raise ck.fail(where, f"{member!r} is not an {kind[:-1]} of {cap_name} ({kind}: {have})")
    return cap_name, member, spec


def _enum_or_int(ck: _Checker, v: Any, where: str, cap_id: int, fspec: dict[str, Any]) -> int:
    names = enum_names(cap_id, fspec)
    if isinstance(v, str):
        for num, name in names.items():
            if name == v:
                return num
        raise ck.fail(where, f"{v!r} is not a value of {fspec.get('name')} "
                      f"({', '.join(names.values()) or 'a number'})")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ck.fail(where, f"must be an integer or a value name, not {v!r}")
    return v


def parse_bindings(doc: Any, source: str = "bindings") -> Bindings:
    """Validate a decoded bindings document (see the module text)."""
    ck = _Checker(source)
    top = ck.table(doc, "", {"version", "binding", "subscribe", "mount"})
    if "version" in top:
        ck.int_(top["version"], "version", 1, 1)
    sp = SubscribePolicy()
    if "subscribe" in top:
        s = ck.table(top["subscribe"], "subscribe",
                     {"reportable", "min_ms", "state_min_ms", "max_s", "device_info", "override"})
        overrides = []
        raw = s.get("override", [])
        if not isinstance(raw, list):
            raise ck.fail("subscribe.override", "must be a list of tables ([[subscribe.override]])")
        for i, o in enumerate(raw):
            w = f"subscribe.override[{i}]"
            o = ck.table(o, w, {"attribute", "min_ms", "max_s", "threshold"})
            if "attribute" not in o:
                raise ck.fail(f"{w}.attribute", "missing (e.g. attribute = \"co2.value\")")
            cap, attr, aspec = _member(ck, o["attribute"], f"{w}.attribute", "attributes")
            if not aspec.get("reportable"):
                raise ck.fail(f"{w}.attribute", f"{cap}.{attr} is not reportable")
            overrides.append(Override(
                cap, attr,
                ck.int_(o["min_ms"], f"{w}.min_ms", 0, 65535) if "min_ms" in o else None,
                ck.int_(o["max_s"], f"{w}.max_s", 1, msg.MAX_SUBSCRIBE_S) if "max_s" in o else None,
                ck.int_(o["threshold"], f"{w}.threshold", 0, 2**31) if "threshold" in o else None))
        sp = SubscribePolicy(
            reportable=ck.bool_(s.get("reportable", True), "subscribe.reportable"),
            min_ms=ck.int_(s.get("min_ms", 1000), "subscribe.min_ms", 0, 65535),
            state_min_ms=ck.int_(s.get("state_min_ms", 0), "subscribe.state_min_ms", 0, 65535),
            max_s=ck.int_(s.get("max_s", 60), "subscribe.max_s", 1, msg.MAX_SUBSCRIBE_S),
            device_info=ck.str_(s.get("device_info", "ble"), "subscribe.device_info", _DEVICE_INFO_MODES),
            overrides=tuple(overrides))
        for w, floor in (("subscribe.min_ms", sp.min_ms), ("subscribe.state_min_ms", sp.state_min_ms)):
            if floor > sp.max_s * 1000:
                raise ck.fail(w, f"{floor} ms is longer than max_s ({sp.max_s} s): the "
                              "accessory would refuse it (spec 6.1)")
    mp = MountPolicy()
    if "mount" in top:
        m = ck.table(top["mount"], "mount", {"tell_vehicle_moving", "release_while_moving"})
        mp = MountPolicy(
            ck.bool_(m.get("tell_vehicle_moving", True), "mount.tell_vehicle_moving"),
            ck.str_(m.get("release_while_moving", "ask"), "mount.release_while_moving",
                    _RELEASE_POLICIES))
    raw_b = top.get("binding", [])
    if not isinstance(raw_b, list):
        raise ck.fail("binding", "must be a list of tables ([[binding]])")
    out = []
    classes = {c["name"]: c["id"] for c in catalog.registry()["device_classes"]}
    for i, b in enumerate(raw_b):
        w = f"binding[{i}]"
        b = ck.table(b, w, {"name", "event", "value", "data", "above", "below", "equals", "do",
                            "step", "class", "accessory", "haptic_ms"})
        if ("event" in b) == ("value" in b):
            raise ck.fail(w, "needs exactly one of event = \"capability.event\" or "
                          "value = \"capability.attribute\"")
        if "do" not in b:
            raise ck.fail(f"{w}.do", f"missing; one of {', '.join(ACTIONS)}")
        action = b["do"]
        if action not in ACTIONS:
            raise ck.fail(f"{w}.do", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        kind = "event" if "event" in b else "value"
        cap, member, mspec = _member(ck, b[kind], f"{w}.{kind}", kind + "s" if kind == "event"
                                     else "attributes")
        cap_id = next(c["id"] for c in catalog.registry()["capabilities"] if c["name"] == cap)
        data = above = below = equals = None
        if kind == "event":
            for k in ("above", "below", "equals"):
                if k in b:
                    raise ck.fail(f"{w}.{k}", "only for value bindings; an event matches with data")
            if "data" in b:
                fields = event_data_fields(cap_id, int(mspec["id"]))
                if len(fields) != 1:
                    raise ck.fail(f"{w}.data", f"{cap}.{member} carries no single data field")
                data = _enum_or_int(ck, b["data"], f"{w}.data", cap_id, fields[0])
            if action in _DATA_ACTIONS:
                fields = event_data_fields(cap_id, int(mspec["id"]))
                if len(fields) != 1 or fields[0].get("type") != "int":
                    raise ck.fail(f"{w}.do", f"{action} needs an event with a number as its "
                                  f"data, a signed amount (e.g. rotary_encoder.delta), not "
                                  f"{cap}.{member}")
        else:
            if "data" in b:
                raise ck.fail(f"{w}.data", "only for event bindings; use above, below or equals")
            if not mspec.get("reportable"):
                raise ck.fail(f"{w}.value", f"{cap}.{member} is not reportable: the car "
                              "cannot follow it")
            if not any(k in b for k in ("above", "below", "equals")):
                raise ck.fail(w, "a value binding needs above, below or equals")
            numeric = mspec.get("type") in ("int", "uint")
            for k in ("above", "below"):
                if k in b:
                    if not numeric:
                        raise ck.fail(f"{w}.{k}", f"{cap}.{member} is not a number")
                    v = b[k]
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise ck.fail(f"{w}.{k}", f"must be an integer (in the attribute's "
                                      f"unit, {mspec.get('unit', 'no unit')}), not {v!r}")
            above, below = b.get("above"), b.get("below")
            if "equals" in b:
                v = b["equals"]
                if mspec.get("type") == "enum":
                    equals = _enum_or_int(ck, v, f"{w}.equals", cap_id, mspec)
                elif mspec.get("type") == "bool":
                    equals = ck.bool_(v, f"{w}.equals")
                else:
                    equals = ck.int_(v, f"{w}.equals", -(2**31), 2**32)
            if action in _DATA_ACTIONS:
                raise ck.fail(f"{w}.do", f"{action} needs an event with a number as its data")
        dc = None
        if "class" in b:
            dc_name = ck.str_(b["class"], f"{w}.class", tuple(classes))
            dc = int(classes[dc_name])
        out.append(Binding(
            name=ck.str_(b.get("name", f"{b[kind]} -> {action}"), f"{w}.name"),
            capability=cap, member=member, kind=kind, action=action, data=data,
            above=above, below=below, equals=equals,
            step=ck.int_(b.get("step", 1), f"{w}.step", -100, 100),
            device_class=dc,
            accessory=ck.str_(b["accessory"], f"{w}.accessory") if "accessory" in b else None,
            haptic_ms=ck.int_(b["haptic_ms"], f"{w}.haptic_ms", 1, 1000) if "haptic_ms" in b else None))
    names = [b.name for b in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ck.fail(f"binding[{i}].name", f"{n!r} is used twice")
    return Bindings(source, tuple(out), sp, mp)


def load_bindings(path: str | Path | None = None) -> Bindings:
    """Read and validate a bindings file (``.toml`` or ``.json``); None: the shipped default."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
        return parse_bindings(tomllib.loads(text), DEFAULT_FILE)
    p = Path(path)
    source = str(p)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise BindingsError(source, "", f"cannot read: {e.strerror or e}") from None
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BindingsError(source, "", f"not valid JSON: {e}") from None
    else:
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise BindingsError(source, "", f"not valid TOML: {e}") from None
    return parse_bindings(doc, source)


# --- applying them in a running car ----------------------------------------------------------------


class BindingRunner:
    """A :class:`Bindings` at work in a car (see the module text).

    ``request(acc, kind, args, origin)`` queues a request on the engine; ``note(kind, acc,
    text, data)`` emits a car event; ``vehicle`` is the vehicle stand-in."""

    def __init__(self, bindings: Bindings, vehicle: Any,
                 request: Callable[..., Any], note: Callable[..., None],
                 accessories: Callable[[], list[Accessory]]) -> None:
        self.b = bindings
        self.vehicle = vehicle
        self._request = request
        self._note = note
        self._accessories = accessories
        self._moving = bool(vehicle.moving)
        self._cond: dict[tuple[str, str], bool] = {}

    # --- planner (the engine asks at every DESCRIBE and HELLO) --------------------------
    def applicable(self, acc: Accessory) -> list[Binding]:
        d = acc.description
        if d is None:
            return []
        out = []
        for b in self.b.bindings:
            if b.device_class is not None and d.device_class != b.device_class:
                continue
            if b.accessory is not None and d.identity.serial != b.accessory:
                continue
            if d.all(b.capability):
                out.append(b)
        return out

    def subscriptions(self, acc: Accessory) -> dict[tuple[int, int], SubSpec]:
        d = acc.description
        acc.bindings = [b.name for b in self.applicable(acc)]
        if self.setup_writes(acc):
            acc.bindings.append(POLICY_NAME)
        if d is None:
            return {}
        p = self.b.subscribe
        want: dict[tuple[int, int], SubSpec] = {}
        for cap in d.capabilities:
            if not cap.known:
                continue
            if cap.name == "device_info":
                if p.device_info == "never" or (p.device_info == "ble" and acc.transport != "ble"):
                    continue
            for attr in cap.attributes:
                spec = attr_spec(cap.id, attr) or {}
                if not spec.get("reportable"):
                    continue
                needed = any(b.kind == "value" and b.capability == cap.name
                             and b.member == spec.get("name") for b in self.applicable(acc))
                if not (p.reportable or needed):
                    continue
                state = spec.get("type") in ("bool", "enum", "bitmap")
                want[(cap.slot, attr)] = SubSpec(p.state_min_ms if state else p.min_ms, p.max_s)
        for o in p.overrides:
            for cap in d.all(o.capability):
                attr_id = cap.member_id("attributes", o.attribute)
                if attr_id is None:
                    continue
                base = want.get((cap.slot, attr_id), SubSpec(p.min_ms, p.max_s))
                want[(cap.slot, attr_id)] = SubSpec(
                    o.min_ms if o.min_ms is not None else base.min_ms,
                    o.max_s if o.max_s is not None else base.max_s,
                    o.threshold if o.threshold is not None else base.threshold)
        return want

    def setup_writes(self, acc: Accessory) -> dict[tuple[int, int], Any]:
        """``clamp.vehicle_moving`` for mounts, written after every HELLO (the mount forgets it
        at a reboot; docs/accessories/mount.md)."""
        if not self.b.mount.tell_vehicle_moving or acc.description is None:
            return {}
        out: dict[tuple[int, int], Any] = {}
        for cap in acc.description.all("clamp"):
            a = cap.member_id("attributes", "vehicle_moving")
            if a is not None:
                out[(cap.slot, a)] = bool(self.vehicle.moving)
        return out

    # --- reactions ------------------------------------------------------------------------
    def on_event(self, acc: Accessory, slot: int, ev: int, data: Any) -> None:
        cap = acc._cap(slot)
        if cap is None:
            return
        name = cap.member_name("events", ev)
        for b in self.applicable(acc):
            if b.kind != "event" or b.capability != cap.name or b.member != name:
                continue
            if b.data is not None and data != b.data:
                continue
            self._fire(b, acc, data)

    def on_value(self, acc: Accessory, slot: int, attr: int, value: Any) -> None:
        cap = acc._cap(slot)
        if cap is None:
            return
        name = cap.member_name("attributes", attr)
        for b in self.applicable(acc):
            if b.kind != "value" or b.capability != cap.name or b.member != name:
                continue
            ok = isinstance(value, (int, bool))
            if ok and b.above is not None:
                ok = value > b.above
            if ok and b.below is not None:
                ok = value < b.below
            if ok and b.equals is not None:
                ok = value == b.equals
            key = (acc.uid, b.name)
            was = self._cond.get(key, False)
            self._cond[key] = ok
            if ok and not was:  # fires on the crossing, not on every report
                self._fire(b, acc, value)

    def on_vehicle(self, name: str, value: Any) -> None:
        if name != "speed_kmh":
            return
        moving = bool(self.vehicle.moving)
        if moving == self._moving:
            return
        self._moving = moving
        if not self.b.mount.tell_vehicle_moving:
            return
        for acc in self._accessories():
            if not acc.online:
                continue
            for key in self.setup_writes(acc):
                self._request(acc, msg.WRITE, [key[0], key[1], moving], "policy")

    def _fire(self, b: Binding, acc: Accessory, data: Any) -> None:
        result = self._act(b, acc, data)
        if b.haptic_ms is not None and acc.description is not None:
            cap = acc.description.find("haptic")
            cmd = cap.member_id("commands", "pulse") if cap is not None else None
            if cap is not None and cmd is not None:
                self._request(acc, msg.INVOKE, [cap.slot, cmd, [b.haptic_ms]], "binding")
        self._note("binding", acc, f"{b.trigger} -> {b.action}: {result}",
                   binding=b.name, action=b.action, result=result)

    def _act(self, b: Binding, acc: Accessory, data: Any) -> str:
        v = self.vehicle
        a = b.action
        n = data if isinstance(data, int) and not isinstance(data, bool) else 0
        if a == "media.play_pause":
            v.play_pause()
        elif a == "media.play":
            v.set_playing(True)
        elif a == "media.pause":
            v.set_playing(False)
        elif a == "media.next":
            v.next_track()
        elif a == "media.previous":
            v.previous_track()
        elif a in ("media.volume_up", "media.volume_down", "media.volume"):
            steps = b.step * (1 if a == "media.volume_up" else -1 if a == "media.volume_down" else n)
            v.volume_step(steps)
            return f"volume {v.volume}"
        elif a in ("climate.fresh_air", "climate.recirculation", "climate.toggle_air"):
            v.set_fresh_air(True if a == "climate.fresh_air" else False
                            if a == "climate.recirculation" else not v.fresh_air)
            return "fresh air" if v.fresh_air else "recirculation"
        elif a in ("climate.warmer", "climate.cooler", "climate.setpoint"):
            steps = b.step * (1 if a == "climate.warmer" else -1 if a == "climate.cooler" else n)
            v.setpoint_step(steps)
            return f"setpoint {v.setpoint_c:.1f} °C"
        elif a == "mount.clamp":
            return self.mount_command(acc, "clamp")
        elif a == "mount.release":
            return self.mount_command(acc, "release")
        if a.startswith("media."):
            return f"{'playing' if v.playing else 'paused'}, track {v.track}"
        return "done"

    def mount_targets(self, acc: Accessory | None) -> list[Accessory]:
        if acc is not None and acc.has("clamp"):
            return [acc]
        return [a for a in self._accessories() if a.online and a.has("clamp")]

    def mount_command(self, acc: Accessory | None, what: str, confirm: bool = False) -> str:
        """Clamp or release every mount (or ``acc``'s); the release policy applies."""
        targets = self.mount_targets(acc)
        if not targets:
            return "no phone mount"
        if what == "release" and self.vehicle.moving and \
                self.b.mount.release_while_moving == "refuse":
            return "refused: the vehicle is moving (mount policy)"
        for t in targets:
            cap = t.description.find("clamp") if t.description else None
            cmd = cap.member_id("commands", what) if cap is not None else None
            if cap is None or cmd is None:
                continue
            args: list[Any] = [cap.slot, cmd]
            if what == "release" and confirm:
                args.append([True])
            self._request(t, msg.INVOKE, args, "binding")
        return f"{what} sent to {', '.join(t.label for t in targets)}"
