"""Which test checks which MUST, and which MUSTs the suite cannot check, with the reason.

Every ``[M-s-n]`` of ``docs/spec.md`` is either checked by at least one test of the suite
(found by its ``@must`` marker) or listed in :data:`NOT_OBSERVABLE`. Duties of the car are
checked when the target is a car (``car:`` targets, ``tests/test_car.py``); duties of every
node are checked on both kinds of target where the suite implements it.
``python -m cabinlink_tools.conformance.coverage`` prints the table for docs/conformance.md.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass

from .spec import requirements, section_of

NOT_OBSERVABLE: dict[str, str] = {
    "M-2.3-1": "Needs the accessory's millisecond tick to wrap (2^30 ms, 12.4 days of uptime on an "
               "ESP32); no message exposes the tick. The core's wraparound arithmetic is unit-tested "
               "(tests/mp, ManualClock starts 5 s before the wrap).",
    "M-3.6-1": "The vendor defines a vendor capability's members: their access rights and ranges are "
               "not in the registry, so the suite has nothing to check the answers against.",
    "M-7.3-2": "Uniqueness of the NAME across units and its derivation from the hardware id are "
               "manufacturing properties; the suite sees one unit.",
    "M-8.1-1": "The Bluetooth core version is a link-layer property a GATT client does not see; the "
               "suite checks what v0.1 relies on it for (ATT MTU 247, M-8.4-8).",
    "M-8.5-1": "Connection events are a link-layer notion: a GATT client sees notifications after the "
               "controllers buffered them. Needs an air sniffer.",
}

CAR_DUTIES = {
    "M-3.6-3", "M-3.6-4", "M-5.2-4", "M-5.3-8", "M-5.4-5", "M-5.8-2", "M-5.9-1", "M-5.11-3",
    "M-6.6-4", "M-7.3-6", "M-7.3-7", "M-7.4-9", "M-8.2-3", "M-8.3-2",
}


@dataclass(frozen=True)
class Covered:
    """One test of the suite: module, function name, MUST id, role."""

    module: str
    test: str
    id: str
    role: str


def suite_tests() -> list[Covered]:
    """Every test function of the suite with its ``@must`` marker (imported, not run)."""
    from . import tests as pkg

    out: list[Covered] = []
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("test_"):
            continue
        m = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        for name, fn in vars(m).items():
            if not name.startswith("test_") or not callable(fn):
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "must":
                    out.append(Covered(mod.name, name, mark.args[0], mark.kwargs.get("role", "accessory")))
    return out


def table() -> list[tuple[str, str, str, str]]:
    """(id, section, verdict, where) for every MUST, in spec order: verdict is ``tested``,
    ``car`` (tested on car targets), ``tested + car``, or ``not observable``."""
    tests = suite_tests()
    rows = []
    for rid in requirements():
        mine = [t for t in tests if t.id == rid]
        acc = [t for t in mine if t.role in ("accessory", "node") and t.module != "test_car"]
        carts = [t for t in mine if t.module == "test_car"]
        if rid in NOT_OBSERVABLE:
            verdict, where = "not observable", NOT_OBSERVABLE[rid]
        elif acc and carts:
            verdict = "tested + car"
            where = ", ".join(f"{t.module}::{t.test}" for t in acc + carts)
        elif carts:
            verdict, where = "car", ", ".join(f"{t.module}::{t.test}" for t in carts)
        elif acc:
            verdict, where = "tested", ", ".join(f"{t.module}::{t.test}" for t in acc)
        else:
            verdict, where = "MISSING", ""
        rows.append((rid, section_of(rid), verdict, where))
    return rows


def markdown() -> str:
    reqs = requirements()
    lines = ["| MUST | section | verdict | test(s) or reason |", "| --- | --- | --- | --- |"]
    for rid, sec, verdict, where in table():
        title = reqs[rid].title
        lines.append(f"| {rid} | {sec} {title} | {verdict} | {where} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
