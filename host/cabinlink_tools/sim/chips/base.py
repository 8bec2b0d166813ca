"""Contracts shared by the chip models: the clock, the I2C target, the environment.

A chip model is a passive object: it changes state only when the world calls it (an I2C
transaction, a pin change) and reads the time from an injected :data:`Clock`, so a test
steps time by hand and the world runs it on ``time.monotonic``. Models are not
thread-safe; the world calls them under its lock.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
"""Seconds, monotonic. Injected; ``time.monotonic`` by default."""

DEFAULT_CLOCK: Clock = time.monotonic


class Environment(Protocol):
    """What a sensor model samples: the air around it (a :class:`~..cabin.Cabin`)."""

    @property
    def temperature(self) -> float:
        """Air temperature, °C."""

    @property
    def humidity(self) -> float:
        """Relative humidity, %RH (0..100)."""

    @property
    def co2(self) -> float:
        """CO2 concentration, ppm."""

    @property
    def lux(self) -> float:
        """Illuminance at the sensor, lux."""


class I2CTarget:
    """Contract for a device on a simulated I2C bus (template methods after python-can).

    The world calls :meth:`i2c_write` once per write transaction (START, address+W, the
    bytes, STOP) and :meth:`i2c_read` once per read transaction (START, address+R, ``n``
    bytes, STOP). A write with ``stop=False`` followed by a read (repeated START) arrives
    as ``i2c_write(...)`` then ``i2c_read(...)``. An empty write is an address probe
    (``I2C.scan()``).

    Returning ``False`` / ``None`` is a NACK: the firmware's ``machine.I2C`` raises
    ``OSError(19)`` (ENODEV), as on an ESP32. Subclasses implement :meth:`on_write` and
    :meth:`on_read`; the public methods add the test hook :attr:`fail` (NACK everything,
    as an unplugged or dead chip) and count transactions.
    """

    address: int

    def __init__(self, address: int) -> None:
        if not 0 <= address <= 0x7F:
            raise ValueError(f"I2C address {address:#x} is not 7-bit")
        self.address = address
        self.fail = False
        self.writes = 0
        self.reads = 0

    def i2c_write(self, data: bytes) -> bool:
        """One whole write transaction; False = NACK."""
        self.writes += 1
        if self.fail:
            return False
        return self.on_write(bytes(data))

    def i2c_read(self, n: int) -> bytes | None:
        """One whole read transaction of ``n`` bytes; None = NACK."""
        self.reads += 1
        if self.fail or n < 0:
            return None
        out = self.on_read(n)
        if out is None:
            return None
        out = bytes(out[:n])
        return out + b"\xff" * (n - len(out))  # past the chip's data SDA stays high

    def on_write(self, data: bytes) -> bool:
        raise NotImplementedError

    def on_read(self, n: int) -> bytes | None:
        raise NotImplementedError


class I2CBus:
    """A bus of targets by address: routing, NACK for an empty address, ``scan()``.

    The world may keep its own routing table; this one serves tests and small set-ups.
    """

    def __init__(self, *targets: I2CTarget) -> None:
        self.targets: dict[int, I2CTarget] = {}
        for t in targets:
            self.attach(t)

    def attach(self, target: I2CTarget) -> I2CTarget:
        if target.address in self.targets:
            raise ValueError(f"address {target.address:#04x} is already taken on this bus")
        self.targets[target.address] = target
        return target

    def write(self, address: int, data: bytes) -> bool:
        t = self.targets.get(address)
        return t is not None and t.i2c_write(data)

    def read(self, address: int, n: int) -> bytes | None:
        t = self.targets.get(address)
        return None if t is None else t.i2c_read(n)

    def scan(self) -> list[int]:
        """Addresses 0x08..0x77 that ACK an empty write, as ``machine.I2C.scan()``."""
        return [a for a in range(0x08, 0x78) if self.write(a, b"")]
