"""One GPIO as the world sees it: what the firmware drives, what devices drive, the level.

The firmware side (``machine.Pin``/``PWM``/``ADC`` forwarded by the world) sets
:attr:`SimPin.mode`, :attr:`SimPin.pull`, :attr:`SimPin.out_value`, the PWM fields; a
device model sets :attr:`SimPin.drive` and :attr:`SimPin.adc_volts`. Every change of the
resolved :meth:`SimPin.level` calls the listeners ``fn(pin, old_level, new_level)``;
the world hooks pin IRQs there, devices hook their inputs there.
"""
from __future__ import annotations

from collections.abc import Callable

# machine.Pin constants (ESP32 port)
IN, OUT, OPEN_DRAIN = 1, 3, 7
PULL_DOWN, PULL_UP = 1, 2

Listener = Callable[["SimPin", int, int], None]


class SimPin:
    """A GPIO: mode, pull and output from the firmware; drive and ADC voltage from devices.

    Resolution of :meth:`level`:

    * ``OUT``: the firmware's :attr:`out_value` (a device driving against it is recorded
      as :attr:`contention`, the firmware wins);
    * ``OPEN_DRAIN``: 0 while the firmware pulls low, otherwise as an input;
    * input / unconfigured: the device's :attr:`drive`, else the pull (up 1, down 0),
      else 0 (a floating input reads low here, deterministic instead of random).
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self._mode: int | None = None
        self._pull: int | None = None
        self._out = 0
        self._drive: int | None = None
        self._level = 0
        self.listeners: list[Listener] = []
        self.pwm_freq = 0
        self.pwm_duty_u16: int | None = None
        self.adc_volts: Callable[[], float] | None = None

    def __repr__(self) -> str:
        return (f"SimPin({self.number}, mode={self._mode}, pull={self._pull}, "
                f"out={self._out}, drive={self._drive}, level={self._level})")

    # --- firmware side --------------------------------------------------------
    @property
    def mode(self) -> int | None:
        return self._mode

    @mode.setter
    def mode(self, mode: int | None) -> None:
        if mode not in (None, IN, OUT, OPEN_DRAIN):
            raise ValueError(f"invalid pin mode {mode!r}")
        self._mode = mode
        self._resolve()

    @property
    def pull(self) -> int | None:
        return self._pull

    @pull.setter
    def pull(self, pull: int | None) -> None:
        if pull not in (None, PULL_DOWN, PULL_UP):
            raise ValueError(f"invalid pull {pull!r}")
        self._pull = pull
        self._resolve()

    @property
    def out_value(self) -> int:
        return self._out

    @out_value.setter
    def out_value(self, value: int) -> None:
        self._out = 1 if value else 0
        self._resolve()

    def configure(self, mode: int | None, pull: int | None) -> None:
        """``Pin.init(mode, pull)``: both at once, one resolution."""
        if mode not in (None, IN, OUT, OPEN_DRAIN):
            raise ValueError(f"invalid pin mode {mode!r}")
        if pull not in (None, PULL_DOWN, PULL_UP):
            raise ValueError(f"invalid pull {pull!r}")
        self._mode, self._pull = mode, pull
        self._resolve()

    def set_output(self, value: int) -> None:
        """``Pin.value(x)``: the output latch (kept even while the pin is an input)."""
        self.out_value = value

    def pwm_fraction(self) -> float | None:
        """The PWM duty as 0..1, None when no PWM runs on this pin."""
        if self.pwm_duty_u16 is None or self.pwm_freq <= 0:
            return None
        return max(0, min(self.pwm_duty_u16, 65535)) / 65535

    # --- device side ----------------------------------------------------------
    @property
    def drive(self) -> int | None:
        return self._drive

    @drive.setter
    def drive(self, value: int | None) -> None:
        self._drive = None if value is None else (1 if value else 0)
        self._resolve()

    @property
    def contention(self) -> bool:
        """True while the firmware drives OUT against a device driving the other level."""
        return self._mode == OUT and self._drive is not None and self._drive != self._out

    # --- resolution -----------------------------------------------------------
    def level(self) -> int:
        """The resolved logic level (cached; recomputed on every change)."""
        return self._level

    def _compute(self) -> int:
        if self._mode == OUT:
            return self._out
        if self._mode == OPEN_DRAIN and self._out == 0:
            return 0
        if self._drive is not None:
            return self._drive
        if self._pull == PULL_UP:
            return 1
        return 0

    def _resolve(self) -> None:
        new = self._compute()
        old, self._level = self._level, new
        if new != old:
            for fn in list(self.listeners):
                fn(self, old, new)
