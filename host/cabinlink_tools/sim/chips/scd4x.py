"""Sensirion SCD4x (SCD40/SCD41) CO2, temperature and humidity sensor at the command level.

Modelled (datasheet SCD4x v1.x): 16-bit commands, MSB first; an argument is one word plus
its CRC (a bad CRC or a wrong argument length NACKs); replies are words plus CRCs. After
a command the chip is busy for the command's execution time and NACKs every
transaction meanwhile (stop_periodic_measurement 500 ms, persist_settings 800 ms,
factory_reset 1200 ms, perform_self_test 10 s, forced recalibration 400 ms, reinit
30 ms, most others 1 ms); a reply can be read once after that.

* Periodic mode: a sample every 5 s (low power: every 30 s) counted from the start
  command; get_data_ready_status answers 0x8006 when a sample waits and 0x8000 when not
  (the driver must test ``word & 0x07FF``); read_measurement returns CO2, T, RH and
  empties the buffer; with an empty buffer the read after it NACKs. While periodic, only
  read_measurement, get_data_ready_status, stop_periodic_measurement and
  set/get_ambient_pressure are accepted; everything else NACKs.
* Settings: temperature offset (default 4 °C, word = °C·65536/175), altitude (m),
  ambient pressure (hPa), ASC enabled (default 1); persist_settings copies them to the
  EEPROM; reinit reloads them from it; factory_reset restores the defaults everywhere
  and clears the calibration. :meth:`power_cycle` (test hook) reloads the EEPROM too.
* Forced recalibration — a simpler rule than the datasheet's "operate ≥ 3 minutes in
  periodic mode at a stable concentration, then stop, then FRC": it succeeds iff the
  most recent periodic run lasted at least 180 s; it replies ``0x8000 + correction``
  (ppm, the change it applied) or 0xFFFF on failure.
* Single shot (SCD41 only; ``variant="scd40"`` NACKs it): a sample after 5 s; the RH/T
  only variant after 50 ms with CO2 = 0.
* perform_self_test replies :attr:`self_test_word` (0 = OK); serial number is 3 words.

What is reported: CO2 = the cabin's CO2 + :attr:`drift_ppm` (test hook: an uncalibrated
sensor) + the FRC correction; T = air temperature + :attr:`self_heating` (4 °C, the
datasheet's default offset is there to cancel it) − the temperature offset; RH is the
same air's humidity at that reported temperature. Samples are taken when the firmware
first looks after a sample time (the air is read then), not at the exact instant.
Not modelled: pressure/altitude compensation (stored and returned only), ASC itself,
the power_down/wake_up commands, measurement noise.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..cabin import Cabin, rh_at
from .base import DEFAULT_CLOCK, Clock, Environment
from .sensirion import SensirionTarget, pack_words, unpack_words

START_PERIODIC = 0x21B1
START_LOW_POWER = 0x21AC
READ_MEASUREMENT = 0xEC05
STOP_PERIODIC = 0x3F86
GET_DATA_READY = 0xE4B8
SET_TEMPERATURE_OFFSET = 0x241D
GET_TEMPERATURE_OFFSET = 0x2318
SET_ALTITUDE = 0x2427
GET_ALTITUDE = 0x2322
AMBIENT_PRESSURE = 0xE000  # with an argument: set; without: get
SET_ASC = 0x2416
GET_ASC = 0x2313
FORCED_RECALIBRATION = 0x362F
PERSIST_SETTINGS = 0x3615
GET_SERIAL = 0x3682
SELF_TEST = 0x3639
FACTORY_RESET = 0x3632
REINIT = 0x3646
SINGLE_SHOT = 0x219D
SINGLE_SHOT_RHT = 0x2196

PERIODIC_ALLOWED = frozenset({READ_MEASUREMENT, GET_DATA_READY, STOP_PERIODIC, AMBIENT_PRESSURE})
INTERVAL_S = {START_PERIODIC: 5.0, START_LOW_POWER: 30.0}
FRC_MIN_RUN_S = 180.0


@dataclass
class Settings:
    temperature_offset: int = 1498  # word: 4 °C · 65536 / 175
    altitude: int = 0
    asc: int = 1


@dataclass
class _Cmd:
    args: int          # argument words
    # returns the reply words, None for no reply, or False to NACK the command
    run: Callable[[Scd4x, list[int]], object] = field(repr=False)
    exec_s: float = 0.001


class Scd4x(SensirionTarget):
    def __init__(self, address: int = 0x62, env: Environment | None = None,
                 clock: Clock = DEFAULT_CLOCK, *, variant: str = "scd41",
                 serial: int = 0x0BEE_C0DE_0042, self_heating: float = 4.0) -> None:
        super().__init__(address, clock)
        if variant not in ("scd40", "scd41"):
            raise ValueError("variant is 'scd40' or 'scd41'")
        self.env: Environment = env if env is not None else Cabin(clock)
        self.variant = variant
        self.serial = serial & 0xFFFF_FFFF_FFFF
        self.self_heating = self_heating
        self.drift_ppm = 0.0
        self.self_test_word = 0
        self.eeprom = Settings()
        self.settings = replace(self.eeprom)
        self.ambient_pressure = 1013
        self.frc_correction = 0.0
        self.mode = "idle"  # idle | periodic | single
        self._interval = 5.0
        self._started = 0.0
        self._samples = 0          # samples taken in this periodic run
        self._single_due = 0.0
        self._single_rht = False
        self.last_run_s = 0.0      # length of the latest periodic run
        self._data: tuple[int, int, int] | None = None

    # --- test hooks -----------------------------------------------------------
    def power_cycle(self) -> None:
        """Power off and on: idle, RAM settings reloaded from the EEPROM, buffer empty."""
        self.mode = "idle"
        self.settings = replace(self.eeprom)
        self._data = None
        self._reply = None
        self._busy_until = 0.0

    @property
    def data_ready(self) -> bool:
        self._update()
        return self._data is not None

    # --- time -----------------------------------------------------------------
    def _update(self) -> None:
        now = self.clock()
        if self.mode == "periodic":
            n = int((now - self._started) // self._interval)
            if n > self._samples:
                self._samples = n
                self._data = self._sample(rht_only=False)
        elif self.mode == "single" and now >= self._single_due:
            self.mode = "idle"
            self._data = self._sample(rht_only=self._single_rht)

    def _sample(self, rht_only: bool) -> tuple[int, int, int]:
        t_air = self.env.temperature
        t = t_air + self.self_heating - self.settings.temperature_offset * 175 / 65536
        rh = rh_at(t_air, self.env.humidity, t)
        co2 = 0 if rht_only else round(self.env.co2 + self.drift_ppm + self.frc_correction)
        return (max(0, min(40000, co2)),
                max(0, min(0xFFFF, round((t + 45) * 65536 / 175))),
                max(0, min(0xFFFF, round(rh * 65536 / 100))))

    # --- I2C ------------------------------------------------------------------
    def on_write(self, data: bytes) -> bool:
        if self.busy:
            return False
        self._update()
        if not data:
            return True  # address probe
        if len(data) < 2:
            return False
        code = data[0] << 8 | data[1]
        args = unpack_words(data[2:])
        if args is None:
            return False  # bad CRC or not whole words
        cmd: _Cmd | None = COMMANDS.get(code)
        if code == AMBIENT_PRESSURE:  # the only command with and without an argument
            cmd = _SET_PRESSURE if args else _GET_PRESSURE
        if cmd is None or len(args) != cmd.args:
            return False
        if self.mode == "periodic" and code not in PERIODIC_ALLOWED:
            return False
        if self.mode == "single" and code != READ_MEASUREMENT and code != GET_DATA_READY:
            return False
        self._reply = None
        words = cmd.run(self, args)
        if words is False:
            return False
        if isinstance(words, tuple):
            self._reply = pack_words(*words)
        self._busy_for(cmd.exec_s)
        return True

    def on_read(self, n: int) -> bytes | None:
        self._update()
        return super().on_read(n)

    # --- commands -------------------------------------------------------------
    def _start(self, code: int) -> None:
        self.mode = "periodic"
        self._interval = INTERVAL_S[code]
        self._started = self.clock()
        self._samples = 0
        self._data = None

    def _stop(self) -> None:
        self.last_run_s = self.clock() - self._started
        self.mode = "idle"

    def _read(self) -> tuple[int, int, int] | None:
        # An empty buffer: the command is taken, the read that follows NACKs.
        data, self._data = self._data, None
        return data

    def _frc(self, target: int) -> tuple[int]:
        if self.last_run_s < FRC_MIN_RUN_S:
            return (0xFFFF,)
        before = self.env.co2 + self.drift_ppm + self.frc_correction
        self.frc_correction = target - (self.env.co2 + self.drift_ppm)
        delta = round(target - before)
        return (max(0, min(0xFFFE, 0x8000 + delta)),)

    def _factory_reset(self) -> None:
        self.eeprom = Settings()
        self.settings = Settings()
        self.frc_correction = 0.0
        self.last_run_s = 0.0

    def _single(self, rht_only: bool) -> bool | None:
        if self.variant != "scd41":
            return False
        self.mode = "single"
        self._single_rht = rht_only
        self._single_due = self.clock() + (0.05 if rht_only else 5.0)
        self._data = None
        return None


def _set(name: str) -> Callable[[Scd4x, list[int]], None]:
    def run(s: Scd4x, a: list[int]) -> None:
        setattr(s.settings, name, a[0])
    return run


def _get(name: str) -> Callable[[Scd4x, list[int]], tuple[int]]:
    return lambda s, a: (getattr(s.settings, name),)


def _set_asc(s: Scd4x, a: list[int]) -> bool | None:
    if a[0] > 1:
        return False
    s.settings.asc = a[0]
    return None


def _set_pressure(s: Scd4x, a: list[int]) -> None:
    s.ambient_pressure = a[0]


_SET_PRESSURE = _Cmd(1, _set_pressure)
_GET_PRESSURE = _Cmd(0, lambda s, a: (s.ambient_pressure,))

COMMANDS: dict[int, _Cmd] = {
    START_PERIODIC: _Cmd(0, lambda s, a: s._start(START_PERIODIC), 0.0),
    START_LOW_POWER: _Cmd(0, lambda s, a: s._start(START_LOW_POWER), 0.0),
    READ_MEASUREMENT: _Cmd(0, lambda s, a: s._read()),
    STOP_PERIODIC: _Cmd(0, lambda s, a: s._stop(), 0.5),
    GET_DATA_READY: _Cmd(0, lambda s, a: (0x8006 if s._data is not None else 0x8000,)),
    SET_TEMPERATURE_OFFSET: _Cmd(1, _set("temperature_offset")),
    GET_TEMPERATURE_OFFSET: _Cmd(0, _get("temperature_offset")),
    SET_ALTITUDE: _Cmd(1, _set("altitude")),
    GET_ALTITUDE: _Cmd(0, _get("altitude")),
    SET_ASC: _Cmd(1, _set_asc),
    GET_ASC: _Cmd(0, _get("asc")),
    FORCED_RECALIBRATION: _Cmd(1, lambda s, a: s._frc(a[0]), 0.4),
    PERSIST_SETTINGS: _Cmd(0, lambda s, a: setattr(s, "eeprom", replace(s.settings)), 0.8),
    GET_SERIAL: _Cmd(0, lambda s, a: (s.serial >> 32, s.serial >> 16 & 0xFFFF, s.serial & 0xFFFF)),
    SELF_TEST: _Cmd(0, lambda s, a: (s.self_test_word,), 10.0),
    FACTORY_RESET: _Cmd(0, lambda s, a: s._factory_reset(), 1.2),
    REINIT: _Cmd(0, lambda s, a: setattr(s, "settings", replace(s.eeprom)), 0.03),
    SINGLE_SHOT: _Cmd(0, lambda s, a: s._single(False)),
    SINGLE_SHOT_RHT: _Cmd(0, lambda s, a: s._single(True)),
}
