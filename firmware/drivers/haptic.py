# Vibration motor (ERM) behind a transistor, driven by PWM: pulse() starts it
# and returns at once; poll() stops it when the pulse is over
# (docs/accessories/controller.md "Haptic").
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_FULL = const(65535)


class Haptic:
    # pwm: a machine.PWM on the motor pin, made by the caller (its frequency
    # too). min_percent: duty at strength 1, so that a weak pulse still
    # starts the motor; strength 100 is always full duty.
    def __init__(self, pwm, clock, min_percent=0):
        self.pwm = pwm
        self.clock = clock
        self._lo = min_percent * _FULL // 100
        self._until = 0
        self.active = False
        pwm.duty_u16(0)

    def duty(self, strength):
        # duty_u16 for a strength of 0..100 percent.
        if strength <= 0:
            return 0
        return self._lo + (_FULL - self._lo) * min(strength, 100) // 100

    def pulse(self, duration_ms, strength=100):
        # A pulse while one runs replaces it (new strength, new end).
        d = self.duty(strength)
        if d == 0:
            self.stop()
            return
        self.pwm.duty_u16(d)
        self._until = self.clock.ticks_add(self.clock.ticks_ms(), duration_ms)
        self.active = True

    def stop(self):
        self.pwm.duty_u16(0)
        self.active = False

    def poll(self, now):
        if self.active and self.clock.ticks_diff(now, self._until) >= 0:
            self.stop()
