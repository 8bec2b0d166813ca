# The ambient sensor's decisions, free of hardware and of asyncio so they are
# tested alone (tests/mp/test_ambient_logic.py): the air-quality rule with
# hysteresis, a sensor's status from its answers, the unit's health.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from cabinlink import msg

# Every environment status enum of the registry has these values.
OK = const(0)
WARMING_UP = const(1)
FAULT = const(2)
NOT_PRESENT = const(3)
GOOD = const(0)  # co2.level
POOR = const(1)

_RETRY_FIRST_MS = const(100)  # a single failure: try again at once
_RETRY_MIN_MS = const(500)  # then back off, doubling ...
_RETRY_MAX_MS = const(30000)  # ... up to this
_GRACE_MS = const(2000)  # a sensor silent this long after boot is not fitted


def clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


class AirQuality:
    # co2.level: poor once the value reaches high, good again only below
    # high - hysteresis, so noise around the threshold changes nothing.
    def __init__(self, high, hysteresis):
        self.high = high
        self.hysteresis = hysteresis
        self.level = GOOD

    def update(self, ppm):
        # -> True when the level changed (one air_quality event).
        if self.level == GOOD:
            if ppm >= self.high:
                self.level = POOR
                return True
        elif ppm < self.high - self.hysteresis:
            self.level = GOOD
            return True
        return False


class SensorState:
    # A sensor's registry status from what it did:
    #   warming_up  at boot, until the first good sample;
    #   ok          after a good sample;
    #   fault       two failures in a row once the sensor has answered
    #               (one failure alone is retried at once, unseen);
    #   not_present it never answered in the first _GRACE_MS.
    # Failures are retried with back-off; the next good sample means ok.
    def __init__(self, clock):
        self.clock = clock
        self.born = clock.ticks_ms()
        self.status = WARMING_UP
        self.seen = False  # it answered at least once
        self.fails = 0  # failures in a row

    def answered(self):
        # The chip acknowledged a command (no sample yet).
        self.seen = True
        if self.status == NOT_PRESENT:
            self.status = WARMING_UP
            return True
        return False

    def good(self):
        # A good sample; -> True when the status changed.
        self.seen = True
        self.fails = 0
        if self.status != OK:
            self.status = OK
            return True
        return False

    def failed(self):
        # -> (status changed, ms to wait before the next try)
        self.fails += 1
        n = self.fails
        old = self.status
        if self.seen:
            if n >= 2:
                self.status = FAULT
        elif self.clock.ticks_diff(self.clock.ticks_ms(), self.born) >= _GRACE_MS:
            self.status = NOT_PRESENT
        if n == 1:
            wait = _RETRY_FIRST_MS
        else:
            wait = _RETRY_MIN_MS << (n - 2 if n < 12 else 10)
            if wait > _RETRY_MAX_MS:
                wait = _RETRY_MAX_MS
        return self.status != old, wait


def health(statuses):
    # HEARTBEAT health from the sensors' statuses: warning when none works,
    # caution when one failed, advisory when one is missing, else nominal.
    n = fault = missing = 0
    for st in statuses:
        n += 1
        if st == FAULT:
            fault += 1
        elif st == NOT_PRESENT:
            missing += 1
    if n and fault + missing == n:
        return msg.HEALTH_WARNING
    if fault:
        return msg.HEALTH_CAUTION
    if missing:
        return msg.HEALTH_ADVISORY
    return msg.HEALTH_NOMINAL
