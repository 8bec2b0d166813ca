"""Chip and device models of the simulated world against their datasheets' rules, and the
firmware drivers against the models (in one process; the world runs them across one)."""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cabinlink_tools.sim.cabin import LIGHT, Cabin, absolute_humidity, relative_humidity, rh_at
from cabinlink_tools.sim.chips import (IN, OPEN_DRAIN, OUT, PULL_DOWN, PULL_UP, Bh1750, Button,
                                       ChargerStatus, HBridgeMotor, I2CBus, Ntc,
                                       QuadratureEncoder, Scd4x, Servo, Sht4x, SimPin, Ws2812)
from cabinlink_tools.sim.chips import bh1750 as bh
from cabinlink_tools.sim.chips import scd4x as scd
from cabinlink_tools.sim.chips.sensirion import crc8, pack_words, unpack_words
from cabinlink_tools.sim.vehicle import Vehicle

ROOT = Path(__file__).resolve().parent.parent


class StepClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


class Air:
    """A fixed environment."""

    def __init__(self, temperature: float = 21.5, humidity: float = 40.0, co2: float = 800.0,
                 lux: float = 500.0) -> None:
        self.temperature, self.humidity, self.co2, self.lux = temperature, humidity, co2, lux


def words(data: bytes | None) -> list[int]:
    assert data is not None, "NACK"
    w = unpack_words(data)
    assert w is not None, f"bad CRC in {data.hex()}"
    return w


def cmd(code: int, *args: int) -> bytes:
    return code.to_bytes(2, "big") + pack_words(*args)


# --- Sensirion CRC ------------------------------------------------------------------------
def test_sensirion_crc_datasheet_values() -> None:
    assert crc8(b"\xbe\xef") == 0x92
    assert crc8(b"\x00\x00") == 0x81
    assert pack_words(0xBEEF, 0) == bytes.fromhex("beef92 000081")
    assert unpack_words(bytes.fromhex("beef92")) == [0xBEEF]
    assert unpack_words(bytes.fromhex("beef93")) is None
    assert unpack_words(bytes.fromhex("beef")) is None


# --- the bus --------------------------------------------------------------------------------
def test_bus_routes_by_address_and_nacks_the_empty_ones() -> None:
    clock = StepClock()
    bus = I2CBus(Sht4x(env=Air(), clock=clock), Scd4x(env=Air(), clock=clock),
                 Bh1750(0x5C, env=Air(), clock=clock))
    assert bus.scan() == [0x44, 0x5C, 0x62]
    assert not bus.write(0x45, b"\xfd")
    assert bus.read(0x45, 6) is None
    with pytest.raises(ValueError):
        bus.attach(Sht4x(env=Air(), clock=clock))
    bus.targets[0x44].fail = True
    assert bus.scan() == [0x5C, 0x62]


# --- SHT4x ------------------------------------------------------------------------------------
def test_sht4x_reply_bytes_and_conversion_timing() -> None:
    clock = StepClock()
    s = Sht4x(env=Air(21.5, 40.0), clock=clock)
    assert s.i2c_write(b"\xfd")
    assert s.i2c_read(6) is None  # conversion running: NACK
    assert not s.i2c_write(b"")  # and it does not even ACK its address
    clock.advance(0.0082)
    assert s.i2c_read(6) is None
    clock.advance(0.0002)
    data = s.i2c_read(6)
    assert data == bytes.fromhex("61478a 5e353b")  # S_T 24903, S_RH 24117 with CRCs
    t, rh = words(data)
    assert -45 + 175 * t / 65535 == pytest.approx(21.5, abs=0.002)
    assert -6 + 125 * rh / 65535 == pytest.approx(40.0, abs=0.002)
    assert s.i2c_read(6) is None  # read once


@pytest.mark.parametrize("code,duration", [(0xFD, 0.0083), (0xF6, 0.0045), (0xE0, 0.0017)])
def test_sht4x_precision_durations(code: int, duration: float) -> None:
    clock = StepClock()
    s = Sht4x(env=Air(), clock=clock)
    assert s.i2c_write(bytes([code]))
    clock.advance(duration * 0.98)
    assert s.i2c_read(6) is None
    clock.advance(duration * 0.03)
    assert s.i2c_read(6) is not None


