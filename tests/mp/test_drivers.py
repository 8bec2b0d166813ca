# The sensor drivers (firmware/drivers) against hand-made datasheet byte sequences.
# Dual runtime: pytest on CPython and tests/mp/run.py on the MicroPython unix port.
import sys

if "firmware" not in sys.path:
    sys.path.append("firmware")

import time as _time

from mpcompat import raises, unhex
from drivers import bh1750, scd4x, sensirion, sht4x
from drivers.sensirion import SensorError

_DRIVERS = (sht4x, scd4x, bh1750, sensirion)  # sensirion.Busy keeps the busy time


class FakeTime:
    # time.ticks_ms / ticks_add / ticks_diff / sleep_ms on a counter that moves
    # only when the driver sleeps.
    def __init__(self):
        self.now = 1000
        self.slept = []

    def ticks_ms(self):
        return self.now

    def ticks_add(self, t, d):
        return t + d

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.slept.append(ms)
        self.now += ms


class FakeI2C:
    # machine.I2C replaying a script of steps (op, addr, data, min_ms):
    # "w" expects exactly this write, "r" answers a read of len(data) bytes,
    # "W" / "R" NACK the write / read with OSError(19). min_ms: the step must
    # come at least that long (fake time) after the previous one.
    def __init__(self, clock, script):
        self.clock = clock
        self.script = list(script)
        self.last = clock.now

    def _step(self, op, addr):
        assert self.script, "unexpected %s to %#x" % (op, addr)
        step = self.script.pop(0)
        assert step[0].lower() == op, "expected %s, got %s" % (step[0], op)
        assert step[1] == addr, "address %#x, expected %#x" % (addr, step[1])
        if len(step) > 3:
            waited = self.clock.now - self.last
            assert waited >= step[3], "%s after %d ms, needs %d" % (op, waited, step[3])
        self.last = self.clock.now
        if step[0] in ("W", "R"):
            raise OSError(19)
        return step[2]

    def writeto(self, addr, buf, stop=True):
        want = self._step("w", addr)
        got = bytes(buf)
        assert got == want, "wrote %r, expected %r" % (got, want)
        return len(got) + 1

    def readfrom_into(self, addr, buf):
        data = self._step("r", addr)
        assert len(buf) == len(data), "read %d bytes, script has %d" % (len(buf), len(data))
        for i in range(len(data)):
            buf[i] = data[i]

    def readfrom(self, addr, n):
        buf = bytearray(n)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def done(self):
        assert not self.script, "steps left: %r" % (self.script,)


def with_fake_time(fn):
    # Gives the test a FakeTime installed in the driver modules, then restores time.
    def run():
        clock = FakeTime()
        for m in _DRIVERS:
            m.time = clock
        try:
            fn(clock)
        finally:
            for m in _DRIVERS:
                m.time = _time
    return run


def _bus(clock, *script):
    return FakeI2C(clock, script)


def w(*hexwords):
    # Words as on the wire: MSB, LSB, CRC each ("0f3a" -> 0f 3a 9d).
    out = b""
    for h in hexwords:
        out += unhex(h) + bytes((sensirion.crc8(unhex(h)),))
    return out


# --- CRC ------------------------------------------------------------------------
def test_crc8_datasheet_values():
    assert sensirion.crc8(unhex("beef")) == 0x92
    assert sensirion.crc8(unhex("0000")) == 0x81
    assert sensirion.crc8(unhex("00bee0ef"), 1) == 0xBC  # offset: the word BE E0
    buf = bytearray(3)
    sensirion.put(buf, 0, 0xBEEF)
    assert bytes(buf) == unhex("beef92")
    sensirion.check(unhex("beef92 000081"), 2)
    assert raises(SensorError, sensirion.check, unhex("beef93"), 1)


def test_sensor_error_is_an_oserror():
    e = SensorError("crc")
    assert isinstance(e, OSError)
    assert e.args[0] == "crc"
    assert sensirion.bus_error(OSError(19)).args[0] == "nack"
    assert sensirion.bus_error(OSError(116)).args[0] == "bus"


# --- SHT4x ------------------------------------------------------------------------
# S_T = 24903 (0x6147) -> 21.499 C; S_RH = 24117 (0x5E35) -> 40.0002 %RH
SHT_21_5_40 = unhex("61478a 5e353b")


@with_fake_time
def test_sht4x_measure_high_precision(clock):
    i2c = _bus(clock, ("w", 0x44, b"\xfd"), ("r", 0x44, SHT_21_5_40, 9))
    s = sht4x.SHT4x(i2c)
    assert s.measure() == (2150, 4000)
    i2c.done()
    assert clock.slept == [10]  # 9 ms, + 1 tick as ticks_ms truncates


