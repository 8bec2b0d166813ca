# Wireless charger supervision (docs/accessories/mount.md "Wireless charger"),
# without hardware: coil temperature from an NTC divider, the charger IC's
# "charging" line, and the enable decision with an over-temperature cut-off.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import math

OFF = const(0)
IDLE = const(1)
CHARGING = const(2)
FULL = const(3)  # not wired on the reference boards: never reported
FAULT = const(4)
OVER_TEMPERATURE = const(5)

_T_MIN = const(-4000)  # the registry range of temperature, centi-degC
_T_MAX = const(12500)
_SHORT_MV = const(50)  # below: NTC shorted (or > ~150 degC)
_OPEN_MV = const(3050)  # above: NTC open, or colder than about -20 degC (ADC full scale)


def ntc_centi_c(mv, vref_mv=3300, series=10000, r25=10000, beta=3950):
    # NTC from the ADC pin to ground, `series` ohms from vref to the pin (beta
    # equation). Returns centi-degC, or None when the reading is implausible.
    if mv <= _SHORT_MV or mv >= _OPEN_MV or mv >= vref_mv:
        return None
    r = series * mv / (vref_mv - mv)
    t = 1 / (math.log(r / r25) / beta + 1 / 298.15) - 273.15
    c = int(t * 100 + (0.5 if t >= 0 else -0.5))
    if c < _T_MIN:
        return _T_MIN
    return _T_MAX if c > _T_MAX else c


class Charger:
    # update() takes the latest readings and returns the new state; `enable`
    # is what the charger's enable line must be. Over-temperature latches at
    # cutoff and clears at cutoff - hysteresis, whatever `enabled` does, so
    # toggling enabled never skips the cool-down.
    def __init__(self, cutoff=6000, hysteresis=500, power_mw=5000, enabled=True):
        self.cutoff = cutoff
        self.hysteresis = hysteresis
        self.power_mw_charging = power_mw
        self.enabled = enabled
        self.hot = False
        self.state = OFF
        self.temperature = None  # centi-degC, None until a plausible reading
        self.power_mw = 0
        self.enable = False

    def update(self, temp, charging):
        # temp: centi-degC or None (sensor fault); charging: the IC's line.
        self.temperature = temp
        if temp is not None:
            if self.hot:
                if temp <= self.cutoff - self.hysteresis:
                    self.hot = False
            elif temp >= self.cutoff:
                self.hot = True
        if not self.enabled:
            st = OFF
        elif temp is None:
            st = FAULT  # no temperature, no charging
        elif self.hot:
            st = OVER_TEMPERATURE
        elif charging:
            st = CHARGING
        else:
            st = IDLE
        self.enable = st == IDLE or st == CHARGING
        self.power_mw = self.power_mw_charging if st == CHARGING else 0
        changed = st != self.state
        self.state = st
        return changed
