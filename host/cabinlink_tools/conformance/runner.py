"""``cabinlink conformance``: the suite through pytest, with its report.

The command runs pytest in-process on the suite's own tests with the plugin loaded, so it
works from any directory (a project's pytest configuration is not read) and writes, with
``--report DIR``, the JUnit XML (``DIR/junit.xml``, the MUST id and spec section as properties
of each test case) and the readable summary (``DIR/summary.md``). Exit status: pytest's
(0 all passed, 1 some failed, 2-5 usage or internal errors).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE / "tests"

DESCRIPTION = ("Runs the CabinLink conformance suite (one test per MUST of docs/spec.md) against a "
               "target: a reference accessory in the simulation, a real accessory over a CAN adapter "
               "or BLE, or a car implementation. With --report DIR it writes DIR/junit.xml and "
               "DIR/summary.md. See docs/conformance.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, metavar="TARGET",
                   help="sim:<app>[:<runtime>[:<board>]] (app ambient, controller or mount; runtime cpython or "
                        "micropython), can:<interface>:<channel>, ble:<address>, or car:sim")
    p.add_argument("--report", metavar="DIR", help="write junit.xml and summary.md into DIR")
    p.add_argument("--fixture-app", metavar="DIR",
                   help="simulated targets: run the app package DIR/apps/<app> instead of the reference app")
    p.add_argument("-k", metavar="EXPR", help="only the tests matching this pytest -k expression")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per test")


def pytest_args(target: str, report: str | None = None, fixture_app: str | None = None,
                keyword: str | None = None, verbose: bool = False) -> list[str]:
    """The pytest command line for one run of the suite."""
    args = ["-p", "cabinlink_tools.conformance.plugin", "-p", "no:cacheprovider", "-c", os.devnull,
            "--rootdir", str(HERE), "-o", "junit_family=xunit1", "-ra", "--strict-markers",
            "--cl-target", target, str(TESTS)]
    args.append("-v" if verbose else "-q")
    if report:
        out = Path(report)
        out.mkdir(parents=True, exist_ok=True)
        args += ["--cl-report", str(out), "--junitxml", str(out / "junit.xml")]
    if fixture_app:
        args += ["--cl-fixture-app", fixture_app]
    if keyword:
        args += ["-k", keyword]
    return args


def run(args: argparse.Namespace) -> int:
    import pytest

    from .targets import parse_target

    try:
        parse_target(args.target)
    except ValueError as e:
        print(f"cabinlink conformance: {e}")
        return 2
    code = int(pytest.main(pytest_args(args.target, args.report, args.fixture_app, args.k, args.verbose)))
    if args.report:
        print(f"report: {Path(args.report) / 'summary.md'}, {Path(args.report) / 'junit.xml'}")
    return code
