# Sensirion SHT4x temperature and humidity sensor, I2C address 0x44 (0x45, 0x46).
#
# Results are ints: (centi-degC, centi-%RH), e.g. (2150, 4000) = 21.50 C, 40.00 %RH.
# A NACK or a CRC mismatch raises SensorError; no wrong value is ever returned.
#
# Timing: start() sends the command and returns the milliseconds the conversion
# takes, so an asyncio task does
#     await asyncio.sleep_ms(s.start())
#     t, rh = s.read()
# and a blocking caller just calls measure(). A command or read issued before the
# chip is due first sleeps the rest of the time (time.sleep_ms), so early calls
# are slow, never wrong.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import time

from .sensirion import Busy, SensorError, bus_error, check, word

HIGH = const(0xFD)  # precision levels
MEDIUM = const(0xF6)
LOW = const(0xE0)
HEAT_200MW_1S = const(0x39)  # heater pulse, then a HIGH measurement
HEAT_200MW_100MS = const(0x32)
HEAT_110MW_1S = const(0x2F)
HEAT_110MW_100MS = const(0x24)
HEAT_20MW_1S = const(0x1E)
HEAT_20MW_100MS = const(0x15)
_SERIAL = const(0x89)
_RESET = const(0x94)


def duration_ms(cmd):
    # Datasheet maximum, rounded up (8.3 / 4.5 / 1.7 ms; heater 1.1 s / 0.11 s).
    if cmd == HIGH:
        return 9
    if cmd == MEDIUM:
        return 5
    if cmd == LOW:
        return 2
    if cmd in (HEAT_200MW_1S, HEAT_110MW_1S, HEAT_20MW_1S):
        return 1100
    if cmd in (HEAT_200MW_100MS, HEAT_110MW_100MS, HEAT_20MW_100MS):
        return 110
    raise ValueError("unknown SHT4x command")


class SHT4x(Busy):
    def __init__(self, i2c, addr=0x44):
        self.i2c = i2c
        self.addr = addr
        self._cmd = bytearray(1)
        self._buf = bytearray(6)

    def _send(self, cmd, ms):
        self._wait()
        self._cmd[0] = cmd
        try:
            self.i2c.writeto(self.addr, self._cmd)
        except OSError as e:
            raise bus_error(e)
        self._busy(ms)

    def _fetch(self):
        self._wait()
        try:
            self.i2c.readfrom_into(self.addr, self._buf)
        except OSError as e:
            raise bus_error(e)
        check(self._buf, 2)
        return self._buf

    def start(self, mode=HIGH):
        # Starts a measurement (or a heater pulse + measurement); returns its ms.
        ms = duration_ms(mode)
        self._send(mode, ms)
        return ms

    def read(self):
        b = self._fetch()
        # T = -45 + 175 * S / 65535 and RH = -6 + 125 * S / 65535, in hundredths,
        # rounded; 175/65535 = 35/13107 keeps the products in small ints.
        t = (3500 * word(b, 0) + 6553) // 13107 - 4500
        rh = (2500 * word(b, 3) + 6553) // 13107 - 600
        return t, (0 if rh < 0 else 10000 if rh > 10000 else rh)

    def measure(self, mode=HIGH):
        self.start(mode)
        return self.read()

    def serial(self):
        self._send(_SERIAL, 1)
        b = self._fetch()
        return word(b, 0) << 16 | word(b, 3)

    def reset(self):
        # Soft reset; returns the ms before the next command (handled by _wait).
        self._send(_RESET, 1)
        return 1
