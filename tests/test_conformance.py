"""The conformance suite (host/cabinlink_tools/conformance, docs/conformance.md) run as its
users run it, `cabinlink conformance`, in subprocesses:

- against the three reference accessories in the simulation under both runtimes and
  against the reference car: everything passes (six accessory runs, two at a time, then the
  car); each run's time is printed and bounded;
- against a deliberately broken accessory (tests/fixtures/broken): it fails, and the
  failures name the spec section and requirement, in the output, the summary and the
  JUnit XML;
- every MUST of docs/spec.md is tested or listed with a reason, and docs/conformance.md
  lists them all.
"""
from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cabinlink_tools.conformance.coverage import NOT_OBSERVABLE, table
from cabinlink_tools.conformance.spec import requirements
from cabinlink_tools.conformance.targets import parse_target

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "fixtures" / "broken"
RUN_LIMIT_S = 120  # per run, two runs side by side on a loaded 2-core machine


def conformance(target: str, report: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "cabinlink_tools.cli", "conformance", "--target", target,
                        "--report", str(report), *extra], cwd=ROOT, capture_output=True, text=True,
                       timeout=RUN_LIMIT_S + 60)
    return p, time.monotonic() - t0


def test_every_must_is_tested_or_listed_and_documented() -> None:
    reqs = requirements()
    rows = table()
    assert len(rows) == len(reqs) >= 100
    missing = [r for r in rows if r[2] == "MISSING"]
    assert not missing, missing
    doc = (ROOT / "docs" / "conformance.md").read_text()
    for rid, _, verdict, _ in rows:
        assert f"| {rid} |" in doc, f"docs/conformance.md does not list {rid}"
    for rid in NOT_OBSERVABLE:
        assert rid in doc


def test_targets_parse_with_clear_errors() -> None:
    t = parse_target("sim:mount:micropython:esp32-c6-devkitc-1")
    assert (t.app, t.runtime, t.board) == ("mount", "micropython", "esp32-c6-devkitc-1")
    assert parse_target("sim:ambient").runtime == "cpython"
    t = parse_target("can:socketcan:can0")
    assert (t.interface, t.channel) == ("socketcan", "can0")
    assert parse_target("can:cabinlink:127.0.0.1:4000").channel == "127.0.0.1:4000"
    assert parse_target("ble:AA:BB:CC:DD:EE:FF").address == "AA:BB:CC:DD:EE:FF"
    assert parse_target("car:sim").is_car
    for bad, word in (("sim:toaster", "app"), ("sim:ambient:pypy", "runtime"), ("can:socketcan", "channel"),
                      ("usb:1", "kind"), ("car:tesla", "car:sim")):
        with pytest.raises(ValueError, match=word):
            parse_target(bad)


def test_broken_accessory_fails_naming_the_section(tmp_path: Path) -> None:
    p, _ = conformance("sim:ambient", tmp_path, "--fixture-app", str(BROKEN), "-k", "M_5_3_1 or M_5_3_2 or M_4_2_1")
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-3000:]
    assert "spec 5.3 [M-5.3-2]: HELLO with major 1 must get VERSION_MISMATCH, got OK" in out
    assert "spec 4.2 [M-4.2-1]" in out and "not the shortest form" in out
    summary = (tmp_path / "summary.md").read_text()
    assert "**FAIL**: 1 passed, 2 failed" in summary
    assert "### M-5.3-2 (5.3 HELLO, version negotiation and sessions)" in summary
    assert "> When major differs, the accessory MUST answer VERSION_MISMATCH" in summary
    assert "| product | suite" not in summary and "| firmware | 0.1.0 |" in summary
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    c = cases["test_M_5_3_2_hello_other_major_version_mismatch"]
    props = {x.get("name"): x.get("value") for x in c.iter("property")}
    assert props["must"] == "M-5.3-2" and props["section"] == "5.3" and props["role"] == "accessory"
    assert c.find("failure") is not None and "spec 5.3 [M-5.3-2]" in c.find("failure").get("message")
    ok = cases["test_M_5_3_1_hello_same_major_ok"]
    assert ok.find("failure") is None


def test_ble_target_without_bleak_is_skipped_with_the_reason(tmp_path: Path) -> None:
    try:
        import bleak  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bleak is installed here")
    p, _ = conformance("ble:AA:BB:CC:DD:EE:FF", tmp_path, "-k", "M_5_4_1")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-2000:]
    assert "bleak" in out and "install it" in out
    assert "not applicable" in (tmp_path / "summary.md").read_text()


ACCESSORY_TARGETS = [f"sim:{app}:{rt}" for app in ("ambient", "controller", "mount") for rt in ("cpython", "micropython")]


def test_reference_accessories_and_car_pass(tmp_path: Path) -> None:
    """The acceptance: all three reference accessories under both runtimes, and the
    reference car. Two runs at a time (the machine has two cores)."""
    targets = ACCESSORY_TARGETS + ["car:sim"]

    def one(target: str) -> tuple[str, subprocess.CompletedProcess[str], float]:
        p, dt = conformance(target, tmp_path / target.replace(":", "_"))
        return target, p, dt

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, targets))
    lines = []
    bad = []
    for target, p, dt in results:
        summary = tmp_path / target.replace(":", "_") / "summary.md"
        verdict = next((line for line in summary.read_text().splitlines() if line.startswith("| verdict")), "?") \
            if summary.exists() else "no summary"
        lines.append(f"{target:28s} {dt:5.1f} s  {verdict}")
        if p.returncode != 0:
            bad.append(f"--- {target} (exit {p.returncode})\n{(p.stdout + p.stderr)[-4000:]}")
    print("\nconformance runs:\n" + "\n".join(lines))
    assert not bad, "\n".join(bad)
    for target, p, dt in results:
        assert dt < RUN_LIMIT_S, f"{target} took {dt:.1f} s"
