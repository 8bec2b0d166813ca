"""The README's front door: the demo exchange and the CLI."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from cabinlink_tools import cli, demo

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_exchange() -> None:
    out = io.StringIO()
    assert demo.run(out=out, speed=8.0) == 0, out.getvalue()
    text = out.getvalue()
    for step in ("both claims settled", "RESULT OK [0, 1, 2]", "slot 1: temperature",
                 "REPORT temperature.value", "RESULT INVALID_VALUE", "EVENT co2.air_quality",
                 "every step answered as the spec says"):
        assert step in text, f"missing {step!r} in:\n{text}"
    assert "UNEXPECTED" not in text


def test_every_command_has_help() -> None:
    parser, handlers = cli.build_parser()
    for name in handlers:
        proc = subprocess.run([sys.executable, "-m", "cabinlink_tools.cli", name, "--help"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 0 and "usage: cabinlink " + name in proc.stdout, proc.stderr


def test_no_command_prints_help_and_fails() -> None:
    assert cli.main([]) == 2
