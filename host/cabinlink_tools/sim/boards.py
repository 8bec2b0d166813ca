"""Simulated boards built from ``boards/<board>.json``: which chip on which bus or pin.

A board file names the chip, its buses (I2C, SPI), its CAN controller and, per app, the
devices wired to it (the same board carries a different accessory per app, so pins may be
reused between apps). :func:`build` turns one (board, app) pair into a :class:`SimBoard`
with its device models attached, ready for a firmware process.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cabin import Cabin
from .chips.base import Clock, I2CTarget
from .chips.bh1750 import Bh1750
from .chips.gpio_devices import (Button, ChargerStatus, HBridgeMotor, Ntc, QuadratureEncoder,
                                 Servo, Ws2812)
from .chips.pins import SimPin
from .chips.scd4x import Scd4x
from .chips.sht4x import Sht4x
from .world import SimBoard, World

__all__ = ["APPS", "BOARDS_DIR", "Devices", "board_names", "build", "load"]

from .cli_args import APPS, BOARDS_DIR  # noqa: E402  (one definition, light to import)


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json") if not p.stem.endswith("schema"))


def load(board: str) -> dict[str, Any]:
    """The board description; ValueError naming the board when it does not exist."""
    path = BOARDS_DIR / f"{board}.json"
    if not path.exists():
        raise ValueError(f"unknown board {board!r}; known boards: {', '.join(board_names())}")
    with open(path, encoding="utf-8") as f:
        spec: dict[str, Any] = json.load(f)
    return spec


@dataclass
class Devices:
    """The device models wired to one simulated board (None where the app has none)."""

    sensors: dict[str, I2CTarget] = field(default_factory=dict)
    buttons: list[Button] = field(default_factory=list)
    encoder: QuadratureEncoder | None = None
    encoder_switch: Button | None = None
    leds: Ws2812 | None = None
    haptic: SimPin | None = None
    status_led: SimPin | None = None
    motor: HBridgeMotor | None = None
    servo: Servo | None = None
    phone_sense: Button | None = None
    charger: ChargerStatus | None = None
    ntc: Ntc | None = None
    can: Any = None  # the CAN controller model (MCP2515) when the board has one


def build(world: World, board: str, app: str, name: str, unique_id: bytes, cabin: Cabin,
          clock: Clock, can_attach: Any = None) -> tuple[SimBoard, Devices]:
    """Create board ``name`` from ``boards/<board>.json`` wired for ``app``.

    ``can_attach(board, spec)`` joins the board's CAN controller to the bus and returns the
    controller model (or None for an on-chip controller, whose address it sets on the
    board). Devices that act over time (buttons, encoder) take the world lock per edge.
    """
    spec = load(board)
    wiring = spec.get("apps", {}).get(app)
    if wiring is None:
        raise ValueError(f"board {board!r} has no wiring for app {app!r} "
                         f"(it has: {', '.join(spec.get('apps', {})) or 'none'})")
    sb = world.add_board(SimBoard(name, spec["chip"], unique_id, spec=spec,
                                  variant=spec.get("micropython", {}).get("variant", "ESP32_GENERIC")))
    dev = Devices()
    lock = world.lock
    i2c = spec.get("i2c")
    for kind, model in (("sht4x", Sht4x), ("scd4x", Scd4x), ("bh1750", Bh1750)):
        if kind in wiring:
            if i2c is None:
                raise ValueError(f"board {board!r}: {kind} needs an i2c bus")
            chip = model(wiring[kind]["addr"], env=cabin, clock=clock)
            sb.attach_i2c(i2c["scl"], i2c["sda"], chip)
            dev.sensors[kind] = chip
    dev.buttons = [Button(sb.pin(p), lock=lock) for p in wiring.get("buttons", [])]
    enc = wiring.get("encoder")
    if enc:
        dev.encoder = QuadratureEncoder(sb.pin(enc["a"]), sb.pin(enc["b"]), lock=lock)
        if "switch" in enc:
            dev.encoder_switch = Button(sb.pin(enc["switch"]), lock=lock)
    leds = wiring.get("leds")
    if leds:
        dev.leds = Ws2812(sb.pin(leds["pin"]), leds["count"])
        sb.bitstream_sinks[leds["pin"]] = dev.leds.bitstream
    if "haptic" in wiring:
        dev.haptic = sb.pin(wiring["haptic"])
    if "status_led" in spec:
        dev.status_led = sb.pin(spec["status_led"])
    # A contact on a pin without an internal pull (ESP32 GPIO 34-39) only works with the
    # pull-up resistor such a board must fit: model that resistor.
    def ext(n: int) -> bool:
        return n in sb.facts.no_pull

    m = wiring.get("motor")
    if m:
        dev.motor = HBridgeMotor(sb.pin(m["in_a"]), sb.pin(m["in_b"]), sb.pin(m["current_adc"]),
                                 sb.pin(m["limit"]), clock, external_pull=ext(m["limit"]))
        world.tickers.append(dev.motor.advance)  # the limit switch closes on time
    if "servo" in wiring:
        dev.servo = Servo(sb.pin(wiring["servo"]))
    if "phone_sense" in wiring:
        dev.phone_sense = Button(sb.pin(wiring["phone_sense"]), lock=lock)
    ch = wiring.get("charger")
    if ch:
        dev.charger = ChargerStatus(sb.pin(ch["status"]), external_pull=ext(ch["status"]))
        dev.ntc = Ntc(sb.pin(ch["ntc_adc"]))
    if spec.get("can") and can_attach is not None:
        dev.can = can_attach(sb, spec["can"])
    return sb, dev