@with_fake_time
def test_sht4x_start_then_read_without_blocking(clock):
    i2c = _bus(clock, ("w", 0x45, b"\xe0"), ("r", 0x45, SHT_21_5_40, 2))
    s = sht4x.SHT4x(i2c, 0x45)
    assert s.start(sht4x.LOW) == 2
    clock.now += 3  # the caller awaited it (+ 1 tick: ticks_ms truncates)
    assert s.read() == (2150, 4000)
    assert clock.slept == []
    i2c.done()


@with_fake_time
def test_sht4x_conversion_edges_and_rounding(clock):
    # 0 -> -45.00 C / -6 %RH clamped to 0; 0xFFFF -> 130.00 C / 119 %RH clamped to 100.
    # 0x8000 = 32768: T = 42.5013 -> 4250, RH = 56.5010 -> 5650.
    # 0x6667 = 26215: T = 25.0031 -> 2500; 0x0D1B = 3355 -> RH 0.3994 -> 40 (rounds up)
    cases = ((unhex("000081 000081"), (-4500, 0)),
             (unhex("ffffac ffffac"), (13000, 10000)),
             (unhex("8000a2 8000a2"), (4250, 5650)),
             (unhex("6667a2") + w("0d1b"), (2500, 40)))
    for reply, want in cases:
        i2c = _bus(clock, ("w", 0x44, b"\xfd"), ("r", 0x44, reply))
        assert sht4x.SHT4x(i2c).measure() == want, (reply, want)
        i2c.done()


@with_fake_time
def test_sht4x_bad_crc_raises(clock):
    bad = bytearray(SHT_21_5_40)
    bad[5] ^= 1  # humidity CRC
    i2c = _bus(clock, ("w", 0x44, b"\xfd"), ("r", 0x44, bytes(bad)))
    e = _raised(sht4x.SHT4x(i2c).measure)
    assert isinstance(e, SensorError) and e.args[0] == "crc"


@with_fake_time
def test_sht4x_nack_raises(clock):
    s = sht4x.SHT4x(_bus(clock, ("W", 0x44, b"\xfd")))
    assert _raised(s.measure).args[0] == "nack"
    s = sht4x.SHT4x(_bus(clock, ("w", 0x44, b"\xfd"), ("R", 0x44, b"")))
    assert _raised(s.measure).args[0] == "nack"


@with_fake_time
def test_sht4x_heater_waits_the_pulse_and_early_commands_wait(clock):
    i2c = _bus(clock, ("w", 0x44, b"\x39"), ("r", 0x44, SHT_21_5_40, 1100),
               ("w", 0x44, b"\x15"), ("w", 0x44, b"\xf6", 110), ("r", 0x44, SHT_21_5_40, 5))
    s = sht4x.SHT4x(i2c)
    assert s.measure(sht4x.HEAT_200MW_1S) == (2150, 4000)
    assert s.start(sht4x.HEAT_20MW_100MS) == 110
    s.start(sht4x.MEDIUM)  # before the pulse is over: sleeps the rest first
    s.read()
    i2c.done()
    assert raises(ValueError, s.start, 0x42)


@with_fake_time
def test_sht4x_serial_and_reset(clock):
    i2c = _bus(clock, ("w", 0x44, b"\x89"), ("r", 0x44, w("0f3a", "5c21"), 1),
               ("w", 0x44, b"\x94"), ("w", 0x44, b"\xfd", 1), ("r", 0x44, SHT_21_5_40, 9))
    s = sht4x.SHT4x(i2c)
    assert s.serial() == 0x0F3A5C21
    assert s.reset() == 1
    s.measure()
    i2c.done()


# --- SCD4x ------------------------------------------------------------------------
# Datasheet example: CO2 0x01F4 = 500 ppm, T 0x6667 = 25.00 C, RH 0x5EB9 = 37.00 %RH
SCD_MEAS = unhex("01f433 6667a2 5eb93c")
NOT_READY = unhex("8000a2")
READY = unhex("800604")


@with_fake_time
def test_scd4x_periodic_ready_read(clock):
    i2c = _bus(clock,
               ("w", 0x62, unhex("21b1")),
               ("w", 0x62, unhex("e4b8")), ("r", 0x62, NOT_READY, 1),
               ("w", 0x62, unhex("e4b8")), ("r", 0x62, READY, 1),
               ("w", 0x62, unhex("ec05")), ("r", 0x62, SCD_MEAS, 1))
    s = scd4x.SCD4x(i2c)
    assert s.start_periodic() == 5000
    assert s.periodic
    assert s.ready() is False
    assert s.ready() is True
    assert s.read() == (500, 2500, 3700)
    i2c.done()


