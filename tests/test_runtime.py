"""The firmware runtime on the simulation, under both runtimes: boot, config validation and
safe mode, the crash-loop guard, the log over the interface, atomic files under power cuts."""
from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink_tools.sim.runner import RUNTIMES
from cabinlink_tools.sim.simulation import Simulation, default_config

from carhelper import SimCar

FIXTURE_APPS = Path(__file__).resolve().parent / "fixtures"
BOARD = "esp32-devkitc"


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as s:
        yield s


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_boots_the_app_and_answers_the_car(sim: Simulation, runtime: str) -> None:
    acc = sim.add(BOARD, "ambient", runtime, name="amb", extra_path=[FIXTURE_APPS])
    acc.wait_for("ready", 60)
    car = SimCar(sim)
    a = car.find()
    p = car.ask(a, msg.describe)
    assert p.ok, (p.status, acc.log)
    caps = [c[msg.C_ID] for c in p.value[msg.D_CAPS]]
    assert caps == [reg.CAP_DEVICE_INFO, reg.CAP_TEMPERATURE]
    assert p.value[msg.D_SERIAL] == "amb" and p.value[msg.D_FIRMWARE] == "0.1.0"
    assert car.ask(a, msg.read, 1, 0).value == 2150
    # a persisted write survives a power cut
    assert car.ask(a, msg.write, 1, 2, -50).ok
    seen = len(acc.log)
    acc.cut_power()
    acc.wait_for("ready", 60, start=seen)
    a = car.find()
    car.pump(0.5)
    assert car.ask(a, msg.read, 1, 2).value == -50
    log = car.ask(a, msg.invoke, 0, reg.CMD_DEVICE_INFO_READ_LOG, [0])
    assert log.ok and any("boot: firmware" in line for line in log.value[1])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_config_starts_a_logged_safe_mode_that_answers(sim: Simulation, runtime: str) -> None:
    cfg = default_config(BOARD, "ambient", "bad")
    cfg["links"]["can"]["bitrate"] = 123
    acc = sim.add(BOARD, "ambient", runtime, name="bad", config=cfg, extra_path=[FIXTURE_APPS])
    acc.wait_for("SAFE MODE: config: links.can.bitrate: must be one of", 60)
    car = SimCar(sim)
    a = car.find()
    car.pump(1.5)
    info = next(x for x in car.client.accessories.values() if x.peer == a)
    assert info.mode == msg.MODE_SAFE and info.health == msg.HEALTH_WARNING
    p = car.ask(a, msg.describe)
    assert [c[msg.C_ID] for c in p.value[msg.D_CAPS]] == [reg.CAP_DEVICE_INFO]
    log = car.ask(a, msg.invoke, 0, reg.CMD_DEVICE_INFO_READ_LOG, [0])
    assert any("SAFE MODE: config: links.can.bitrate" in line for line in log.value[1])
    car.pump(2.0)
    assert acc.process.boots == 1  # safe mode does not reboot by itself


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("broken", ["{not json", json.dumps({"version": 1, "app": "toaster"})])
def test_unusable_config_never_crash_loops(sim: Simulation, runtime: str, broken: str) -> None:
    acc = sim.add(BOARD, "ambient", runtime, name="x", config=broken, extra_path=[FIXTURE_APPS])
    acc.wait_for("SAFE MODE", 60)
    acc.wait_for("can link:", 10)  # safe mode still opens the board's bus
    assert acc.process.boots == 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_crash_loop_ends_in_safe_mode(sim: Simulation, runtime: str) -> None:
    acc = sim.add(BOARD, "controller", runtime, name="crashy", extra_path=[FIXTURE_APPS])
    acc.wait_for("SAFE MODE: crash loop: 5 boots in a row failed", 120)
    assert acc.process.boots == 5
    assert sum("app crashed: RuntimeError deliberate crash" in l for l in acc.log) == 4


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_power_cut_during_writes_leaves_old_or_new_never_broken(sim: Simulation, tmp_path: Path,
                                                                runtime: str) -> None:
    script = tmp_path / "writer.py"
    script.write_text(
        "from runtime.store import write_json, read_json\n"
        "n = (read_json('settings.json', {}) or {}).get('n', 0)\n"
        "print('start', n)\n"
        "while True:\n"
        "    n += 1\n"
        "    write_json('settings.json', {'n': n, 'pad': 'x' * 2000})\n")
    acc = sim.add(BOARD, "ambient", runtime, name="w", script=script)
    rng = random.Random(7)
    seen = 0
    for _ in range(8):
        seen = acc.wait_for("start", 30, start=seen) + 1
        time.sleep(rng.uniform(0.05, 0.4))
        acc.cut_power()
    acc.wait_for("start", 30, start=seen)
    state = json.loads((sim.fs_root / "w" / "settings.json").read_text())
    assert state["n"] > 0 and len(state["pad"]) == 2000
    starts = [int(l.split()[1]) for l in acc.log if l.startswith("start")]
    assert starts == sorted(starts) and starts[-1] > 0  # never went back, never broken


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_both_links_at_once_ble_answers_a_bumble_car(sim: Simulation, runtime: str) -> None:
    from carhelper import TX, BleSession

    cfg = default_config(BOARD, "ambient", "dual", ble=True)
    acc = sim.add(BOARD, "ambient", runtime, name="dual", config=cfg, extra_path=[FIXTURE_APPS])
    acc.wait_for("ble link: advertising as 'dual'", 60)
    central = sim.ble.central("car")
    adv = central.scan(lambda a: b"dual" in a.scan_response, timeout=30)
    flags = adv.scan_response[2 + 16 + 5]  # service data: uuid, major, minor, class, id hi, lo, flags
    assert flags & 0x01  # also reachable on CAN (spec 8.2)
    link = central.connect(adv)
    link.exchange_mtu(247)
    s = BleSession(link, link.subscribe(TX))
    s.send(msg.hello(1))
    assert s.next()[:3] == [msg.RESULT, 1, msg.OK]
    s.send(msg.read(2, 1, 0))
    assert s.next() == [msg.RESULT, 2, msg.OK, 2150]
    car = SimCar(sim)  # and the CAN side answers at the same time
    assert car.ask(car.find(), msg.read, 1, 0).value == 2150
    link.disconnect()
