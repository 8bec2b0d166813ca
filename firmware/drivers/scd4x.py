# Sensirion SCD4x (SCD40/SCD41) CO2, temperature and humidity sensor, I2C 0x62.
#
# Results are ints: (CO2 ppm, centi-degC, centi-%RH). A NACK or a CRC mismatch
# raises SensorError; no wrong value is ever returned.
#
# Timing: queries (ready, read, getters) take about 1 ms and wait for it
# themselves. Commands that keep the chip busy longer return the milliseconds
# it needs (start_periodic: until the first sample); an asyncio task awaits them:
#     await asyncio.sleep_ms(s.start_periodic())
#     while True:
#         if s.ready():
#             co2, t, rh = s.read()
#         await asyncio.sleep_ms(1000)
# A command issued before the chip is due first sleeps the rest of the time
# (time.sleep_ms), so a blocking caller needs no waits of its own: measure().
# While periodic measurement runs, only read, ready, stop and ambient_pressure
# are accepted by the chip (others raise SensorError("nack")). After a reset of
# the board alone the chip may still be measuring: call stop() first.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import time

from .sensirion import Busy, SensorError, bus_error, check, put, word

_START = const(0x21B1)
_START_LOW_POWER = const(0x21AC)
_READ = const(0xEC05)
_STOP = const(0x3F86)
_READY = const(0xE4B8)
_SET_T_OFFSET = const(0x241D)
_GET_T_OFFSET = const(0x2318)
_SET_ALTITUDE = const(0x2427)
_GET_ALTITUDE = const(0x2322)
_PRESSURE = const(0xE000)
_SET_ASC = const(0x2416)
_GET_ASC = const(0x2313)
_FRC = const(0x362F)
_PERSIST = const(0x3615)
_SERIAL = const(0x3682)
_SELF_TEST = const(0x3639)
_FACTORY_RESET = const(0x3632)
_REINIT = const(0x3646)
_SINGLE = const(0x219D)
_SINGLE_RHT = const(0x2196)


class SCD4x(Busy):
    def __init__(self, i2c, addr=0x62):
        self.i2c = i2c
        self.addr = addr
        self._w = bytearray(5)  # command + one argument word with CRC
        self._w2 = memoryview(self._w)[:2]
        self._r = bytearray(9)  # up to three words with CRCs
        self._r3 = memoryview(self._r)[:3]
        self.periodic = False

    def _send(self, cmd, arg=None, ms=1):
        self._wait()
        w = self._w
        w[0] = cmd >> 8
        w[1] = cmd & 0xFF
        try:
            if arg is None:
                self.i2c.writeto(self.addr, self._w2)
            else:
                if not 0 <= arg <= 0xFFFF:
                    raise ValueError("argument out of range")
                put(w, 2, arg)
                self.i2c.writeto(self.addr, w)
        except OSError as e:
            raise bus_error(e)
        self._busy(ms)

    def _fetch(self, buf, n):
        self._wait()
        try:
            self.i2c.readfrom_into(self.addr, buf)
        except OSError as e:
            raise bus_error(e)
        check(buf, n)

    def _query(self, cmd, arg=None, ms=1):
        # A command with a one-word reply.
        self._send(cmd, arg, ms)
        self._fetch(self._r3, 1)
        return word(self._r, 0)

    # --- measuring -------------------------------------------------------------
    def start_periodic(self, low_power=False):
        # A sample every 5 s (low power: 30 s); returns ms to the first one.
        self._send(_START_LOW_POWER if low_power else _START, None, 0)
        self.periodic = True
        return 30000 if low_power else 5000

    def stop(self):
        self._send(_STOP, None, 500)
        self.periodic = False
        return 500

    def ready(self):
        return self._query(_READY) & 0x07FF != 0

    def read(self):
        # The latest sample; the chip NACKs (SensorError) when there is none.
        self._send(_READ)
        r = self._r
        self._fetch(r, 3)
        # T = -45 + 175 * w / 65536, RH = 100 * w / 65536, in hundredths, rounded.
        return (word(r, 0), ((4375 * word(r, 3) + 8192) >> 14) - 4500,
                (625 * word(r, 6) + 2048) >> 12)

    def single_shot(self, rht_only=False):
        # SCD41 only. Returns the ms until read() has the sample (CO2 0 if rht_only).
        if rht_only:
            self._send(_SINGLE_RHT, None, 50)
            return 50
        self._send(_SINGLE, None, 5000)
        return 5000

    def measure(self, timeout_ms=12000):
        # Blocking: starts periodic measurement if needed, waits for a sample.
        if not self.periodic:
            self.start_periodic()
        while not self.ready():
            if timeout_ms <= 0:
                raise SensorError("timeout")
            time.sleep_ms(100)
            timeout_ms -= 100
        return self.read()

    # --- settings (idle only) ---------------------------------------------------
    def temperature_offset(self, centi_c=None):
        # Get or set, in centi-degC; word = degC * 65536 / 175.
        if centi_c is None:
            return (4375 * self._query(_GET_T_OFFSET) + 8192) >> 14
        self._send(_SET_T_OFFSET, (centi_c * 16384 + 2187) // 4375)

    def altitude(self, metres=None):
        if metres is None:
            return self._query(_GET_ALTITUDE)
        self._send(_SET_ALTITUDE, metres)

    def ambient_pressure(self, hpa=None):
        # Also accepted during periodic measurement; overrides the altitude.
        if hpa is None:
            return self._query(_PRESSURE)
        self._send(_PRESSURE, hpa)

    def asc(self, enabled=None):
        # Automatic self-calibration on/off.
        if enabled is None:
            return self._query(_GET_ASC) != 0
        self._send(_SET_ASC, 1 if enabled else 0)

    def forced_recalibration(self, ppm):
        # After >= 3 min of periodic measurement at a known ppm, then stop():
        # returns the correction applied (ppm); SensorError if the chip refused.
        w = self._query(_FRC, ppm, 400)
        if w == 0xFFFF:
            raise SensorError("frc failed")
        return w - 0x8000

    def persist(self):
        # Settings to EEPROM (about 2000 write cycles: only when they changed).
        self._send(_PERSIST, None, 800)
        return 800

    def reinit(self):
        self._send(_REINIT, None, 30)
        return 30

    def factory_reset(self):
        self._send(_FACTORY_RESET, None, 1200)
        return 1200

    def self_test(self):
        # Blocks 10 s. True if the chip reports no malfunction.
        return self._query(_SELF_TEST, None, 10000) == 0

    def serial(self):
        self._send(_SERIAL)
        r = self._r
        self._fetch(r, 3)
        return word(r, 0) << 32 | word(r, 3) << 16 | word(r, 6)
