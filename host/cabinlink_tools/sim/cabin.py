"""The cabin's air and light over time: what the simulated sensors measure.

A single well-mixed zone (the usual model for a car cabin):

* **CO2** — mass balance ``dC/dt = N·G/V − λ·(C − C_out)``: ``N`` occupants each breathing
  out ``G`` = 0.0052 L/s of CO2 (a seated adult at about 1.2 met, after Persily & de Jonge
  2017, Indoor Air 27:868, ≈ 19 L/h), cabin air volume ``V`` = 3.0 m³, air exchange rate
  ``λ`` = 1.5 /h in recirculation (leakage) and 60 /h with fresh air, outside
  ``C_out`` = 420 ppm. One person adds ≈ 1.7 ppm/s (≈ 104 ppm/min); with recirculation the
  level heads for ≈ +4200 ppm per person, with fresh air for ≈ +100 ppm.
* **Temperature** relaxes towards the HVAC set point (or the outside temperature with the
  HVAC off), time constant 10 min.
* **Humidity** is kept as absolute humidity (g/m³): each occupant adds 40 g/h of water
  vapour, ventilation exchanges it with the outside air at the same ``λ``; the relative
  humidity follows from the temperature (Magnus formula), capped at 100 % (the excess
  condenses). No A/C dehumidification and no moisture buffering by the seats: a closed
  cabin with four people saturates within the hour, as windows fog on recirculation.
* **Light** is set, not simulated: a lux value or a scene from :data:`LIGHT`.

Parameters are constant between two updates, so each update is the exact exponential
solution, as accurate for one 10-minute step as for 600 one-second steps. Time comes
either from ``step(dt)`` (tests) or lazily from an injected clock (the world); use one.
"""
from __future__ import annotations

import math
from collections.abc import Callable

Clock = Callable[[], float]  # as chips.base.Clock (this module imports nothing of chips)

CO2_PER_PERSON_LPS = 0.0052
WATER_PER_PERSON_GPH = 40.0
LIGHT = {"day": 10000.0, "overcast": 2000.0, "dusk": 50.0, "tunnel": 200.0, "night": 1.0}


def saturation_pressure(t_c: float) -> float:
    """Saturation vapour pressure over water, hPa (Magnus, Sonntag 1990 constants)."""
    return 6.112 * math.exp(17.62 * t_c / (243.12 + t_c))


def absolute_humidity(t_c: float, rh: float) -> float:
    """Water vapour density, g/m³, of air at ``t_c`` °C and ``rh`` %RH."""
    return 216.7 * saturation_pressure(t_c) * rh / 100.0 / (t_c + 273.15)


def relative_humidity(t_c: float, ah: float) -> float:
    """%RH (0..100) of air at ``t_c`` °C holding ``ah`` g/m³."""
    rh = ah * (t_c + 273.15) / (216.7 * saturation_pressure(t_c)) * 100.0
    return max(0.0, min(100.0, rh))


def rh_at(t_from: float, rh: float, t_to: float) -> float:
    """The %RH the same air shows once warmed or cooled from ``t_from`` to ``t_to``."""
    return relative_humidity(t_to, absolute_humidity(t_from, rh))