def test_sht4x_unknown_commands_and_clamping() -> None:
    clock = StepClock()
    s = Sht4x(env=Air(200.0, -20.0), clock=clock)
    assert not s.i2c_write(b"\x42")
    assert not s.i2c_write(b"\xfd\xfd")
    assert s.i2c_read(6) is None  # nothing to read
    assert s.i2c_write(b"\xe0")
    clock.advance(0.01)
    assert words(s.i2c_read(6)) == [0xFFFF, 0]


def test_sht4x_heater_serial_reset_and_hooks() -> None:
    clock = StepClock()
    s = Sht4x(env=Air(20.0, 50.0), clock=clock, serial=0x12345678)
    assert s.i2c_write(b"\x39")  # 200 mW, 1 s
    clock.advance(1.0)
    assert s.i2c_read(6) is None
    clock.advance(0.01)
    t, rh = words(s.i2c_read(6))
    t_c, rh_p = -45 + 175 * t / 65535, -6 + 125 * rh / 65535
    assert t_c > 25 and rh_p < 40  # warmer air, same water, lower %RH
    assert rh_p == pytest.approx(rh_at(20.0, 50.0, t_c), abs=0.05)
    assert s.i2c_write(b"\x89")
    assert words(s.i2c_read(6)) == [0x1234, 0x5678]
    assert s.i2c_write(b"\x94")
    assert not s.i2c_write(b"\xfd")  # 1 ms reset
    clock.advance(0.001)
    assert s.i2c_write(b"\xfd")
    clock.advance(0.01)
    s.corrupt_crc_next()
    assert unpack_words(s.i2c_read(6) or b"") is None
    s.fail = True
    assert not s.i2c_write(b"\xfd") and s.i2c_read(6) is None


def test_sht4x_noise_is_seeded() -> None:
    def sample(seed: int) -> list[int]:
        clock = StepClock()
        s = Sht4x(env=Air(), clock=clock, noise=True, seed=seed)
        s.i2c_write(b"\xfd")
        clock.advance(0.01)
        return words(s.i2c_read(6))
    assert sample(1) == sample(1) != sample(2)


# --- SCD4x --------------------------------------------------------------------------------------
def _scd(**kw: object) -> tuple[Scd4x, StepClock, Air]:
    clock = StepClock()
    air = Air(22.0, 45.0, 1234.0)
    return Scd4x(env=air, clock=clock, **kw), clock, air  # type: ignore[arg-type]


def _query(s: Scd4x, clock: StepClock, code: int, n: int, *args: int,
           wait: float = 0.001) -> list[int]:
    assert s.i2c_write(cmd(code, *args)), f"{code:#06x} NACKed"
    clock.advance(wait)
    return words(s.i2c_read(3 * n))


def test_scd4x_periodic_data_ready_every_5_s() -> None:
    s, clock, air = _scd()
    assert s.i2c_write(cmd(scd.START_PERIODIC))
    assert _query(s, clock, scd.GET_DATA_READY, 1)[0] & 0x07FF == 0
    clock.advance(4.9)
    assert _query(s, clock, scd.GET_DATA_READY, 1)[0] & 0x07FF == 0
    clock.advance(0.1)
    ready = _query(s, clock, scd.GET_DATA_READY, 1)[0]
    assert ready & 0x07FF and ready == 0x8006
    co2, t, rh = _query(s, clock, scd.READ_MEASUREMENT, 3)
    assert co2 == 1234
    assert -45 + 175 * t / 65536 == pytest.approx(22.0, abs=0.01)  # self-heating 4 - offset 4
    assert 100 * rh / 65536 == pytest.approx(45.0, abs=0.01)
    # reading emptied the buffer: not ready, and a second read NACKs at the read
    assert _query(s, clock, scd.GET_DATA_READY, 1)[0] & 0x07FF == 0
    assert s.i2c_write(cmd(scd.READ_MEASUREMENT))
    clock.advance(0.001)
    assert s.i2c_read(9) is None
    air.co2 = 2000.0
    clock.advance(5.0)
    assert _query(s, clock, scd.READ_MEASUREMENT, 3)[0] == 2000


