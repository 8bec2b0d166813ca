# Brushed DC motor behind an H-bridge with two PWM inputs (DRV8833 / TB6612FNG
# IN1/IN2 style), with optional current sense on an ADC pin.
#
# Takes two machine.PWM objects (any frequency; 20 kHz is inaudible) and an
# optional machine.ADC; never creates them. Input truth table of such bridges:
#   A=PWM B=0  drive "forward" (positive duty)
#   A=0 B=PWM  drive "reverse" (negative duty)
#   A=0 B=0    coast: outputs off, the motor turns freely (also the state of a
#              powered-down or resetting board: the bridge's inputs pull down)
#   A=1 B=1    brake: both low-side switches on, the motor is shorted
# Current sense: the sense amplifier's volts on the ADC (read_uv, calibrated
# by the port) times `ma_per_v` (e.g. 2000 for 0.5 V/A), minus `offset_ma`.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

FULL = const(65535)


class HBridge:
    def __init__(self, pwm_a, pwm_b, adc=None, ma_per_v=2000, offset_ma=0):
        self._a = pwm_a
        self._b = pwm_b
        self.adc = adc
        self.ma_per_v = ma_per_v
        self.offset_ma = offset_ma
        self.duty = 0  # signed, as last set; 0 coast
        self.braking = False
        self.coast()

    def drive(self, duty):
        # duty: -65535..65535 (clipped); the side going idle is set first so the
        # two inputs are never both driven by a direction change.
        if duty > FULL:
            duty = FULL
        elif duty < -FULL:
            duty = -FULL
        if duty >= 0:
            self._b.duty_u16(0)
            self._a.duty_u16(duty)
        else:
            self._a.duty_u16(0)
            self._b.duty_u16(-duty)
        self.duty = duty
        self.braking = False

    def coast(self):
        self._a.duty_u16(0)
        self._b.duty_u16(0)
        self.duty = 0
        self.braking = False

    def brake(self):
        self._a.duty_u16(FULL)
        self._b.duty_u16(FULL)
        self.duty = 0
        self.braking = True

    stop = coast

    def current_ma(self):
        # Motor current in mA (0 without a sense ADC); never negative.
        if self.adc is None:
            return 0
        ma = (self.adc.read_uv() // 1000) * self.ma_per_v // 1000 - self.offset_ma
        return ma if ma > 0 else 0
