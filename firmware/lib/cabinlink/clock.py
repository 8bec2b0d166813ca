# Injectable time source with MicroPython ticks_ms semantics (spec 2.3).
# Core code never does arithmetic on ticks itself: it asks the clock, so the
# same code is right on ESP32 (period 2**30), on the unix port and on CPython.
import time

_PERIOD = 1 << 30  # ESP32 and every 32-bit port
_HALF = _PERIOD >> 1


class Clock:
    # The board's own ticks_ms; on CPython an emulation with the ESP32 period.
    def __init__(self):
        try:
            self.ticks_ms = time.ticks_ms
            self.ticks_diff = time.ticks_diff
            self.ticks_add = time.ticks_add
        except AttributeError:
            self.ticks_ms = self._cpython_ticks_ms
            self.ticks_diff = wrap_diff
            self.ticks_add = wrap_add

    @staticmethod
    def _cpython_ticks_ms():
        return (time.monotonic_ns() // 1000000) & (_PERIOD - 1)


def wrap_diff(a, b):
    # ticks_diff(a, b) for period 2**30: signed a - b in [-2**29, 2**29).
    return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF


def wrap_add(t, d):
    if not -_HALF < d < _HALF:
        raise OverflowError("ticks interval overflow")
    return (t + d) & (_PERIOD - 1)


class ManualClock:
    # A clock that moves only when told to: tests and replays of recorded traffic.
    # Starts near the wrap point on purpose so wraparound bugs show at once.
    def __init__(self, start=_PERIOD - 5000):
        self.now = start & (_PERIOD - 1)

    def ticks_ms(self):
        return self.now

    def advance(self, ms):
        self.now = (self.now + ms) & (_PERIOD - 1)

    ticks_diff = staticmethod(wrap_diff)
    ticks_add = staticmethod(wrap_add)