def test_scd4x_periodic_mode_accepts_only_four_commands() -> None:
    s, clock, _ = _scd()
    assert s.i2c_write(cmd(scd.START_PERIODIC))
    clock.advance(0.001)
    for code, args in ((scd.SET_ALTITUDE, (100,)), (scd.GET_SERIAL, ()), (scd.START_PERIODIC, ()),
                       (scd.PERSIST_SETTINGS, ()), (scd.GET_TEMPERATURE_OFFSET, ()),
                       (scd.SINGLE_SHOT, ())):
        assert not s.i2c_write(cmd(code, *args)), hex(code)
    assert s.i2c_write(cmd(scd.AMBIENT_PRESSURE, 987))
    clock.advance(0.001)
    assert _query(s, clock, scd.AMBIENT_PRESSURE, 1) == [987]
    assert s.i2c_write(cmd(scd.STOP_PERIODIC))
    clock.advance(0.499)
    assert not s.i2c_write(cmd(scd.GET_ALTITUDE))  # still stopping
    clock.advance(0.001)
    assert _query(s, clock, scd.GET_ALTITUDE, 1) == [0]


def test_scd4x_execution_time_and_argument_crc() -> None:
    s, clock, _ = _scd()
    assert s.i2c_write(cmd(scd.GET_SERIAL))
    assert s.i2c_read(9) is None  # 1 ms execution time
    clock.advance(0.001)
    assert words(s.i2c_read(9)) == [0x0BEE, 0xC0DE, 0x0042]
    bad = bytearray(cmd(scd.SET_ALTITUDE, 500))
    bad[-1] ^= 1
    assert not s.i2c_write(bytes(bad))
    assert not s.i2c_write(cmd(scd.SET_ALTITUDE))  # missing argument
    assert not s.i2c_write(cmd(scd.GET_ALTITUDE, 1))  # extra argument
    assert not s.i2c_write(b"\x36")  # half a command
    assert not s.i2c_write(cmd(0x1234))  # unknown
    assert s.i2c_write(cmd(scd.SET_ALTITUDE, 500))
    clock.advance(0.001)
    assert _query(s, clock, scd.GET_ALTITUDE, 1) == [500]
    assert not s.i2c_write(cmd(scd.SET_ASC, 2))
    s.corrupt_crc_next()
    assert s.i2c_write(cmd(scd.GET_ASC))
    clock.advance(0.001)
    assert unpack_words(s.i2c_read(3) or b"") is None


def test_scd4x_temperature_offset_settings_persist_and_reset() -> None:
    s, clock, _ = _scd()
    assert _query(s, clock, scd.GET_TEMPERATURE_OFFSET, 1) == [1498]  # 4 °C default
    assert s.i2c_write(cmd(scd.SET_TEMPERATURE_OFFSET, 0x07E6))  # 5.4 °C
    clock.advance(0.001)
    assert s.i2c_write(cmd(scd.SINGLE_SHOT_RHT))
    clock.advance(0.05)
    co2, t, _ = _query(s, clock, scd.READ_MEASUREMENT, 3)
    assert co2 == 0
    assert -45 + 175 * t / 65536 == pytest.approx(22.0 + 4.0 - 5.4, abs=0.01)
    s.power_cycle()
    assert _query(s, clock, scd.GET_TEMPERATURE_OFFSET, 1) == [1498]  # not persisted
    assert s.i2c_write(cmd(scd.SET_TEMPERATURE_OFFSET, 0x07E6))
    clock.advance(0.001)
    assert s.i2c_write(cmd(scd.PERSIST_SETTINGS))
    clock.advance(0.7)
    assert not s.i2c_write(b"")
    clock.advance(0.1)
    s.power_cycle()
    assert _query(s, clock, scd.GET_TEMPERATURE_OFFSET, 1) == [0x07E6]
    assert s.i2c_write(cmd(scd.SET_TEMPERATURE_OFFSET, 0))
    clock.advance(0.001)
    assert s.i2c_write(cmd(scd.REINIT))
    clock.advance(0.03)
    assert _query(s, clock, scd.GET_TEMPERATURE_OFFSET, 1) == [0x07E6]
    assert s.i2c_write(cmd(scd.FACTORY_RESET))
    clock.advance(1.2)
    assert _query(s, clock, scd.GET_TEMPERATURE_OFFSET, 1) == [1498]