class Cabin:
    """Temperature, humidity, CO2 and light of a car cabin; see the module text."""

    def __init__(self, clock: Clock | None = None, *, temperature: float = 22.0,
                 humidity: float = 45.0, co2: float = 450.0, lux: float = LIGHT["day"],
                 occupants: int = 1, fresh_air: bool = False, volume_m3: float = 3.0,
                 ach_recirc: float = 1.5, ach_fresh: float = 60.0, outside_co2: float = 420.0,
                 outside_temperature: float = 15.0, outside_humidity: float = 70.0,
                 hvac_setpoint: float | None = 22.0, thermal_tau_s: float = 600.0) -> None:
        self._clock = clock
        self._t_last = clock() if clock is not None else 0.0
        self.elapsed = 0.0
        self._temp = temperature
        self._ah = absolute_humidity(temperature, humidity)
        self._co2 = co2
        self._lux = lux
        self._occupants = occupants
        self._fresh_air = fresh_air
        self.volume_m3 = volume_m3
        self.ach_recirc = ach_recirc
        self.ach_fresh = ach_fresh
        self.outside_co2 = outside_co2
        self.outside_temperature = outside_temperature
        self.outside_humidity = outside_humidity
        self.hvac_setpoint = hvac_setpoint
        self.thermal_tau_s = thermal_tau_s

    # --- time -----------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance the air by ``dt`` seconds with the current parameters."""
        if dt <= 0:
            return
        self.elapsed += dt
        k = self.exchange_rate
        decay = math.exp(-k * dt)
        # CO2: source S ppm/s, sink k·(C − C_out)
        s = self._occupants * CO2_PER_PERSON_LPS / (self.volume_m3 * 1000.0) * 1e6
        c_ss = self.outside_co2 + s / k
        self._co2 = c_ss + (self._co2 - c_ss) * decay
        # water vapour, g/m³
        w = self._occupants * WATER_PER_PERSON_GPH / 3600.0 / self.volume_m3
        ah_out = absolute_humidity(self.outside_temperature, self.outside_humidity)
        ah_ss = ah_out + w / k
        self._ah = ah_ss + (self._ah - ah_ss) * decay
        # temperature
        target = self.hvac_setpoint if self.hvac_setpoint is not None else self.outside_temperature
        self._temp = target + (self._temp - target) * math.exp(-dt / self.thermal_tau_s)
        # more vapour than the air can hold condenses (on the windows)
        self._ah = min(self._ah, absolute_humidity(self._temp, 100.0))

    def _sync(self) -> None:
        if self._clock is not None:
            now = self._clock()
            dt, self._t_last = now - self._t_last, now
            self.step(dt)

    @property
    def exchange_rate(self) -> float:
        """Air exchange rate λ, per second."""
        return (self.ach_fresh if self._fresh_air else self.ach_recirc) / 3600.0

    # --- what sensors read ----------------------------------------------------
    @property
    def temperature(self) -> float:
        self._sync()
        return self._temp

    @property
    def humidity(self) -> float:
        self._sync()
        return relative_humidity(self._temp, self._ah)

    @property
    def co2(self) -> float:
        self._sync()
        return self._co2

    @property
    def lux(self) -> float:
        return self._lux

    # --- knobs for tests and the demo ------------------------------------------
    @property
    def occupants(self) -> int:
        return self._occupants

    @occupants.setter
    def occupants(self, n: int) -> None:
        if n < 0:
            raise ValueError("occupants must be >= 0")
        self._sync()
        self._occupants = n

    @property
    def fresh_air(self) -> bool:
        return self._fresh_air

    @fresh_air.setter
    def fresh_air(self, on: bool) -> None:
        self._sync()
        self._fresh_air = bool(on)

    def set_co2(self, ppm: float) -> None:
        self._sync()
        self._co2 = float(ppm)

    def set_temperature(self, t_c: float) -> None:
        """Jump the air temperature; the water content stays, so %RH moves."""
        self._sync()
        self._temp = float(t_c)
        self._ah = min(self._ah, absolute_humidity(self._temp, 100.0))

    def set_humidity(self, rh: float) -> None:
        self._sync()
        self._ah = absolute_humidity(self._temp, max(0.0, min(100.0, rh)))

    def set_light(self, light: float | str) -> None:
        """A lux value, or a scene name from :data:`LIGHT` (day, overcast, dusk, tunnel, night)."""
        if isinstance(light, str):
            try:
                self._lux = LIGHT[light]
            except KeyError:
                raise ValueError(f"unknown light scene {light!r}; one of {sorted(LIGHT)}") from None
        else:
            self._lux = max(0.0, float(light))
