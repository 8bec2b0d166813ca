"""Chip and device models for the simulated world, one module per chip family.

* :mod:`.base` — the contracts: :data:`~.base.Clock`, :class:`~.base.I2CTarget`,
  :class:`~.base.Environment`, and a small :class:`~.base.I2CBus`.
* :mod:`.pins` — :class:`~.pins.SimPin`, one GPIO as the world sees it.
* :mod:`.sensirion`, :mod:`.sht4x`, :mod:`.scd4x` — Sensirion CRC framing, SHT4x, SCD4x.
* :mod:`.bh1750` — the ROHM light sensor.
* :mod:`.gpio_devices` — button, encoder, servo, H-bridge clamp motor, WS2812, charger
  status, NTC.

Every model takes its time from an injected clock and changes only when called, so
tests step time by hand. Each module's text says what is modelled and what is not.
"""
from .base import DEFAULT_CLOCK, Clock, Environment, I2CBus, I2CTarget
from .bh1750 import Bh1750
from .gpio_devices import (Button, ChargerStatus, HBridgeMotor, Ntc, QuadratureEncoder, Servo,
                           Ws2812)
from .pins import IN, OPEN_DRAIN, OUT, PULL_DOWN, PULL_UP, SimPin
from .scd4x import Scd4x
from .sht4x import Sht4x

__all__ = [
    "DEFAULT_CLOCK", "Clock", "Environment", "I2CBus", "I2CTarget", "SimPin",
    "IN", "OUT", "OPEN_DRAIN", "PULL_DOWN", "PULL_UP",
    "Sht4x", "Scd4x", "Bh1750",
    "Button", "QuadratureEncoder", "Servo", "HBridgeMotor", "Ws2812", "ChargerStatus", "Ntc",
]