def test_scd4x_forced_recalibration_rule() -> None:
    s, clock, air = _scd()
    s.drift_ppm = 60.0
    air.co2 = 420.0
    assert _query(s, clock, scd.FORCED_RECALIBRATION, 1, 420, wait=0.4) == [0xFFFF]  # never ran
    assert s.i2c_write(cmd(scd.START_PERIODIC))
    clock.advance(179.0)
    assert s.i2c_write(cmd(scd.STOP_PERIODIC))
    clock.advance(0.5)
    assert _query(s, clock, scd.FORCED_RECALIBRATION, 1, 420, wait=0.4) == [0xFFFF]  # too short
    assert s.i2c_write(cmd(scd.START_PERIODIC))
    clock.advance(180.0)
    assert s.i2c_write(cmd(scd.STOP_PERIODIC))
    clock.advance(0.5)
    assert s.i2c_write(cmd(scd.FORCED_RECALIBRATION, 420))
    clock.advance(0.399)
    assert s.i2c_read(3) is None  # 400 ms
    clock.advance(0.001)
    assert words(s.i2c_read(3)) == [0x8000 - 60]
    assert s.i2c_write(cmd(scd.SINGLE_SHOT))
    clock.advance(4.99)
    assert not s.data_ready
    clock.advance(0.01)
    assert _query(s, clock, scd.READ_MEASUREMENT, 3)[0] == 420


def test_scd4x_low_power_single_shot_variant_self_test() -> None:
    s, clock, _ = _scd()
    assert s.i2c_write(cmd(scd.START_LOW_POWER))
    clock.advance(29.9)
    assert not s.data_ready
    clock.advance(0.1)
    assert s.data_ready
    assert s.i2c_write(cmd(scd.STOP_PERIODIC))
    clock.advance(0.5)
    assert s.i2c_write(cmd(scd.SELF_TEST))
    clock.advance(9.9)
    assert s.i2c_read(3) is None
    clock.advance(0.1)
    assert words(s.i2c_read(3)) == [0]
    s40, clock, _ = _scd(variant="scd40")
    assert not s40.i2c_write(cmd(scd.SINGLE_SHOT))
    assert s40.i2c_write(cmd(scd.START_LOW_POWER))


# --- BH1750 --------------------------------------------------------------------------------------
def test_bh1750_one_time_h_timing_and_counts() -> None:
    clock = StepClock()
    air = Air(lux=28067.0)
    b = Bh1750(env=air, clock=clock)
    assert b.i2c_read(2) == b"\x00\x00"
    assert b.i2c_write(bytes([bh.POWER_ON, bh.ONCE_H]))
    clock.advance(0.179)
    assert b.i2c_read(2) == b"\x00\x00"  # strict: the maximum 180 ms
    clock.advance(0.001)
    raw = int.from_bytes(b.i2c_read(2) or b"", "big")
    assert raw == int(28067 * 1.2) == 33680  # the datasheet's 0x8390
    assert raw / 1.2 == pytest.approx(28067, abs=1)
    assert not b.powered and b.mode is None  # one-time: powered down
    air.lux = 10.0
    clock.advance(1.0)
    assert int.from_bytes(b.i2c_read(2) or b"", "big") == raw  # no new measurement


def test_bh1750_continuous_modes_mtreg_and_reset() -> None:
    clock = StepClock()
    air = Air(lux=1000.0)
    b = Bh1750(env=air, clock=clock, strict=False)
    assert b.i2c_write(bytes([0x40 | 138 >> 5, 0x60 | 138 & 0x1F]))
    assert b.mtreg == 138
    assert b.i2c_write(bytes([bh.CONT_H2]))
    clock.advance(0.120 * 2 - 0.001)
    assert b.i2c_read(2) == b"\x00\x00"
    clock.advance(0.001)
    raw = int.from_bytes(b.i2c_read(2) or b"", "big")
    assert raw / 1.2 * 69 / 138 / 2 == pytest.approx(1000, abs=0.5)
    air.lux = 500.0
    clock.advance(0.24)
    raw = int.from_bytes(b.i2c_read(2) or b"", "big")
    assert raw / 1.2 * 69 / 138 / 2 == pytest.approx(500, abs=0.5)
    assert b.i2c_write(bytes([bh.RESET]))
    assert b.i2c_read(2) == b"\x00\x00"
    assert b.i2c_write(bytes([0x40 | 69 >> 5, 0x60 | 69 & 0x1F, bh.CONT_L]))
    clock.advance(0.016)
    raw = int.from_bytes(b.i2c_read(2) or b"", "big")
    assert raw % 4 == 0 and raw == 600  # 4 lx steps
    assert b.i2c_write(bytes([bh.POWER_DOWN]))
    assert b.i2c_write(bytes([bh.RESET]))  # ignored while powered down
    assert int.from_bytes(b.i2c_read(2) or b"", "big") == 600
    assert not b.i2c_write(b"\x12")
    air.lux = 1e6
    assert b.i2c_write(bytes([bh.ONCE_H]))
    clock.advance(0.2)
    assert b.i2c_read(2) == b"\xff\xff"  # saturates


