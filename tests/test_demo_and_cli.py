"""The README's front door: `make demo` (the scripted drive), `cabinlink demo --minimal`
(the protocol core alone) and the CLI."""
from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

from cabinlink_tools import cli, demo, demo_minimal

ROOT = Path(__file__).resolve().parent.parent


def test_demo_headless_plays_the_whole_drive_and_exits_0() -> None:
    """What CI runs as `make demo ARGS=--headless`: the real firmware of the three
    accessories, the reference car, its screen, every scripted step observed."""
    proc = subprocess.run([sys.executable, "-m", "cabinlink_tools.cli", "demo", "--headless",
                           "--speed", "4"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    assert any(ln.startswith("car screen: http://127.0.0.1:") for ln in lines), out
    for step in (
            "ambient        ready:", "controller     ready:", "mount          ready:",
            "using CAN",                                       # the mount is on both: CAN wins
            "vehicle        door.front_left = false", "vehicle        ignition = true",
            "buttons.press 0 -> media.play_pause: playing",
            "phone_presence.present = True", "invoke clamp.clamp(): OK", "clamp.state = clamped",
            "ambient        co2.air_quality poor", "vehicle        climate.fresh_air = true",
            "rotary_encoder.delta -> media.volume", "vehicle        speed_kmh = 50",
            "mount          write clamp.vehicle_moving = True: OK",
            "invoke clamp.release(): CONFIRM_REQUIRED",
            "demo: every scripted step was observed (7/7)"):
        assert step in out, f"missing {step!r} in:\n{out}"
    assert "✗" not in out and "not observed" not in out
    # the timeline is in order: fresh air after the CO2 event, the lock after the speed
    assert out.index("co2.air_quality poor") < out.index("co2.air_quality 1 -> climate.fresh_air")
    assert out.index("speed_kmh = 12") < out.index("clamp.vehicle_moving = True")


class _NoCar:
    """A car that never sees an accessory: the drive must say which step is missing."""

    class engine:  # noqa: N801 - the attribute the drive reads the time from
        @staticmethod
        def seconds() -> float:
            return 0.0

    async def wait_ready(self, key: str, timeout: float) -> Any:
        raise TimeoutError


def test_a_step_that_is_not_observed_is_named() -> None:
    out = io.StringIO()
    steps = asyncio.run(demo.Drive(_NoCar(), None, {}, out).run())
    assert len(steps) == 1 and not steps[0].observed and steps[0].why == "not seen in time"
    assert "✗ three accessories: controller on CAN, ambient on BLE, mount on both: not seen in time" \
        in out.getvalue()


def test_demo_minimal_runs_the_whole_exchange() -> None:
    out = io.StringIO()
    assert demo_minimal.run(out=out, speed=8.0) == 0, out.getvalue()
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