@with_fake_time
def test_scd4x_ready_uses_the_low_11_bits(clock):
    # 0x8000 has a bit set but not in 0x07FF: not ready; 0x0001 is ready.
    one = w("0001")
    i2c = _bus(clock, ("w", 0x62, unhex("e4b8")), ("r", 0x62, NOT_READY),
               ("w", 0x62, unhex("e4b8")), ("r", 0x62, one))
    s = scd4x.SCD4x(i2c)
    assert not s.ready()
    assert s.ready()


@with_fake_time
def test_scd4x_blocking_measure_polls(clock):
    i2c = _bus(clock, ("w", 0x62, unhex("21b1")),
               ("w", 0x62, unhex("e4b8")), ("r", 0x62, NOT_READY),
               ("w", 0x62, unhex("e4b8"), 100), ("r", 0x62, READY),
               ("w", 0x62, unhex("ec05")), ("r", 0x62, SCD_MEAS, 1))
    s = scd4x.SCD4x(i2c)
    assert s.measure() == (500, 2500, 3700)
    i2c.done()


@with_fake_time
def test_scd4x_measure_times_out(clock):
    script = [("w", 0x62, unhex("e4b8")), ("r", 0x62, NOT_READY)] * 4
    s = scd4x.SCD4x(FakeI2C(clock, script))
    s.periodic = True
    assert _raised(s.measure, 300).args[0] == "timeout"


@with_fake_time
def test_scd4x_stop_makes_the_next_command_wait(clock):
    i2c = _bus(clock, ("w", 0x62, unhex("3f86")),
               ("w", 0x62, unhex("2318"), 500), ("r", 0x62, w("05da"), 1))
    s = scd4x.SCD4x(i2c)
    s.periodic = True
    assert s.stop() == 500
    assert not s.periodic
    assert s.temperature_offset() == 400  # 0x05DA = 1498 -> 3.9999 C
    i2c.done()


@with_fake_time
def test_scd4x_settings_words(clock):
    # Datasheet example: set_temperature_offset 5.4 C -> 0x07E6, CRC 0x48.
    i2c = _bus(clock, ("w", 0x62, unhex("241d07e648")),
               ("w", 0x62, unhex("2427") + w("0708"), 1),
               ("w", 0x62, unhex("2322")), ("r", 0x62, w("0708")),
               ("w", 0x62, unhex("e000") + w("03db")),
               ("w", 0x62, unhex("2416000081")),
               ("w", 0x62, unhex("2313")), ("r", 0x62, unhex("000081")))
    s = scd4x.SCD4x(i2c)
    s.temperature_offset(540)
    s.altitude(1800)
    assert s.altitude() == 1800
    s.ambient_pressure(987)
    s.asc(False)
    assert s.asc() is False
    i2c.done()
    assert raises(ValueError, s.altitude, 70000)


@with_fake_time
def test_scd4x_forced_recalibration(clock):
    ppm420 = w("01a4")
    i2c = _bus(clock, ("w", 0x62, unhex("362f") + ppm420), ("r", 0x62, w("7fdd"), 400),  # -35
               ("w", 0x62, unhex("362f") + ppm420), ("r", 0x62, unhex("ffffac"), 400))
    s = scd4x.SCD4x(i2c)
    assert s.forced_recalibration(420) == -35
    assert _raised(s.forced_recalibration, 420).args[0] == "frc failed"
    i2c.done()


@with_fake_time
def test_scd4x_single_shot_serial_and_maintenance(clock):
    serial = w("0bee", "c0de", "0042")
    i2c = _bus(clock, ("w", 0x62, unhex("219d")),
               ("w", 0x62, unhex("ec05"), 5000), ("r", 0x62, SCD_MEAS, 1),
               ("w", 0x62, unhex("2196")), ("w", 0x62, unhex("ec05"), 50), ("r", 0x62, SCD_MEAS, 1),
               ("w", 0x62, unhex("3682")), ("r", 0x62, serial, 1),
               ("w", 0x62, unhex("3615")), ("w", 0x62, unhex("3646"), 800),
               ("w", 0x62, unhex("3632"), 30),
               ("w", 0x62, unhex("3639"), 1200), ("r", 0x62, unhex("000081"), 10000))
    s = scd4x.SCD4x(i2c)
    assert s.single_shot() == 5000
    assert s.read() == (500, 2500, 3700)
    assert s.single_shot(rht_only=True) == 50
    s.read()
    assert s.serial() == 0x0BEEC0DE0042
    assert s.persist() == 800
    assert s.reinit() == 30
    assert s.factory_reset() == 1200
    assert s.self_test() is True
    i2c.done()