# --- pins ------------------------------------------------------------------------------------------
def test_simpin_resolution_and_listeners() -> None:
    p = SimPin(4)
    seen: list[tuple[int, int]] = []
    p.listeners.append(lambda pin, old, new: seen.append((old, new)))
    assert p.level() == 0
    p.configure(IN, PULL_UP)
    assert p.level() == 1
    p.drive = 0
    assert p.level() == 0
    p.drive = None
    p.pull = PULL_DOWN
    assert p.level() == 0
    p.set_output(1)
    p.mode = OUT
    assert p.level() == 1
    p.drive = 0
    assert p.level() == 1 and p.contention
    p.drive = None
    p.configure(OPEN_DRAIN, PULL_UP)
    p.set_output(0)
    assert p.level() == 0
    p.set_output(1)
    assert p.level() == 1
    assert seen == [(0, 1), (1, 0), (0, 1), (1, 0), (0, 1), (1, 0), (0, 1)]
    with pytest.raises(ValueError):
        p.mode = 5


# --- GPIO devices ------------------------------------------------------------------------------------
def test_button_press_release_hold_and_bounce() -> None:
    pin = SimPin(0)
    pin.configure(IN, PULL_UP)
    edges: list[int] = []
    pin.listeners.append(lambda p, o, n: edges.append(n))
    slept: list[float] = []
    b = Button(pin, sleep=slept.append)
    b.press()
    assert pin.level() == 0 and b.pressed
    b.release()
    assert pin.level() == 1
    b.hold(2.5)
    assert slept == [2.5] and edges == [0, 1, 0, 1]

    def bounces(seed: int) -> list[int]:
        p = SimPin(1)
        p.configure(IN, PULL_UP)
        seen: list[int] = []
        p.listeners.append(lambda _p, o, n: seen.append(n))
        bb = Button(p, bounce=3, seed=seed, bounce_interval=0.0005, sleep=lambda s: None)
        bb.press()
        assert p.level() == 0
        bb.release()
        assert p.level() == 1
        return seen
    a = bounces(7)
    assert a == bounces(7)
    assert len(a) > 2 and len(a) % 2 == 0
    assert all(x != y for x, y in zip(a, a[1:]))  # every entry is a real edge
    # without a pull-up the released contact floats (reads 0 here); a board resistor fixes it
    q = SimPin(2)
    q.mode = IN
    Button(q)
    assert q.level() == 0
    Button(q, external_pull=True)
    assert q.level() == 1


def _decode(states: list[tuple[int, int]], start: tuple[int, int]) -> int:
    # A plain quadrature decoder: +1 per step with A leading.
    order = [(1, 1), (0, 1), (0, 0), (1, 0)]
    pos, prev = 0, order.index(start)
    for ab in states:
        i = order.index(ab)
        d = (i - prev) % 4
        assert d in (1, 3), f"invalid transition {order[prev]} -> {ab}"
        pos += 1 if d == 1 else -1
        prev = i
    return pos


