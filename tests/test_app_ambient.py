"""The ambient sensor accessory (firmware/apps/ambient, docs/accessories/ambient.md) end to
end on the simulation, under CPython and the MicroPython unix port: the real firmware on an
ESP32-DevKitC with the SHT4x, SCD4x and BH1750 models, a car on the simulated CAN bus (and a
Bumble central for the Environmental Sensing service).

The SCD4x model keeps the datasheet's 5 s sample interval in real time, so the tests that need
CO2 samples do several things per sample and wait for log lines, reports and events rather
than for fixed times; time bounds are only lower bounds (a slow host can only make things
later) or generous timeouts."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink_tools.sim.chips import scd4x as scd4x_model
from cabinlink_tools.sim.runner import RUNTIMES
from cabinlink_tools.sim.simulation import Accessory, Simulation, default_config

from carhelper import SimCar

BOARD = "esp32-devkitc"
INFO, TEMP, HUM, CO2, LUX = 0, 1, 2, 3, 4  # slots: device_info, then the app's order
VALUE, STATUS, OFFSET, PERIOD = 0, 1, 2, 3
ASC, HIGH, HYST, LEVEL = 4, 5, 6, 7
OK_, WARMING, FAULT, NOT_PRESENT = 0, 1, 2, 3
HEALTH = reg.ATTR_DEVICE_INFO_HEALTH  # mirrored by the node about once a second


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as s:
        yield s


def cabin(sim: Simulation, t: float | None = None, rh: float | None = None,
          co2: float | None = None, lux: float | None = None) -> None:
    """Set the cabin air and hold it there: nobody breathes, no air exchange, the HVAC keeps
    the temperature, so what the sensors read is exactly what was set."""
    c = sim.cabin
    with sim.world.lock:
        c.occupants = 0
        c.ach_recirc = 1e-9
        if t is not None:
            c.hvac_setpoint = t
            c.set_temperature(t)
        if rh is not None:
            c.set_humidity(rh)
        if co2 is not None:
            c.set_co2(co2)
        if lux is not None:
            c.set_light(lux)


def boot(sim: Simulation, runtime: str, name: str = "amb", config: dict | None = None,
         before: Callable[[Accessory], None] | None = None) -> tuple[Accessory, SimCar, int]:
    acc = sim.add(BOARD, "ambient", runtime, name=name, config=config, start=before is None)
    if before is not None:
        before(acc)
        acc.process.start()
    acc.wait_for("ambient: sht4x@0x44 scd4x@0x62 bh1750@0x23", 60)
    car = SimCar(sim)
    return acc, car, car.find()


def read(car: SimCar, a: int, slot: int, attr: int) -> Any:
    p = car.ask(a, msg.read, slot, attr)
    assert p.ok, (slot, attr, p.status)
    return p.value


def wait_read(car: SimCar, a: int, slot: int, attr: int, pred: Callable[[Any], bool],
              timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        v = read(car, a, slot, attr)
        if pred(v):
            return v
        assert time.monotonic() < end, f"slot {slot} attr {attr} stayed {v!r}"
        car.pump(0.1)


def write(car: SimCar, a: int, slot: int, attr: int, value: Any) -> int:
    p = car.ask(a, msg.write, slot, attr, value)
    assert p.done and not p.timed_out
    return p.status  # type: ignore[return-value]


def near(x: float, scale: int = 100) -> Callable[[int], bool]:
    """Equal to x in the registry's scaled unit, within the conversion rounding (one step)."""
    return lambda v: abs(v - round(x * scale)) <= 1


def settings(sim: Simulation, name: str = "amb") -> dict:
    p = sim.fs_root / name / "settings.json"
    return json.loads(p.read_text()) if p.exists() else {}


