# ROHM BH1750 ambient light sensor, I2C address 0x23 (0x5C with ADDR high).
#
# Results are ints in lux. A NACK raises SensorError (the chip has no CRC).
#
# Timing: start(mode) sends the mode and returns the worst-case milliseconds of
# one measurement at the current MTreg, so an asyncio task does
#     await asyncio.sleep_ms(s.start(bh1750.ONCE_H))
#     lux = s.read()
# A one-time mode powers the chip down after its measurement; a continuous mode
# keeps measuring, read() any time after the first result. A read before the
# result is due first sleeps the rest of the time (time.sleep_ms): measure().
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import time

from .sensirion import SensorError, bus_error

CONT_H = const(0x10)  # 1 lx resolution
CONT_H2 = const(0x11)  # 0.5 lx
CONT_L = const(0x13)  # 4 lx, fast
ONCE_H = const(0x20)
ONCE_H2 = const(0x21)
ONCE_L = const(0x23)
_POWER_DOWN = const(0x00)
_POWER_ON = const(0x01)
_RESET = const(0x07)
_MT_DEFAULT = const(69)


class BH1750:
    def __init__(self, i2c, addr=0x23):
        self.i2c = i2c
        self.addr = addr
        self._cmd = bytearray(1)
        self._buf = bytearray(2)
        self.mode = None
        self.mtreg = _MT_DEFAULT
        self._mt = _MT_DEFAULT  # MTreg of the running measurement
        self._due = None  # ticks_ms when the result is ready

    def _send(self, op):
        self._cmd[0] = op
        try:
            self.i2c.writeto(self.addr, self._cmd)
        except OSError as e:
            raise bus_error(e)

    def power_on(self):
        self._send(_POWER_ON)

    def power_off(self):
        self._send(_POWER_DOWN)
        self.mode = None

    def reset(self):
        # Clears the data register; the chip ignores it while powered down.
        self._send(_RESET)

    def set_mtreg(self, mt):
        # Measurement time register, 31..254 (default 69): sensitivity and time
        # scale with mt/69. Takes effect from the next start().
        if not 31 <= mt <= 254:
            raise ValueError("MTreg is 31..254")
        self._send(0x40 | mt >> 5)
        self._send(0x60 | mt & 0x1F)
        self.mtreg = mt

    def start(self, mode=ONCE_H):
        if mode not in (CONT_H, CONT_H2, CONT_L, ONCE_H, ONCE_H2, ONCE_L):
            raise ValueError("unknown BH1750 mode")
        self._send(mode)
        self.mode = mode
        self._mt = self.mtreg
        # maximum 180 ms (H, H2) or 24 ms (L) at MT 69, rounded up
        ms = ((24 if mode & 0x0F == 0x03 else 180) * self.mtreg + 68) // _MT_DEFAULT
        self._due = time.ticks_add(time.ticks_ms(), ms + 1)  # + 1: ticks_ms truncates
        return ms

    def read_raw(self):
        if self._due is not None:
            d = time.ticks_diff(self._due, time.ticks_ms())
            if d > 0:
                time.sleep_ms(d)
            self._due = None
        try:
            self.i2c.readfrom_into(self.addr, self._buf)
        except OSError as e:
            raise bus_error(e)
        return self._buf[0] << 8 | self._buf[1]

    def read(self):
        # lux = raw / 1.2 * 69 / MT (/ 2 in H2), rounded: raw * 115 / (2 * MT).
        if self.mode is None:
            raise SensorError("not started")
        raw = self.read_raw()
        d = 2 * self._mt
        if self.mode & 0x0F == 0x01:
            d *= 2
        return (raw * 115 + d // 2) // d

    def measure(self, mode=ONCE_H):
        self.start(mode)
        return self.read()