def test_encoder_gray_sequence_and_direction() -> None:
    a, b = SimPin(32), SimPin(33)
    for p in (a, b):
        p.configure(IN, PULL_UP)
    seen: list[tuple[int, int]] = []

    def on_edge(_p: SimPin, _o: int, _n: int) -> None:
        seen.append((a.level(), b.level()))
    a.listeners.append(on_edge)
    b.listeners.append(on_edge)
    slept: list[float] = []
    enc = QuadratureEncoder(a, b, sleep=slept.append, step_interval=0.001)
    assert (a.level(), b.level()) == (1, 1)
    assert enc.sequence(1) == [(0, 1), (0, 0), (1, 0), (1, 1)]  # A falls first
    enc.turn(2)
    assert seen[:4] == [(0, 1), (0, 0), (1, 0), (1, 1)]
    assert _decode(seen, (1, 1)) == 8 and enc.detents == 2
    assert len(slept) == 7 and set(slept) == {0.001}
    seen.clear()
    enc.turn(-3)
    assert seen[:2] == [(1, 0), (0, 0)]  # B falls first
    assert _decode(seen, (1, 1)) == -12 and enc.detents == -1
    half = QuadratureEncoder(SimPin(1), SimPin(2), detent_steps=2, external_pull=True,
                             sleep=lambda s: None)
    assert half.sequence(1) == [(0, 1), (0, 0)]
    with pytest.raises(ValueError):
        QuadratureEncoder(SimPin(3), SimPin(4), detent_steps=3)


def test_servo_angles() -> None:
    p = SimPin(13)
    s = Servo(p)
    assert s.angle is None
    for us, deg in ((500, 0), (1500, 90), (2500, 180), (300, 0), (2700, 180)):
        p.pwm_freq, p.pwm_duty_u16 = 50, round(us / 20000 * 65535)
        assert s.angle == pytest.approx(deg, abs=0.1)
    p.pwm_freq, p.pwm_duty_u16 = 5000, 32768
    assert s.angle is None
    p.pwm_freq, p.pwm_duty_u16 = 50, 0
    assert s.angle is None


def _motor(**kw: object) -> tuple[HBridgeMotor, StepClock, SimPin, SimPin, SimPin, SimPin]:
    clock = StepClock()
    a, b, adc, lim = SimPin(25), SimPin(26), SimPin(34), SimPin(35)
    lim.configure(IN, PULL_UP)
    for p in (a, b):
        p.configure(OUT, None)
    m = HBridgeMotor(a, b, adc, lim, clock, **kw)  # type: ignore[arg-type]
    return m, clock, a, b, adc, lim


def _pwm(pin: SimPin, duty: float | None) -> None:
    pin.pwm_freq = 20000 if duty is not None else 0
    pin.pwm_duty_u16 = None if duty is None else round(duty * 65535)
    for fn in list(pin.listeners):  # as the world announces a duty change
        fn(pin, pin.level(), pin.level())


def test_motor_closes_meets_phone_and_stalls() -> None:
    m, clock, a, b, adc, lim = _motor(travel_time=2.0, phone_at=0.5, compliance=0.05)
    assert lim.level() == 0 and m.position == 0  # limit switch closed at fully open
    assert adc.adc_volts is not None and adc.adc_volts() == 0
    _pwm(a, 1.0)
    clock.advance(0.5)
    assert m.position == pytest.approx(0.25)
    assert lim.level() == 1
    assert m.current == pytest.approx(0.12)
    clock.advance(0.5)  # 0.5: touches the phone
    clock.advance(0.05)  # squeezing, half the compliance
    assert m.position == pytest.approx(0.525)
    assert 0.12 < m.current < 1.2
    assert m.current == pytest.approx(0.12 + (1.2 - 0.12) * 0.5)
    clock.advance(1.0)
    assert m.stalled and m.position == pytest.approx(0.55)
    assert m.current == pytest.approx(1.2)
    assert adc.adc_volts() == pytest.approx(0.6)  # 0.5 V/A
    _pwm(a, 0.5)
    assert m.current == pytest.approx(0.6, rel=1e-3)  # stall current scales with the duty
    _pwm(a, None)  # PWM off, pin low: brake
    assert m.current == 0 and not m.stalled


def test_motor_opens_to_the_limit_switch_and_stall_hook() -> None:
    m, clock, a, b, adc, lim = _motor(phone_at=None, position=0.8)
    edges: list[int] = []
    lim.listeners.append(lambda p, o, n: edges.append(n))
    assert lim.level() == 1
    b.set_output(1)  # plain GPIO high on IN_B: full speed open
    assert m.drive == -1.0
    clock.advance(1.0)
    m.advance()
    assert m.position == pytest.approx(0.3)
    clock.advance(1.0)
    m.advance()
    assert m.position == 0 and lim.level() == 0 and edges == [0]
    assert m.stalled and m.current == pytest.approx(1.2)
    b.set_output(0)
    m.stall_at(0.2)
    _pwm(a, 1.0)
    clock.advance(2.0)
    assert m.position == pytest.approx(0.2) and m.stalled
    m.stall_at(None)
    clock.advance(2.0)
    assert m.position == pytest.approx(1.0)  # no phone: fully closed, stalls there
    assert m.stalled