# --- values, calibration offsets, invalid writes, power cut --------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_values_offsets_invalid_writes_and_a_power_cut(sim: Simulation, runtime: str) -> None:
    cabin(sim, t=23.47, rh=41.3, co2=812, lux=345)
    acc, car, a = boot(sim, runtime)
    d = car.ask(a, msg.describe).value
    assert d[msg.D_CLASS] == reg.CLASS_AMBIENT
    caps = d[msg.D_CAPS]
    assert [c[msg.C_ID] for c in caps] == [reg.CAP_DEVICE_INFO, reg.CAP_TEMPERATURE,
                                           reg.CAP_HUMIDITY, reg.CAP_CO2, reg.CAP_ILLUMINANCE]
    assert caps[CO2][msg.C_ATTRS] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert caps[CO2][msg.C_COMMANDS] == [reg.CMD_CO2_FORCE_RECALIBRATION]
    assert caps[CO2][msg.C_EVENTS] == [reg.EV_CO2_AIR_QUALITY]
    assert caps[LUX][msg.C_ATTRS] == [0, 1, 3]  # illuminance has no offset
    # the registry defaults, nothing written yet
    assert [read(car, a, CO2, x) for x in (OFFSET, PERIOD, ASC, HIGH, HYST)] == [0, 5000, True, 1200, 100]

    # T, RH and lux within the conversion rounding of what the cabin holds
    wait_read(car, a, TEMP, STATUS, lambda v: v == OK_)
    assert near(23.47)(read(car, a, TEMP, VALUE))
    assert near(41.3)(read(car, a, HUM, VALUE))
    assert read(car, a, HUM, STATUS) == OK_
    assert near(345, 1)(wait_read(car, a, LUX, VALUE, near(345, 1)))

    # offsets written by the car shift the values at once
    assert write(car, a, TEMP, OFFSET, -150) == msg.OK
    assert near(23.47 - 1.5)(read(car, a, TEMP, VALUE))
    assert write(car, a, HUM, OFFSET, 250) == msg.OK
    assert near(41.3 + 2.5)(read(car, a, HUM, VALUE))

    # out of range or of the wrong type: INVALID_VALUE, and nothing changes
    before = settings(sim)
    bad = [(TEMP, OFFSET, 1001), (TEMP, OFFSET, -1001), (HUM, OFFSET, 1001), (CO2, OFFSET, 501),
           (CO2, OFFSET, -501), (TEMP, PERIOD, 99), (TEMP, PERIOD, 600001), (HUM, PERIOD, 99),
           (CO2, PERIOD, 999), (LUX, PERIOD, 99), (CO2, HIGH, 399), (CO2, HIGH, 10001),
           (CO2, HYST, 1001), (CO2, ASC, 1), (TEMP, OFFSET, True), (TEMP, OFFSET, "1")]
    for slot, attr, v in bad:
        old = read(car, a, slot, attr)
        assert write(car, a, slot, attr, v) == msg.INVALID_VALUE, (slot, attr, v)
        assert read(car, a, slot, attr) == old
    assert write(car, a, TEMP, VALUE, 2000) == msg.ACCESS_DENIED
    assert write(car, a, CO2, LEVEL, 1) == msg.ACCESS_DENIED
    assert write(car, a, LUX, OFFSET, 0) == msg.NOT_FOUND
    assert settings(sim) == before == {"temperature.offset": -150, "humidity.offset": 250}

    # CO2: the SCD4x's first periodic sample, then its offset
    assert read(car, a, CO2, STATUS) in (WARMING, OK_)
    assert wait_read(car, a, CO2, VALUE, lambda v: v != 0) == 812
    assert read(car, a, CO2, STATUS) == OK_
    assert write(car, a, CO2, OFFSET, -12) == msg.OK
    assert read(car, a, CO2, VALUE) == 800
    assert write(car, a, LUX, PERIOD, 2500) == msg.OK

    # a power cut: every written value survives and applies from the first sample
    mark = len(acc.log)
    acc.cut_power()
    acc.wait_for("sht4x: ok", 60, start=mark)
    a = car.find()
    car.pump(0.3)
    assert [read(car, a, s, OFFSET) for s in (TEMP, HUM, CO2)] == [-150, 250, -12]
    assert read(car, a, LUX, PERIOD) == 2500
    assert near(23.47 - 1.5)(read(car, a, TEMP, VALUE))
    assert near(41.3 + 2.5)(read(car, a, HUM, VALUE))
    assert read(car, a, CO2, STATUS) == WARMING  # the SCD4x is restarted: 5 s to a sample