@with_fake_time
def test_scd4x_bad_crc_and_nack_raise(clock):
    bad = bytearray(SCD_MEAS)
    bad[5] ^= 0x80  # temperature CRC
    s = scd4x.SCD4x(_bus(clock, ("w", 0x62, unhex("ec05")), ("r", 0x62, bytes(bad))))
    assert _raised(s.read).args[0] == "crc"
    # no data in the buffer: the chip NACKs the read
    s = scd4x.SCD4x(_bus(clock, ("w", 0x62, unhex("ec05")), ("R", 0x62, b"")))
    assert _raised(s.read).args[0] == "nack"
    # a command the chip refuses in periodic mode
    s = scd4x.SCD4x(_bus(clock, ("W", 0x62, unhex("2322"))))
    assert _raised(s.altitude).args[0] == "nack"


# --- BH1750 -----------------------------------------------------------------------
@with_fake_time
def test_bh1750_one_time_h_datasheet_example(clock):
    # Datasheet: 0x8390 = 33680 counts -> 33680 / 1.2 = 28067 lx.
    i2c = _bus(clock, ("w", 0x23, b"\x20"), ("r", 0x23, unhex("8390"), 180))
    s = bh1750.BH1750(i2c)
    assert s.measure() == 28067
    i2c.done()


@with_fake_time
def test_bh1750_modes_and_mtreg(clock):
    i2c = _bus(clock, ("w", 0x5C, b"\x01"), ("w", 0x5C, b"\x07"),
               ("w", 0x5C, b"\x44"), ("w", 0x5C, b"\x6a"),  # MT 138 = 0b100_01010
               ("w", 0x5C, b"\x13"), ("r", 0x5C, unhex("8390"), 48),  # L: 24 * 138/69
               ("w", 0x5C, b"\x11"), ("r", 0x5C, unhex("8390"), 360),  # H2 at MT 138
               ("r", 0x5C, unhex("0001")),  # continuous: no wait for the next read
               ("w", 0x5C, b"\x00"))
    s = bh1750.BH1750(i2c, 0x5C)
    s.power_on()
    s.reset()
    s.set_mtreg(138)
    assert s.start(bh1750.CONT_L) == 48
    assert s.read() == 14033  # 33680 / 1.2 * 69 / 138
    assert s.start(bh1750.CONT_H2) == 360
    assert s.read() == 7017  # 33680 / 1.2 * 69 / 138 / 2 = 7016.7
    assert s.read() == 0  # 1 count = 0.21 lx
    s.power_off()
    i2c.done()
    assert raises(ValueError, s.set_mtreg, 30)
    assert raises(ValueError, s.set_mtreg, 255)
    assert raises(ValueError, s.start, 0x12)
    assert _raised(s.read).args[0] == "not started"


@with_fake_time
def test_bh1750_mtreg_bounds_and_nack(clock):
    i2c = _bus(clock, ("w", 0x23, b"\x40"), ("w", 0x23, b"\x7f"),  # 31
               ("w", 0x23, b"\x47"), ("w", 0x23, b"\x7e"),  # 254
               ("w", 0x23, b"\x20"), ("R", 0x23, b"", 663))
    s = bh1750.BH1750(i2c)
    s.set_mtreg(31)
    s.set_mtreg(254)
    assert _raised(s.measure).args[0] == "nack"
    i2c.done()
    s = bh1750.BH1750(_bus(clock, ("W", 0x23, b"\x01")))
    assert isinstance(_raised(s.power_on), SensorError)


# --- memory ------------------------------------------------------------------------
@with_fake_time
def test_reads_do_not_churn_the_heap(clock):
    if sys.implementation.name != "micropython":
        return
    import gc

    n = 20
    i2c = FakeI2C(clock, [("r", 0x44, SHT_21_5_40)] * n + [("r", 0x62, READY)] * n)
    s = sht4x.SHT4x(i2c)
    c = scd4x.SCD4x(i2c)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(n):
            s.read()
        per_sht = (gc.mem_alloc() - before) / n
        before = gc.mem_alloc()
        for _ in range(n):
            c._fetch(c._r3, 1)
        per_scd = (gc.mem_alloc() - before) / n
    finally:
        gc.enable()
    assert per_sht <= 48, per_sht  # the result tuple (the fake's list.pop aside)
    assert per_scd <= 16, per_scd


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return e
    raise AssertionError("nothing raised")