def test_ws2812_charger_ntc() -> None:
    p = SimPin(5)
    leds = Ws2812(p, 3)
    leds.bitstream(bytes([10, 20, 30, 0, 255, 0]))  # GRB GRB
    assert leds.pixels == [(20, 10, 30), (255, 0, 0), (0, 0, 0)]
    leds(bytes(12))
    assert leds.pixels == [(0, 0, 0)] * 3 and leds.overflow == 3 and leds.frames == 2

    st = SimPin(27)
    st.configure(IN, PULL_UP)
    ch = ChargerStatus(st)
    assert st.level() == 1
    ch.charging = True
    assert st.level() == 0

    adc = SimPin(36)
    ntc = Ntc(adc)
    assert adc.adc_volts is not None
    assert adc.adc_volts() == pytest.approx(1.65)
    ntc.temperature_c = 60.0
    v = adc.adc_volts()
    assert v < 1.65 and ntc.temperature_at(v) == pytest.approx(60.0)
    ntc.source = lambda: -10.0
    assert ntc.temperature_at(adc.adc_volts()) == pytest.approx(-10.0)


# --- cabin and vehicle --------------------------------------------------------------------------------
def test_cabin_co2_rises_with_occupants_and_falls_with_fresh_air() -> None:
    c = Cabin(co2=420.0, occupants=2)
    c.step(60.0)
    rise = c.co2 - 420.0
    assert 180 < rise < 215  # ≈ 104 ppm/min per person (0.0052 L/s into 3 m³)
    c.step(3600.0)
    assert c.co2 > 3000  # recirculation: heads for ≈ +8400 ppm with two people
    c.occupants = 0
    c.fresh_air = True
    start = c.co2
    c.step(60.0)  # λ = 60/h: one time constant
    assert c.co2 - 420 == pytest.approx((start - 420) * math.exp(-1), rel=1e-6)
    c.step(600.0)
    assert c.co2 == pytest.approx(420, abs=1)


def test_cabin_steps_are_exact_and_lazy_clock() -> None:
    one, many = Cabin(occupants=3), Cabin(occupants=3)
    one.step(600.0)
    for _ in range(600):
        many.step(1.0)
    assert one.co2 == pytest.approx(many.co2, rel=1e-9)
    assert one.humidity == pytest.approx(many.humidity, rel=1e-9)
    clock = StepClock()
    lazy = Cabin(clock, occupants=3)
    clock.advance(600.0)
    assert lazy.co2 == pytest.approx(one.co2, rel=1e-9)
    lazy.set_co2(5000)
    assert lazy.co2 == 5000


def test_cabin_humidity_temperature_light() -> None:
    assert relative_humidity(22.0, absolute_humidity(22.0, 45.0)) == pytest.approx(45.0)
    assert absolute_humidity(20.0, 100.0) == pytest.approx(17.3, abs=0.1)  # textbook value
    c = Cabin(humidity=45.0, occupants=1)
    c.step(600.0)
    rh = c.humidity
    assert 52 < rh < 60  # breathing into a closed cabin: ≈ +2.2 g/m³ in 10 min
    c.set_temperature(30.0)
    assert c.humidity < rh * 0.7  # same water, warmer air
    c.occupants = 4
    c.step(3600.0)
    assert c.humidity == pytest.approx(100.0)  # saturated: the windows fog
    c.hvac_setpoint = None
    c.step(6000.0)
    assert c.temperature == pytest.approx(15.0, abs=0.1)  # outside temperature
    c.set_light("tunnel")
    assert c.lux == LIGHT["tunnel"]
    c.set_light(3.5)
    assert c.lux == 3.5
    with pytest.raises(ValueError):
        c.set_light("eclipse")
    with pytest.raises(ValueError):
        c.occupants = -1