# --- subscriptions and sample periods ---------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_subscriptions_respect_min_max_threshold_and_sample_periods(sim: Simulation,
                                                                     runtime: str) -> None:
    cabin(sim, t=22.0, rh=45.0, co2=600, lux=100)
    cfg = default_config(BOARD, "ambient", "amb")
    cfg["calibration"] = {"humidity_offset": -100}  # factory values, until the car writes
    cfg["app_config"] = {"high_ppm": 1000, "hysteresis_ppm": 50, "auto_calibration": False}
    acc, car, a = boot(sim, runtime, config=cfg)
    assert read(car, a, HUM, OFFSET) == -100
    assert [read(car, a, CO2, x) for x in (ASC, HIGH, HYST)] == [False, 1000, 50]
    wait_read(car, a, TEMP, VALUE, near(22.0))
    assert near(44.0)(read(car, a, HUM, VALUE))

    reports: list[tuple[float, int, int, Any]] = []
    car.client.on_report = lambda acc_, slot, attr, v: reports.append((time.monotonic(), slot, attr, v))

    def got(slot: int) -> list[tuple[float, Any]]:
        return [(t, v) for t, s, at, v in reports if s == slot and at == VALUE]

    assert write(car, a, LUX, PERIOD, 100) == msg.OK
    # temperature: any time, at most every 60 s, or on a change of >= 0.50 C
    assert car.ask(a, msg.subscribe, TEMP, VALUE, 0, 60, 50).value == [0, 60]
    # humidity: a report every 2 s whatever the value (threshold beyond any change)
    assert car.ask(a, msg.subscribe, HUM, VALUE, 0, 2, 10000).value == [0, 2]
    # illuminance: every change, but never two reports closer than 1.5 s
    assert car.ask(a, msg.subscribe, LUX, VALUE, 1500, 60).value == [1500, 60]
    car.pump(5, lambda: got(TEMP) and got(LUX))
    assert [v for _, v in got(TEMP)] == [2200]  # priming

    # a drift below the threshold: no report; the light changes ten times a second
    cabin(sim, t=22.2)
    end = time.monotonic() + 4.5
    lux = 100
    while time.monotonic() < end:
        lux += 7
        cabin(sim, lux=lux)
        car.pump(0.1)
    assert near(22.2)(read(car, a, TEMP, VALUE))  # sampled, not reported
    assert [v for _, v in got(TEMP)] == [2200]
    # a change of >= 0.50 C since the last REPORT (not the last sample): reported
    cabin(sim, t=22.6)
    assert car.pump(10, lambda: len(got(TEMP)) == 2)
    assert near(22.6)(got(TEMP)[1][1])

    lux_t = [t for t, _ in got(LUX)]
    assert len(lux_t) >= 3, got(LUX)  # the floor delays reports, it does not stop them
    assert all(b - a_ >= 1.5 - 0.2 for a_, b in zip(lux_t, lux_t[1:])), got(LUX)
    hum_t = [t for t, _ in got(HUM)]
    assert len(hum_t) >= 3, got(HUM)  # the ceiling: a report at least every 2 s
    assert all(b - a_ >= 2.0 - 0.2 for a_, b in zip(hum_t, hum_t[1:])), got(HUM)

    # sample periods: per capability, honoured at once, also from 10 min down
    sht = acc.devices.sensors["sht4x"]
    car.client.on_report = None
    assert car.ask(a, msg.unsubscribe, HUM, VALUE).ok
    assert write(car, a, TEMP, PERIOD, 600000) == msg.OK
    assert write(car, a, HUM, PERIOD, 600000) == msg.OK
    car.pump(0.3)
    n = sht.writes
    car.pump(2.0)
    assert sht.writes - n <= 1  # no measurement while nothing is due
    rh_before = read(car, a, HUM, VALUE)
    t_before = read(car, a, TEMP, VALUE)
    cabin(sim, t=24.0)  # warmer air holds the same water: RH drops by about 5 %
    car.pump(0.5)
    assert read(car, a, TEMP, VALUE) == t_before
    assert write(car, a, TEMP, PERIOD, 200) == msg.OK
    wait_read(car, a, TEMP, VALUE, near(24.0), timeout=10)
    n = sht.writes
    car.pump(10, lambda: sht.writes - n >= 8)
    assert sht.writes - n >= 8
    assert read(car, a, HUM, VALUE) == rh_before  # humidity keeps its own 10 min period

    # CO2: from 30 s on the SCD4x runs its low-power mode, back to 5 s below
    scd = acc.devices.sensors["scd4x"]
    wait_read(car, a, CO2, STATUS, lambda v: v == OK_)
    assert scd.settings.asc == 0  # auto_calibration false from app_config
    assert write(car, a, CO2, PERIOD, 30000) == msg.OK
    assert car.pump(5, lambda: scd.mode == "periodic" and scd._interval == 30.0)
    assert write(car, a, CO2, PERIOD, 10000) == msg.OK
    assert car.pump(5, lambda: scd.mode == "periodic" and scd._interval == 5.0)
    assert write(car, a, CO2, ASC, True) == msg.OK
    assert car.pump(5, lambda: scd.settings.asc == 1 and scd.mode == "periodic")
    assert settings(sim)["co2.auto_calibration"] is True


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_bad_app_config_names_the_field_in_safe_mode(sim: Simulation, runtime: str) -> None:
    cfg = default_config(BOARD, "ambient", "bad")
    cfg["app_config"] = {"high_ppm": 50}
    cfg["calibration"] = {"temperature_offset": 0}
    acc = sim.add(BOARD, "ambient", runtime, name="bad", config=cfg)
    acc.wait_for("SAFE MODE: app ambient: ValueError app_config.high_ppm: must be an integer "
                 "400..10000", 60)


