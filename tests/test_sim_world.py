"""Boards built from boards/*.json drive the same firmware under both runtimes: the
controller's buttons, knob and LEDs, the mount's motor and servo, the ambient sensors."""
from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from cabinlink_tools.sim import boards
from cabinlink_tools.sim.cabin import Cabin
from cabinlink_tools.sim.runner import RUNTIMES, BoardProcess
from cabinlink_tools.sim.simulation import unique_id_for
from cabinlink_tools.sim.world import World



def test_unknown_board_and_app_are_refused_by_name(world: World) -> None:
    with pytest.raises(ValueError, match="unknown board 'nope'.*esp32-devkitc"):
        boards.build(world, "nope", "ambient", "x", bytes(6), Cabin(), lambda: 0.0)
    with pytest.raises(ValueError, match="no wiring for app 'toaster'"):
        boards.build(world, "esp32-devkitc", "toaster", "x", bytes(6), Cabin(), lambda: 0.0)


def test_board_file_wires_the_devices(world: World) -> None:
    sb, dev = boards.build(world, "esp32-devkitc", "controller", "c1", unique_id_for("c1"),
                           Cabin(), lambda: 0.0)
    assert [b.pin.number for b in dev.buttons] == [32, 33, 25, 26]
    assert dev.encoder is not None and dev.leds is not None and dev.leds.n == 4
    sb2, dev2 = boards.build(world, "esp32-devkitc", "ambient", "a1", unique_id_for("a1"),
                             Cabin(), lambda: 0.0)
    assert sorted(dev2.sensors) == ["bh1750", "scd4x", "sht4x"]
    assert sorted(sb2.i2c["22/21"]) == [0x23, 0x44, 0x62]
    assert unique_id_for("a1") != unique_id_for("c1") and len(unique_id_for("a1")) == 6


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_controller_board_under_firmware(world: World, tmp_path: Path, runtime: str) -> None:
    sb, dev = boards.build(world, "esp32-devkitc", "controller", "c1", unique_id_for("c1"),
                           Cabin(), lambda: 0.0)
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        import json, time
        from machine import Pin
        import neopixel
        board = json.load(open("board.json"))["apps"]["controller"]
        keys = [Pin(n, Pin.IN, Pin.PULL_UP) for n in board["buttons"]]
        a = Pin(board["encoder"]["a"], Pin.IN, Pin.PULL_UP)
        b = Pin(board["encoder"]["b"], Pin.IN, Pin.PULL_UP)
        np = neopixel.NeoPixel(Pin(board["leds"]["pin"], Pin.OUT), board["leds"]["count"])
        np[0] = (255, 0, 0); np[3] = (0, 0, 9); np.write()
        print("ready")
        seen = []
        last = (a.value(), b.value())
        steps = 0
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < 8000 and (len(seen) < 1 or steps < 8):
            if not keys[1].value() and 1 not in seen:
                seen.append(1)
                print("key 1 down")
            ab = (a.value(), b.value())
            if ab != last:
                steps += 1
                last = ab
        print("steps", steps)
    """))
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "board.json").write_text((boards.BOARDS_DIR / "esp32-devkitc.json").read_text())
    p = BoardProcess(world, sb, runtime, script, tmp_path / "fs")
    p.start()
    try:
        p.wait_for("ready", 30)
        assert dev.leds is not None and dev.leds.pixels[0] == (255, 0, 0) and dev.leds.pixels[3] == (0, 0, 9)
        dev.buttons[1].press()
        p.wait_for("key 1 down", 10)
        assert dev.encoder is not None
        # This script samples A and B by polling, two round trips per sample: slow the
        # knob down so no Gray step falls between samples (the firmware uses IRQs).
        dev.encoder.step_interval = 0.05
        dev.encoder.turn(2)  # 2 detents x 4 Gray steps
        p.wait_for("steps", 15)
        assert "steps 8" in p.log, p.log
    finally:
        p.stop()


NODE = Path(__file__).resolve().parent.parent / "bench" / "sim_node.py"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("board", ["esp32-devkitc", "esp32-c6-devkitc-1"])
def test_firmware_node_on_the_simulated_bus_is_seen_by_a_python_can_peer(board: str, runtime: str) -> None:
    """The protocol core in a firmware process claims an address and heartbeats through
    the board's real CAN path (MCP2515 over SPI, or the on-chip controller); a python-can
    peer hears it and the bus monitor decodes it."""
    from cabinlink_tools.monitor import BusDecoder
    from cabinlink_tools.sim.simulation import Simulation

    with Simulation() as sim:
        peer = sim.can_peer()
        acc = sim.add(board, "ambient", runtime, name="amb", script=NODE)
        acc.wait_for("ready", 60)
        decoder = BusDecoder()
        lines: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("HEARTBEAT" in l for l in lines):
            m = peer.recv(timeout=0.2)
            if m is not None:
                lines += decoder.feed(m.arbitration_id, bytes(m.data), m.is_extended_id)
        text = "\n".join(lines)
        assert "claims address" in text and "HEARTBEAT uptime" in text, (text, acc.log)
        # Unplug: the board falls silent; replug: it claims again.
        acc.unplug()
        while peer.recv(timeout=0.3) is not None:
            pass
        assert peer.recv(timeout=1.5) is None
        seen = len(acc.log)
        acc.replug()
        acc.wait_for("ready", 60, start=seen)
        m = peer.recv(timeout=10)
        assert m is not None
