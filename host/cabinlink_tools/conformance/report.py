"""The readable summary of a conformance run (``summary.md``), for an accessory maker to
attach to a product: what was tested (target, the unit's identity from DESCRIBE), when, the
verdict per spec section, every failure with the requirement's own words, what did not
apply, and what the suite cannot observe. The JUnit XML (pytest's ``--junitxml``) carries
the same verdicts per test case, with the MUST id and section as properties."""
from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cabinlink import msg

from .. import __version__
from ..catalog import class_name
from .coverage import NOT_OBSERVABLE
from .spec import requirements, section_of


def _sec_key(sec: str) -> tuple[int, ...]:
    return tuple(int(x) for x in sec.split("."))


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def identity_rows(st: Any) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    d = st.dut
    if d is not None and d.declaration is not None:
        ident = d.declaration.identity()
        v = ident.get("version") or []
        rows += [("vendor", str(ident["vendor"])), ("product", str(ident["product"])), ("serial", str(ident["serial"])),
                 ("firmware", str(ident["firmware"])), ("hardware", str(ident["hardware"])),
                 ("device class", f"{ident['device_class']} ({class_name(ident['device_class'] or 0)})"),
                 ("protocol", f"v{v[0]}.{v[1]}" if len(v) == 2 else str(v)), ("D_MAX_RX", str(ident["max_rx"])),
                 ("capabilities", ", ".join(f"{c.slot}:{c.name}" + (f"/{c.instance}" if c.instance else "")
                                            for c in d.declaration.caps))]
        if d.name is not None:
            rows.append(("CAN NAME", f"0x{d.name:016X}, address 0x{d.first_addr:02X} at the start"))
        if d.advert is not None:
            rows.append(("BLE address", str(d.advert.address)))
    if st.car is not None:
        rows += list(st.car.identity().items())
    return rows


def write_summary(st: Any, out_dir: Path) -> Path:
    """Write ``summary.md`` into ``out_dir`` (created); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reqs = requirements()
    results = st.results
    failed = [r for r in results if r["outcome"] == "failed"]
    skipped = [r for r in results if r["outcome"] == "skipped"]
    passed = [r for r in results if r["outcome"] == "passed"]
    verdict = "FAIL" if failed or st.setup_error else ("PASS" if passed else "NOT RUN")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# CabinLink conformance report", ""]
    target_info = st.dut.target.info() if st.dut is not None else ({"target": st.spec.text} if st.spec else {})
    lines += ["| | |", "| --- | --- |"]
    lines.append(f"| verdict | **{verdict}**: {len(passed)} passed, {len(failed)} failed, {len(skipped)} not applicable "
                 f"or skipped ({len({r['id'] for r in results})} MUST ids exercised) |")
    lines.append(f"| target | {_esc(', '.join(f'{k}: {v}' for k, v in target_info.items()))} |")
    for k, v in identity_rows(st):
        lines.append(f"| {k} | {_esc(v)} |")
    lines.append(f"| date | {now} |")
    lines.append(f"| duration | {time.time() - st.started:.1f} s |")
    lines.append(f"| suite | cabinlink tools {__version__}, protocol v{msg.VERSION_MAJOR}.{msg.VERSION_MINOR}, "
                 f"docs/spec.md ({len(reqs)} MUST requirements) |")
    if st.setup_error:
        lines += ["", f"**The target could not be set up:** {_esc(st.setup_error)}"]
    # per section
    by_sec: dict[str, dict[str, int]] = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0})
    for r in results:
        by_sec[section_of(r["id"])][r["outcome"]] += 1
    lines += ["", "## Verdict per section", "", "| section | title | passed | failed | not applicable |",
              "| --- | --- | --- | --- | --- |"]
    titles = {r.section: r.title for r in reqs.values()}
    for sec in sorted(by_sec, key=_sec_key):
        c = by_sec[sec]
        mark = " ❌" if c["failed"] else ""
        lines.append(f"| {sec} | {_esc(titles.get(sec, ''))} | {c['passed']} | {c['failed']}{mark} | {c['skipped']} |")
    lines += ["", "## Failures", ""]
    if not failed:
        lines.append("None.")
    for r in failed:
        q = reqs.get(r["id"])
        lines += [f"### {r['id']} ({section_of(r['id'])} {q.title if q else ''}): `{r['test']}`", ""]
        if q:
            lines += [f"> {q.text}", ""]
        lines += ["```", r["message"].strip()[:2000], "```", ""]
    lines += ["", "## Not applicable or skipped", ""]
    if not skipped:
        lines.append("None.")
    else:
        lines += ["| MUST | test | reason |", "| --- | --- | --- |"]
        for r in skipped:
            lines.append(f"| {r['id']} | `{r['test']}` | {_esc(r['message'])} |")
    lines += ["", "## Not observable from outside the unit", "",
              "These requirements bind the unit but cannot be checked through its links; the maker vouches "
              "for them.", "", "| MUST | reason |", "| --- | --- |"]
    for rid, why in NOT_OBSERVABLE.items():
        lines.append(f"| {rid} | {_esc(why)} |")
    notes = list(st.dut.notes) if st.dut is not None else []
    if st.dut is not None:
        notes += [f"{k}: {v}" for k, v in st.dut.target.diagnostics().items()]
    if st.dut is not None:
        lost = sum(len(s.retries) for s in st.dut.all_sessions())
        if lost:
            notes.append(f"{lost} request(s) got no RESULT and were repeated with a new tid (as a car does, 5.2): "
                         "frames lost on the way, e.g. in a controller with two receive buffers")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