def test_vehicle() -> None:
    v = Vehicle()
    seen: list[tuple[str, object]] = []
    v.listeners.append(lambda k, x: seen.append((k, x)))
    assert not v.moving and not v.ignition
    v.set_ignition(True)
    v.set_speed(0.5)
    assert not v.moving
    v.set_speed(50)
    assert v.moving and v.speed_kmh == 50
    v.open_door("tailgate")
    assert v.any_door_open
    v.close_door("tailgate")
    v.set_speed(50)  # no change, no event
    assert seen == [("ignition", True), ("speed_kmh", 0.5), ("speed_kmh", 50.0),
                    ("door.tailgate", True), ("door.tailgate", False)]
    with pytest.raises(ValueError):
        v.open_door("sunroof")
    with pytest.raises(ValueError):
        v.set_speed(-1)


# --- the firmware drivers against the models --------------------------------------------------------
class _ModelI2C:
    """machine.I2C over an I2CBus: a NACK raises OSError(19) as on the ESP32."""

    def __init__(self, bus: I2CBus) -> None:
        self.bus = bus

    def writeto(self, addr: int, buf: bytes, stop: bool = True) -> int:
        if not self.bus.write(addr, bytes(buf)):
            raise OSError(19, "ENODEV")
        return len(buf) + 1

    def readfrom_into(self, addr: int, buf: bytearray) -> None:
        data = self.bus.read(addr, len(buf))
        if data is None:
            raise OSError(19, "ENODEV")
        buf[:] = data


class _Time:
    """time.ticks_ms / sleep_ms driven by the same StepClock as the models."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def ticks_ms(self) -> int:
        return round(self.clock.t * 1000)

    def ticks_add(self, t: int, d: int) -> int:
        return t + d

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b

    def sleep_ms(self, ms: int) -> None:
        self.clock.advance(ms / 1000)


@pytest.fixture
def drivers() -> Iterator[tuple[StepClock, Air, _ModelI2C, object, object, object]]:
    sys.path.insert(0, str(ROOT / "firmware"))
    from drivers import bh1750, scd4x, sensirion, sht4x
    clock = StepClock()
    air = Air(21.5, 40.0, 987.0, 321.0)
    bus = I2CBus(Sht4x(env=air, clock=clock), Scd4x(env=air, clock=clock),
                 Bh1750(env=air, clock=clock))
    saved = [(m, m.time) for m in (sht4x, scd4x, bh1750, sensirion)]
    for m, _ in saved:
        m.time = _Time(clock)
    try:
        yield clock, air, _ModelI2C(bus), sht4x, scd4x, bh1750
    finally:
        for m, t in saved:
            m.time = t
        sys.path.remove(str(ROOT / "firmware"))


def test_drivers_against_models(drivers) -> None:  # type: ignore[no-untyped-def]
    clock, air, i2c, sht4x, scd4x, bh1750 = drivers
    from drivers.sensirion import SensorError
    s = sht4x.SHT4x(i2c)
    assert s.measure() == (2150, 4000)
    for mode in (sht4x.MEDIUM, sht4x.LOW, sht4x.HEAT_20MW_100MS):
        t, rh = s.measure(mode)
        assert 2149 <= t <= 2300 and 3000 < rh <= 4001
    assert s.serial() == 0x0F3A5C21
    s.start()
    with pytest.raises(OSError):
        i2c.readfrom_into(0x44, bytearray(6))  # the model refuses an early read...
    assert s.read() == (2150, 4000)  # ...the driver waits instead

    c = scd4x.SCD4x(i2c)
    assert c.temperature_offset() == 400
    c.altitude(300)
    assert c.altitude() == 300
    assert c.start_periodic() == 5000
    with pytest.raises(SensorError):
        c.altitude(100)  # refused while periodic
    assert not c.ready()
    assert c.measure() == (987, 2150, 4000)
    c.ambient_pressure(1000)
    assert c.stop() == 500
    with pytest.raises(SensorError) as e:
        c.forced_recalibration(400)
    assert e.value.args[0] == "frc failed"
    assert c.serial() == 0x0BEEC0DE0042
    assert c.self_test()
    c.single_shot()
    assert c.read() == (987, 2150, 4000)

    b = bh1750.BH1750(i2c)
    assert b.measure() == 321
    b.set_mtreg(254)
    assert b.measure(bh1750.ONCE_H2) == pytest.approx(321, abs=1)
    b.start(bh1750.CONT_L)
    assert abs(b.read() - 321) <= 4
