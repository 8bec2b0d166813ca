"""ROHM BH1750FVI ambient light sensor at the opcode level.

Modelled (datasheet 2011.11 rev. D): 1-byte opcodes, several per write are executed in
order. Power Down 0x00, Power On 0x01, Reset 0x07 (clears the data register; ignored
while powered down). Continuous H 0x10 / H2 0x11 / L 0x13 and one-time 0x20 / 0x21 /
0x23 modes; a measurement opcode also powers the chip on; a one-time measurement powers
it down when done. MTreg (default 69, range 31..254) is written as ``0x40 | MT >> 5``
and ``0x60 | MT & 0x1F`` and applies from the next measurement opcode. Measurement time scales
with MT/69: H/H2 180 ms max (120 typ), L 24 ms max (16 typ); ``strict=True`` (default)
uses the maximum, so a driver that waits only the typical time reads the old value.
A read returns the 16-bit data register big-endian; the chip never NACKs a read (before
the first result it returns 0). An unknown opcode NACKs (a choice of this model).

Counts: raw = lux · 1.2 · MT/69 (×2 in H2), truncated, saturating at 65535; L mode
drops the two low bits (4 lx steps). So lux = raw / 1.2 · 69/MT (÷2 in H2). A
continuous result is sampled when the firmware first looks after it was due.
"""
from __future__ import annotations

from ..cabin import Cabin
from .base import DEFAULT_CLOCK, Clock, Environment, I2CTarget

POWER_DOWN, POWER_ON, RESET = 0x00, 0x01, 0x07
CONT_H, CONT_H2, CONT_L = 0x10, 0x11, 0x13
ONCE_H, ONCE_H2, ONCE_L = 0x20, 0x21, 0x23
MODES = (CONT_H, CONT_H2, CONT_L, ONCE_H, ONCE_H2, ONCE_L)
MT_DEFAULT, MT_MIN, MT_MAX = 69, 31, 254
# measurement time at MT = 69 (typical, maximum), seconds
TIME_S = {"H": (0.120, 0.180), "L": (0.016, 0.024)}


def _kind(mode: int) -> str:
    return "L" if mode & 0x0F == 0x03 else "H"


class Bh1750(I2CTarget):
    def __init__(self, address: int = 0x23, env: Environment | None = None,
                 clock: Clock = DEFAULT_CLOCK, *, strict: bool = True) -> None:
        super().__init__(address)
        self.env: Environment = env if env is not None else Cabin(clock)
        self.clock = clock
        self.strict = strict
        self.powered = False
        self.mode: int | None = None
        self.mtreg = MT_DEFAULT
        self.data = 0
        self._mt_run = MT_DEFAULT   # MT of the running measurement
        self._started = 0.0
        self._done = 0              # results produced in this run

    def measurement_time(self, mode: int, mt: int | None = None) -> float:
        typ, mx = TIME_S[_kind(mode)]
        return (mx if self.strict else typ) * (self.mtreg if mt is None else mt) / MT_DEFAULT

    def _update(self) -> None:
        if self.mode is None:
            return
        period = self.measurement_time(self.mode, self._mt_run)
        n = int((self.clock() - self._started) // period)
        if n <= self._done:
            return
        self._done = n
        self.data = self.counts(self.env.lux, self.mode, self._mt_run)
        if self.mode in (ONCE_H, ONCE_H2, ONCE_L):
            self.mode = None
            self.powered = False

    @staticmethod
    def counts(lux: float, mode: int, mt: int = MT_DEFAULT) -> int:
        raw = lux * 1.2 * mt / MT_DEFAULT * (2 if mode & 0x0F == 0x01 else 1)
        raw = max(0, min(0xFFFF, int(raw)))
        return raw & ~0x3 if _kind(mode) == "L" else raw

    def on_write(self, data: bytes) -> bool:
        self._update()
        for op in data:
            if not self._op(op):
                return False
        return True

    def _op(self, op: int) -> bool:
        if op == POWER_DOWN:
            self.powered = False
            self.mode = None
        elif op == POWER_ON:
            self.powered = True
        elif op == RESET:
            if self.powered:
                self.data = 0
        elif op in MODES:
            self.powered = True
            self.mode = op
            self._mt_run = self.mtreg
            self._started = self.clock()
            self._done = 0
        elif op & 0xF8 == 0x40:
            self.mtreg = (op & 0x07) << 5 | (self.mtreg & 0x1F)
        elif op & 0xE0 == 0x60:
            self.mtreg = (self.mtreg & 0xE0) | (op & 0x1F)
        else:
            return False
        return True

    def on_read(self, n: int) -> bytes | None:
        self._update()
        return self.data.to_bytes(2, "big")