# --- air quality and forced recalibration -------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_air_quality_events_with_hysteresis_and_forced_recalibration(
        sim: Simulation, runtime: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cabin(sim, t=22.0, rh=45.0, co2=900, lux=100)
    acc, car, a = boot(sim, runtime)
    assert car.ask(a, msg.hello).ok  # events go to cars that said HELLO
    events: list[tuple[int, int, Any]] = []
    car.client.on_event = lambda acc_, slot, ev, data: events.append((slot, ev, data))
    co2: list[int] = []
    car.client.on_report = lambda acc_, slot, attr, v: co2.append(v) if slot == CO2 else None
    assert car.ask(a, msg.subscribe, CO2, VALUE, 0, 3600).ok
    poor = (CO2, reg.EV_CO2_AIR_QUALITY, reg.CO2_LEVEL_POOR)
    good = (CO2, reg.EV_CO2_AIR_QUALITY, reg.CO2_LEVEL_GOOD)

    cabin(sim, co2=1300)  # past high_ppm 1200 (the first sample or the next)
    assert car.pump(15, lambda: events), acc.log
    assert events == [poor]
    assert read(car, a, CO2, LEVEL) == reg.CO2_LEVEL_POOR

    cabin(sim, co2=1150)  # below the threshold but not below 1200 - 100: no event
    assert car.pump(15, lambda: co2[-1:] == [1150])
    cabin(sim, co2=1050)  # below 1100: good again, one event
    assert car.pump(15, lambda: len(events) == 2 and co2[-1:] == [1050])
    assert events == [poor, good]
    assert read(car, a, CO2, LEVEL) == reg.CO2_LEVEL_GOOD

    # the thresholds are judged again when the car changes them
    assert write(car, a, CO2, HIGH, 1000) == msg.OK
    car.pump(0.3)
    assert events[2:] == [poor]
    assert write(car, a, CO2, HYST, 0) == msg.OK  # 1050 >= 1000: still poor
    assert write(car, a, CO2, HIGH, 1100) == msg.OK  # 1050 < 1100 - 0: good
    car.pump(0.3)
    assert events[2:] == [poor, good]
    assert write(car, a, CO2, HIGH, 1200) == msg.OK and write(car, a, CO2, HYST, 100) == msg.OK
    car.pump(0.3)
    assert len(events) == 4
    assert sum("co2: air quality" in line for line in acc.log) == 4

    # forced recalibration: the chip refuses before 3 min of measuring (INVALID_STATE) ...
    p = car.ask(a, msg.invoke, CO2, reg.CMD_CO2_FORCE_RECALIBRATION, [1050])
    assert p.status == msg.INVALID_STATE
    assert car.ask(a, msg.invoke, CO2, reg.CMD_CO2_FORCE_RECALIBRATION, [399]).status == msg.INVALID_VALUE
    # ... and corrects a drifted sensor when it has measured long enough
    scd = acc.devices.sensors["scd4x"]
    monkeypatch.setattr(scd4x_model, "FRC_MIN_RUN_S", 0.0)
    with sim.world.lock:
        scd.drift_ppm = 80.0
    p = car.ask(a, msg.invoke, CO2, reg.CMD_CO2_FORCE_RECALIBRATION, [1050])
    assert p.ok and p.value == -80, (p.status, p.value)
    n = len(co2)
    cabin(sim, co2=1000)
    assert car.pump(15, lambda: len(co2) > n)
    assert co2[n:] == [1000]  # drift gone
    assert len(events) == 4  # no event storm anywhere
    assert read(car, a, CO2, STATUS) == OK_


