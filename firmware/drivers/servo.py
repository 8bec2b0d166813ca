# Hobby servo on one PWM pin: a pulse every 1/freq s (50 Hz), its width sets
# the angle, min_us at 0 degrees .. max_us at range_deg (500..2500 us over 180
# degrees for most; check the servo's datasheet and narrow them if it buzzes
# against its end stops). Takes a machine.PWM; never creates it.


class Servo:
    def __init__(self, pwm, freq=50, min_us=500, max_us=2500, range_deg=180):
        if not 0 < min_us < max_us < 1000000 // freq or range_deg <= 0:
            raise ValueError("servo: need 0 < min_us < max_us < period, range_deg > 0")
        self.pwm = pwm
        self.period_us = 1000000 // freq
        self.min_us = min_us
        self.max_us = max_us
        self.range_deg = range_deg
        self.deg = None  # last commanded angle, None while off
        pwm.freq(freq)

    def pulse_us(self, us):
        # duty_u16 rounded to the nearest step: 1500 us at 50 Hz -> 4915.
        self.pwm.duty_u16((us * 65535 + self.period_us // 2) // self.period_us)

    def angle(self, deg):
        # Move to deg (int, clipped to 0..range_deg); returns the angle set.
        if deg < 0:
            deg = 0
        elif deg > self.range_deg:
            deg = self.range_deg
        span = self.max_us - self.min_us
        self.pulse_us(self.min_us + (span * deg + self.range_deg // 2) // self.range_deg)
        self.deg = deg
        return deg

    def off(self):
        # No pulses: the servo stops holding its position.
        self.pwm.duty_u16(0)
        self.deg = None
