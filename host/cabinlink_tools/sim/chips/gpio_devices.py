"""Devices on GPIOs: buttons, a rotary encoder, a servo, an H-bridge clamp motor, WS2812
LEDs, a charger status line, an NTC thermistor.

Contacts (button, encoder, limit switch, charger status) are open-drain to ground when
``active_low``: closed drives the pin 0, open leaves it undriven, so the firmware must
enable ``Pin.PULL_UP`` exactly as on a board without resistors; ``external_pull=True``
models a board with a pull-up resistor (open drives 1).

Helpers that take time (``Button.hold``, ``QuadratureEncoder.turn``) call the injected
``sleep`` between edges and apply each edge under the optional ``lock`` (the world's
lock), never sleeping while holding it.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from .base import DEFAULT_CLOCK, Clock
from .pins import OPEN_DRAIN, OUT, SimPin

Sleep = Callable[[float], None]
Lock = AbstractContextManager[object]


class _Contact:
    """A switch to ground (active low) or to the supply (active high) on one pin."""

    def __init__(self, pin: SimPin, active_low: bool, external_pull: bool) -> None:
        self.pin = pin
        self.active_low = active_low
        self.external_pull = external_pull

    def set(self, closed: bool) -> None:
        active = 0 if self.active_low else 1
        if closed:
            self.pin.drive = active
        else:
            self.pin.drive = (1 - active) if self.external_pull else None


class Button:
    """A push button. ``bounce`` > 0 adds 1..bounce extra toggle pairs on every edge
    (seeded), ``bounce_interval`` seconds apart (0: all at once)."""

    def __init__(self, pin: SimPin, active_low: bool = True, *, external_pull: bool = False,
                 bounce: int = 0, bounce_interval: float = 0.0, seed: int = 0,
                 sleep: Sleep = time.sleep, lock: Lock | None = None) -> None:
        self._contact = _Contact(pin, active_low, external_pull)
        self.pin = pin
        self.bounce = bounce
        self.bounce_interval = bounce_interval
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._lock = lock if lock is not None else nullcontext()
        self.pressed = False
        with self._lock:
            self._contact.set(False)

    def _edge(self, pressed: bool) -> None:
        extra = self._rng.randint(1, self.bounce) if self.bounce > 0 else 0
        # a bouncing contact: target, other, target, ..., target
        states = [pressed, not pressed] * extra + [pressed]
        for i, state in enumerate(states):
            if i and self.bounce_interval:
                self._sleep(self.bounce_interval)
            with self._lock:
                self._contact.set(state)
        self.pressed = pressed

    def press(self) -> None:
        self._edge(True)

    def release(self) -> None:
        self._edge(False)

    def hold(self, seconds: float) -> None:
        """Press, wait ``seconds`` with the injected sleep, release."""
        self.press()
        self._sleep(seconds)
        self.release()


# Gray cycle of (A, B) levels; stepping forward = clockwise = A leads B.
GRAY = ((1, 1), (0, 1), (0, 0), (1, 0))


class QuadratureEncoder:
    """A mechanical rotary encoder (EC11-like): two contacts, rest state both open (1, 1)
    with pull-ups. ``detent_steps`` Gray steps per detent (4, 2 or 1). Positive detents
    are clockwise: A changes before B."""

    def __init__(self, pin_a: SimPin, pin_b: SimPin, detent_steps: int = 4, *,
                 step_interval: float = 0.002, active_low: bool = True,
                 external_pull: bool = False, sleep: Sleep = time.sleep,
                 lock: Lock | None = None) -> None:
        if detent_steps not in (1, 2, 4):
            raise ValueError("detent_steps is 1, 2 or 4")
        self.pin_a, self.pin_b = pin_a, pin_b
        self._a = _Contact(pin_a, active_low, external_pull)
        self._b = _Contact(pin_b, active_low, external_pull)
        self.active_low = active_low
        self.detent_steps = detent_steps
        self.step_interval = step_interval
        self._sleep = sleep
        self._lock = lock if lock is not None else nullcontext()
        self.steps = 0  # Gray steps from the start, signed
        with self._lock:
            self._apply(GRAY[0])

    @property
    def detents(self) -> int:
        return self.steps // self.detent_steps

    @property
    def state(self) -> tuple[int, int]:
        return GRAY[self.steps % 4]

    def sequence(self, detents: int) -> list[tuple[int, int]]:
        """The (A, B) levels ``turn(detents)`` will produce, one per Gray step."""
        d = 1 if detents >= 0 else -1
        return [GRAY[(self.steps + d * (i + 1)) % 4]
                for i in range(abs(detents) * self.detent_steps)]

    def _apply(self, ab: tuple[int, int]) -> None:
        # a contact is closed when its logic level is the active one
        active = 0 if self.active_low else 1
        self._a.set(ab[0] == active)
        self._b.set(ab[1] == active)

    def turn(self, detents: int) -> None:
        """Turn by ``detents`` (signed), one Gray step every ``step_interval`` seconds."""
        d = 1 if detents >= 0 else -1
        for i, ab in enumerate(self.sequence(detents)):
            if i and self.step_interval:
                self._sleep(self.step_interval)
            with self._lock:
                self._apply(ab)
                self.steps += d


class Servo:
    """A hobby servo on a PWM pin: 500..2500 µs pulses map to 0..180° (clamped at the
    end stops); ``angle`` is None without PWM, with a 0 % duty or at a frequency that
    is not about 50 Hz (40..60 Hz). Moves instantly (no slew rate)."""

    def __init__(self, pin: SimPin, *, min_us: float = 500.0, max_us: float = 2500.0,
                 range_deg: float = 180.0) -> None:
        self.pin = pin
        self.min_us, self.max_us, self.range_deg = min_us, max_us, range_deg

    @property
    def pulse_us(self) -> float | None:
        duty = self.pin.pwm_fraction()
        if not duty:
            return None
        return duty * 1e6 / self.pin.pwm_freq

    @property
    def angle(self) -> float | None:
        pulse = self.pulse_us
        if pulse is None or not 40 <= self.pin.pwm_freq <= 60:
            return None
        pulse = max(self.min_us, min(self.max_us, pulse))
        return (pulse - self.min_us) / (self.max_us - self.min_us) * self.range_deg


class HBridgeMotor:
    """A DC gear motor behind an H-bridge, driving a phone clamp.

    Inputs: ``in_a`` and ``in_b`` (PWM duty or a plain OUT level); the drive is
    ``u = duty_a − duty_b`` in −1..1: positive closes the clamp (position towards 1),
    negative opens it (towards 0); both high or both low brakes (no motion). Speed is
    ``u / travel_time`` positions per second, no inertia.

    Load: the clamp meets the phone at ``phone_at`` (None: no phone) and can squeeze
    ``compliance`` further, the current rising linearly from ``free_current`` to
    ``stall_current``; at the end of travel (fully open 0, fully closed 1, the squeezed
    phone, or an obstruction from :meth:`stall_at`) it stalls and draws
    ``stall_current``. Currents scale with |u| (average voltage). The current sense
    reads ``volts_per_amp`` V/A on ``current_adc_pin`` (clipped at ``vref``). The limit
    switch on ``limit_pin`` closes at fully open (position ≤ ``limit_at``).

    Motion is integrated lazily: on every input change and ADC read and on
    :meth:`advance`, which the world should also call regularly (e.g. every 5 ms) so the
    limit-switch edge comes on time.
    """

    def __init__(self, in_a: SimPin, in_b: SimPin, current_adc_pin: SimPin, limit_pin: SimPin,
                 clock: Clock = DEFAULT_CLOCK, *, travel_time: float = 2.0,
                 phone_at: float | None = 0.7, compliance: float = 0.03,
                 free_current: float = 0.12, stall_current: float = 1.2,
                 volts_per_amp: float = 0.5, vref: float = 3.3, limit_at: float = 0.005,
                 limit_active_low: bool = True, external_pull: bool = False,
                 position: float = 0.0) -> None:
        self.in_a, self.in_b = in_a, in_b
        self.clock = clock
        self.travel_time = travel_time
        self.phone_at = phone_at
        self.compliance = compliance
        self.free_current = free_current
        self.stall_current = stall_current
        self.volts_per_amp = volts_per_amp
        self.vref = vref
        self.limit_at = limit_at
        self._limit = _Contact(limit_pin, limit_active_low, external_pull)
        self.limit_pin = limit_pin
        self.current_adc_pin = current_adc_pin
        self._pos = max(0.0, min(1.0, position))
        self._obstruction: float | None = None
        self._t = clock()
        self._u = 0.0
        self._u = self._drive()
        for p in (in_a, in_b):
            p.listeners.append(self._on_input)
        current_adc_pin.adc_volts = self.sense_volts
        self._update_limit()

    # --- inputs ---------------------------------------------------------------
    @staticmethod
    def _level(pin: SimPin) -> float:
        duty = pin.pwm_fraction()
        if duty is not None:
            return duty
        return float(pin.level()) if pin.mode in (OUT, OPEN_DRAIN) else 0.0

    def _drive(self) -> float:
        return self._level(self.in_a) - self._level(self.in_b)

    def _on_input(self, pin: SimPin, old: int, new: int) -> None:
        self.advance()
        self._u = self._drive()

    # --- mechanics ------------------------------------------------------------
    def _close_end(self) -> float:
        end = 1.0
        if self.phone_at is not None:
            end = min(end, self.phone_at + self.compliance)
        if self._obstruction is not None:
            end = min(end, self._obstruction)
        return end

    def advance(self) -> None:
        """Integrate the motion up to the clock's now; update the limit switch."""
        now = self.clock()
        dt, self._t = max(0.0, now - self._t), now
        if dt and self._u:
            step = self._u * dt / self.travel_time
            if step > 0:
                end = self._close_end()
                if self._pos < end:
                    self._pos = min(end, self._pos + step)
            else:
                self._pos = max(0.0, self._pos + step)
        self._update_limit()

    def _update_limit(self) -> None:
        self._limit.set(self._pos <= self.limit_at)

    @property
    def position(self) -> float:
        """0 = fully open .. 1 = fully closed."""
        self.advance()
        return self._pos

    @property
    def drive(self) -> float:
        return self._u

    @property
    def stalled(self) -> bool:
        self.advance()
        if self._u > 0:
            return self._pos >= self._close_end()
        if self._u < 0:
            return self._pos <= 0.0
        return False

    @property
    def current(self) -> float:
        """Motor current, A."""
        self.advance()
        u = abs(self._u)
        if not u:
            return 0.0
        if self.stalled:
            return self.stall_current * u
        if self._u > 0 and self.phone_at is not None and self._pos > self.phone_at:
            squeeze = min(1.0, (self._pos - self.phone_at) / self.compliance)
            return u * (self.free_current + (self.stall_current - self.free_current) * squeeze)
        return u * self.free_current

    def sense_volts(self) -> float:
        """What the ADC on ``current_adc_pin`` reads, V."""
        return min(self.vref, self.current * self.volts_per_amp)

    # --- test hooks -----------------------------------------------------------
    def stall_at(self, position: float | None) -> None:
        """An obstruction: closing stops at ``position`` (None removes it)."""
        self.advance()
        self._obstruction = position

    def set_phone(self, position: float | None) -> None:
        """Put a phone in the clamp (met at ``position``) or take it out (None)."""
        self.advance()
        self.phone_at = position