# --- faults, a missing sensor, health, Environmental Sensing over BLE ---------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sensor_faults_are_statuses_not_crashes(sim: Simulation, runtime: str) -> None:
    cabin(sim, t=21.5, rh=50.0, co2=700, lux=200)
    cfg = default_config(BOARD, "ambient", "amb", ble=True)

    def scd_missing(acc: Accessory) -> None:
        acc.devices.sensors["scd4x"].fail = True  # not plugged in at boot

    acc, car, a = boot(sim, runtime, config=cfg, before=scd_missing)
    sht, scd, bh = (acc.devices.sensors[k] for k in ("sht4x", "scd4x", "bh1750"))
    acc.wait_for("scd4x: not present", 20)
    assert read(car, a, CO2, STATUS) == NOT_PRESENT
    wait_read(car, a, INFO, HEALTH, lambda v: v == msg.HEALTH_ADVISORY, 5)
    p = car.ask(a, msg.invoke, CO2, reg.CMD_CO2_FORCE_RECALIBRATION, [420])
    assert p.status == msg.INVALID_STATE
    # plugged in later: found by the retries
    mark = len(acc.log)
    scd.fail = False

    # the Environmental Sensing service (0x181A) follows the values and their status
    central = sim.ble.central("phone")
    adv = central.scan(lambda x: b"amb" in x.scan_response, timeout=15)
    link = central.connect(adv)
    ess = lambda u, n, signed=False: int.from_bytes(link.read(u), "little", signed=signed)
    assert ess(0x2A6E, 2, True) == read(car, a, TEMP, VALUE) == 2150
    assert ess(0x2A6F, 2) == read(car, a, HUM, VALUE) == 5000
    assert ess(0x2AFB, 3) == 200 * 100

    # the SHT4x stops answering: T and RH fault, values kept, the rest goes on
    mark_sht = len(acc.log)
    sht.fail = True
    acc.wait_for("sht4x: fault (nack)", 10, start=mark_sht)
    assert read(car, a, TEMP, STATUS) == read(car, a, HUM, STATUS) == FAULT
    assert read(car, a, TEMP, VALUE) == 2150 and read(car, a, HUM, VALUE) == 5000
    assert ess(0x2A6E, 2, True) == -32768 and ess(0x2A6F, 2) == 65535  # "unknown"
    wait_read(car, a, INFO, HEALTH, lambda v: v == msg.HEALTH_CAUTION, 5)
    cabin(sim, lux=300)
    wait_read(car, a, LUX, VALUE, lambda v: v == 300)
    cabin(sim, t=25.0)
    car.pump(1.5)
    sht.fail = False
    acc.wait_for("sht4x: ok", 40, start=mark_sht)
    assert near(25.0)(read(car, a, TEMP, VALUE))
    assert ess(0x2A6E, 2, True) == read(car, a, TEMP, VALUE)

    acc.wait_for("scd4x: ok", 40, start=mark)
    assert read(car, a, CO2, VALUE) == 700
    assert ess(0x2B8C, 2) == 700
    wait_read(car, a, INFO, HEALTH, lambda v: v == msg.HEALTH_NOMINAL, 5)

    # everything will fail: the SCD4x and the BH1750 first (the SCD4x notices at its next
    # sample, within 5 s), meanwhile the SHT4x gets corrupt CRCs: one is retried unseen,
    # three in a row are a fault that clears itself
    all_mark = len(acc.log)
    scd.fail = bh.fail = True
    assert write(car, a, TEMP, PERIOD, 100) == msg.OK
    mark = len(acc.log)
    with sim.world.lock:
        sht.corrupt_crc_next(1)
    n = sht.reads
    assert car.pump(10, lambda: sht.reads >= n + 5)
    assert not any("sht4x" in line for line in acc.log[mark:]), acc.log[mark:]
    with sim.world.lock:
        sht.corrupt_crc_next(3)
    acc.wait_for("sht4x: fault (crc)", 10, start=mark)
    acc.wait_for("sht4x: ok", 20, start=mark)

    # now all of them: health warning, the accessory still answers; then all recover
    mark = len(acc.log)
    sht.fail = True
    for name in ("sht4x", "scd4x", "bh1750"):
        acc.wait_for(f"{name}: fault (nack)", 20, start=all_mark)
    assert [read(car, a, s, STATUS) for s in (TEMP, HUM, CO2, LUX)] == [FAULT] * 4
    wait_read(car, a, INFO, HEALTH, lambda v: v == msg.HEALTH_WARNING, 5)
    assert read(car, a, CO2, VALUE) == 700 and read(car, a, LUX, VALUE) == 300
    info = next(x for x in car.client.accessories.values() if x.peer == a)
    car.pump(5, lambda: info.health == msg.HEALTH_WARNING)
    assert info.online and info.health == msg.HEALTH_WARNING  # the CAN heartbeat says so too
    mark = len(acc.log)
    sht.fail = scd.fail = bh.fail = False
    for name in ("sht4x", "scd4x", "bh1750"):
        acc.wait_for(f"{name}: ok", 60, start=mark)
    assert [read(car, a, s, STATUS) for s in (TEMP, HUM, CO2, LUX)] == [OK_] * 4
    wait_read(car, a, INFO, HEALTH, lambda v: v == msg.HEALTH_NOMINAL, 5)
    assert acc.process.boots == 1 and not any("crash" in line for line in acc.log)
    link.disconnect()
