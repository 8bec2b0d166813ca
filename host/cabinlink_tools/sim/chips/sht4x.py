"""Sensirion SHT4x temperature and humidity sensor at the command level.

Modelled (datasheet SHT4x v6): 1-byte commands; measurements 0xFD/0xF6/0xE0 take
8.3/4.5/1.7 ms and the chip NACKs every transaction until done (so a read before the
conversion ends NACKs); heater commands (200/110/20 mW for 1 s or 0.1 s, then a
high-precision measurement); 0x89 serial number (two words); 0x94 soft reset (1 ms).
Reply ``[T_hi, T_lo, crc, RH_hi, RH_lo, crc]`` with S_T = (T + 45)·65535/175 and
S_RH = (RH + 6)·65535/125; a reply is read once, a second read NACKs; an unknown
command, a multi-byte write or a read with nothing to read NACKs.

Simplified: the air is sampled when the command arrives; the heater lifts the measured
temperature by ``heater_k_per_mw``·P·(1 − e^(−t/τ)) (illustrative: 200 mW for 1 s gives
+8.6 °C) at constant water content, so %RH drops, and the chip cools at once afterwards;
no duty-cycle limit, no power-up time, no creep. Optional repeatability noise (σ per the
datasheet's precision levels), seeded.
"""
from __future__ import annotations

import math
import random

from ..cabin import Cabin, rh_at
from .base import DEFAULT_CLOCK, Clock, Environment
from .sensirion import SensirionTarget

MEASURE_S = {0xFD: 0.0083, 0xF6: 0.0045, 0xE0: 0.0017}
# repeatability (1 σ) per precision: °C, %RH
NOISE = {0xFD: (0.04, 0.08), 0xF6: (0.07, 0.15), 0xE0: (0.1, 0.25)}
HEATER = {0x39: (200, 1.0), 0x32: (200, 0.1), 0x2F: (110, 1.0),
          0x24: (110, 0.1), 0x1E: (20, 1.0), 0x15: (20, 0.1)}
READ_SERIAL = 0x89
SOFT_RESET = 0x94


def encode_t(t_c: float) -> int:
    return max(0, min(0xFFFF, round((t_c + 45.0) * 65535 / 175)))


def encode_rh(rh: float) -> int:
    return max(0, min(0xFFFF, round((rh + 6.0) * 65535 / 125)))


class Sht4x(SensirionTarget):
    def __init__(self, address: int = 0x44, env: Environment | None = None,
                 clock: Clock = DEFAULT_CLOCK, *, serial: int = 0x0F3A5C21,
                 noise: bool = False, seed: int = 0, heater_k_per_mw: float = 0.05,
                 heater_tau_s: float = 0.5) -> None:
        super().__init__(address, clock)
        self.env: Environment = env if env is not None else Cabin(clock)
        self.serial = serial & 0xFFFFFFFF
        self.noise = noise
        self._rng = random.Random(seed)
        self.heater_k_per_mw = heater_k_per_mw
        self.heater_tau_s = heater_tau_s
        self.last_command: int | None = None
        self.heater_pulses = 0

    def on_write(self, data: bytes) -> bool:
        if self.busy:
            return False
        if not data:
            return True  # address probe
        if len(data) != 1:
            return False
        cmd = data[0]
        if cmd in MEASURE_S:
            self._measure(cmd, 0.0)
            self._busy_for(MEASURE_S[cmd])
        elif cmd in HEATER:
            power, on_s = HEATER[cmd]
            rise = self.heater_k_per_mw * power * (1 - math.exp(-on_s / self.heater_tau_s))
            self._measure(0xFD, rise)
            self._busy_for(on_s + MEASURE_S[0xFD])
            self.heater_pulses += 1
        elif cmd == READ_SERIAL:
            self._set_reply(self.serial >> 16, self.serial & 0xFFFF)
        elif cmd == SOFT_RESET:
            self._reply = None
            self._busy_for(0.001)
        else:
            return False
        self.last_command = cmd
        return True

    def _measure(self, precision: int, rise: float) -> None:
        t = self.env.temperature
        rh = self.env.humidity
        if rise:
            rh, t = rh_at(t, rh, t + rise), t + rise
        if self.noise:
            st, srh = NOISE[precision]
            t += self._rng.gauss(0, st)
            rh += self._rng.gauss(0, srh)
        self._set_reply(encode_t(t), encode_rh(rh))