class Ws2812:
    """A WS2812 chain of ``n`` LEDs on ``pin``: :meth:`bitstream` takes the GRB bytes
    ``machine.bitstream(pin, 0, timing, buf)`` wrote (the world's bitstream sink) and
    updates :attr:`pixels` as (r, g, b). Fewer bytes update the first LEDs only; bytes
    past the chain are counted in :attr:`overflow` (they would go to a next chain)."""

    def __init__(self, pin: SimPin, n: int) -> None:
        self.pin = pin
        self.n = n
        self.pixels: list[tuple[int, int, int]] = [(0, 0, 0)] * n
        self.frames = 0
        self.overflow = 0
        self.timing: tuple[int, ...] | None = None

    def bitstream(self, data: bytes, timing: tuple[int, ...] | None = None) -> None:
        data = bytes(data)
        for i in range(min(self.n, len(data) // 3)):
            g, r, b = data[3 * i:3 * i + 3]
            self.pixels[i] = (r, g, b)
        self.overflow = max(0, len(data) - 3 * self.n)
        self.frames += 1
        self.timing = timing

    __call__ = bitstream


class ChargerStatus:
    """A charger IC's active-low open-drain "charging" output (e.g. TP4056 CHRG)."""

    def __init__(self, pin: SimPin, *, charging: bool = False, external_pull: bool = False) -> None:
        self.pin = pin
        self._contact = _Contact(pin, True, external_pull)
        self.charging = charging

    @property
    def charging(self) -> bool:
        return self._charging

    @charging.setter
    def charging(self, on: bool) -> None:
        self._charging = bool(on)
        self._contact.set(self._charging)


class Ntc:
    """An NTC thermistor from the ADC pin to ground, ``series`` ohms from ``vref`` to the
    pin: V = vref · R / (R + series), R = r25 · exp(beta · (1/T − 1/298.15)).
    The temperature is :attr:`temperature_c`, or ``source()`` when given."""

    def __init__(self, adc_pin: SimPin, *, beta: float = 3950.0, r25: float = 10_000.0,
                 series: float = 10_000.0, vref: float = 3.3, temperature_c: float = 25.0,
                 source: Callable[[], float] | None = None) -> None:
        self.pin = adc_pin
        self.beta, self.r25, self.series, self.vref = beta, r25, series, vref
        self.temperature_c = temperature_c
        self.source = source
        adc_pin.adc_volts = self.voltage

    def resistance(self, t_c: float) -> float:
        return self.r25 * math.exp(self.beta * (1 / (t_c + 273.15) - 1 / 298.15))

    def voltage(self) -> float:
        t = self.source() if self.source is not None else self.temperature_c
        r = self.resistance(t)
        return self.vref * r / (r + self.series)

    def temperature_at(self, volts: float) -> float:
        """The inverse, °C, for checking firmware conversions."""
        r = self.series * volts / (self.vref - volts)
        return 1 / (math.log(r / self.r25) / self.beta + 1 / 298.15) - 273.15
