# Shared by the sensor drivers: Sensirion's CRC-8 over 16-bit words (polynomial
# 0x31, init 0xFF; CRC(BE EF) = 0x92) and SensorError, which every driver in
# drivers/ raises instead of returning a wrong value.
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_ENODEV = const(19)


class SensorError(OSError):
    # args[0]: a short reason: "nack", "bus", "crc", "timeout", "frc failed", ...
    pass


def bus_error(e):
    # The SensorError for an OSError from machine.I2C (19 = no ACK).
    return SensorError("nack" if e.args and e.args[0] == _ENODEV else "bus")


def crc8(buf, i=0):
    # CRC of the word buf[i], buf[i + 1].
    c = 0xFF
    for j in range(i, i + 2):
        c ^= buf[j]
        for _ in range(8):
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def check(buf, n):
    # n words of (MSB, LSB, CRC) at the start of buf; raises SensorError("crc").
    for i in range(0, 3 * n, 3):
        if crc8(buf, i) != buf[i + 2]:
            raise SensorError("crc")


def word(buf, i):
    return buf[i] << 8 | buf[i + 1]


def put(buf, i, w):
    # The word w and its CRC into buf[i:i + 3].
    buf[i] = w >> 8 & 0xFF
    buf[i + 1] = w & 0xFF
    buf[i + 2] = crc8(buf, i)


class Busy:
    # A chip that ignores the bus while it works: _busy(ms) marks it busy,
    # _wait() sleeps out whatever is left before the next command or read.
    # ticks_ms truncates, so the chip is due ms + 1 ticks on: at least ms real
    # milliseconds (a read 0.2 ms after a 1 ms command would be NACKed).
    _due = None  # ticks_ms when the chip answers again

    def _busy(self, ms):
        self._due = time.ticks_add(time.ticks_ms(), ms + 1)

    def _wait(self):
        if self._due is not None:
            d = time.ticks_diff(self._due, time.ticks_ms())
            if d > 0:
                time.sleep_ms(d)
            self._due = None
