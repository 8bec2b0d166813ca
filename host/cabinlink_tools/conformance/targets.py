"""What the suite tests, chosen on the command line (after pytest-embedded's ``--target``):

========================================  ====================================================
``sim:<app>[:<runtime>[:<board>]]``       the reference accessory ``app`` (ambient, controller,
                                          mount) on a simulated board, both links on, running
                                          the real firmware under ``cpython`` (default) or
                                          ``micropython``; board default ``esp32-devkitc``
``can:<interface>:<channel>``             a real accessory on a python-can bus at 500 kbit/s
                                          (``can:socketcan:can0``, ``can:pcan:PCAN_USBBUS1``)
``ble:<address>``                         a real accessory over BLE, through bleak
``car:sim`` / ``car:minimal``             a car implementation under test on the simulated
                                          bus: the reference car, or the suite's minimal car
                                          on the host ``CarClient``
========================================  ====================================================

An accessory target gives the suite a python-can bus and/or a BLE central, and says what it
can do beyond the protocol (power-cycle the unit, stimulate an event, vary a value); the
tests skip, with the reason, what a target cannot do.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

APPS = ("ambient", "controller", "mount")
DEFAULT_BOARD = "esp32-devkitc"


@dataclass(frozen=True)
class TargetSpec:
    """A parsed ``--cl-target``."""

    kind: str  # sim | can | ble | car
    text: str
    app: str = ""
    runtime: str = "cpython"
    board: str = DEFAULT_BOARD
    interface: str = ""
    channel: str = ""
    address: str = ""
    car: str = ""

    @property
    def is_car(self) -> bool:
        return self.kind == "car"


def parse_target(text: str) -> TargetSpec:
    """``--cl-target`` text -> :class:`TargetSpec`; ValueError naming what is wrong."""
    kind, _, rest = text.partition(":")
    if kind == "sim":
        parts = rest.split(":") if rest else []
        if not parts or parts[0] not in APPS:
            raise ValueError(f"--cl-target {text!r}: expected sim:<app>[:<runtime>[:<board>]] "
                             f"with app one of {', '.join(APPS)}")
        from ..sim.cli_args import RUNTIMES

        runtime = parts[1] if len(parts) > 1 and parts[1] else "cpython"
        if runtime not in RUNTIMES:
            raise ValueError(f"--cl-target {text!r}: runtime must be one of {', '.join(RUNTIMES)}")
        board = parts[2] if len(parts) > 2 and parts[2] else DEFAULT_BOARD
        return TargetSpec("sim", text, app=parts[0], runtime=runtime, board=board)
    if kind == "can":
        interface, sep, channel = rest.partition(":")
        if not sep or not interface or not channel:
            raise ValueError(f"--cl-target {text!r}: expected can:<python-can interface>:<channel>, "
                             "e.g. can:socketcan:can0")
        return TargetSpec("can", text, interface=interface, channel=channel)
    if kind == "ble":
        if not rest:
            raise ValueError(f"--cl-target {text!r}: expected ble:<address>")
        return TargetSpec("ble", text, address=rest)
    if kind == "car":
        if rest not in ("sim", "minimal"):
            raise ValueError(f"--cl-target {text!r}: expected car:sim (the reference car) or car:minimal")
        return TargetSpec("car", text, car=rest)
    raise ValueError(f"--cl-target {text!r}: the kind must be sim, can, ble or car")


@dataclass
class Stimulus:
    """Something the suite can make the accessory do in the world (not through the
    protocol): ``fire()`` makes it raise events, ``undo()`` puts the world back."""

    what: str
    fire: Callable[[], None]
    undo: Callable[[], None]


@dataclass
class Variation:
    """A reportable attribute the target can make change often: (capability id, attribute
    id), started and stopped by the suite."""

    cap_id: int
    attr_id: int
    start: Callable[[], None]
    stop: Callable[[], None]
    what: str
    int_valued: bool = True
    setup: list[tuple[int, int, Any]] = field(default_factory=list)  # WRITEs (cap, attr, value) first


class AccessoryTarget:
    """Base of the accessory targets. ``has_can``/``has_ble``: links the suite can reach."""

    spec: TargetSpec
    has_can = False
    has_ble = False
    can_power_cycle = False
    can_fault_bus = False

    def prepare(self) -> None:
        """Set up what the suite's links need (before :meth:`start`)."""

    def start(self) -> None:
        """Power the accessory on (where the target can) and wait until it runs."""

    def can_bus(self) -> can.BusABC:
        raise NotImplementedError

    def ble_central(self) -> Any:
        raise NotImplementedError

    def ble_match(self, adv: Any) -> bool:
        return True

    def power_cycle(self) -> None:
        raise NotImplementedError

    def stimulus(self) -> Stimulus | None:
        return None

    def variation(self) -> Variation | None:
        return None

    def bus_off(self) -> None:
        raise NotImplementedError

    def info(self) -> dict[str, str]:
        return {"target": self.spec.text}

    def diagnostics(self) -> dict[str, str]:
        """What the target knows about the run beyond the protocol (for the report)."""
        return {}

    def close(self) -> None: ...


class SimAccessoryTarget(AccessoryTarget):
    """A reference accessory on the simulated board (both links on)."""

    has_can = True
    has_ble = True
    can_power_cycle = True
    can_fault_bus = True

    def __init__(self, spec: TargetSpec, fixture_app: Path | None = None, name: str = "dut") -> None:
        self.spec = spec
        self.fixture_app = fixture_app
        self.name = name
        self.sim: Any = None
        self.acc: Any = None
        self._vary_stop = threading.Event()
        self._vary_thread: threading.Thread | None = None

    def prepare(self) -> None:
        from ..sim.simulation import Simulation

        self.sim = Simulation().start()

    def start(self) -> None:
        from ..sim.simulation import default_config

        cfg = default_config(self.spec.board, self.spec.app, self.name, ble=True)
        extra = [self.fixture_app] if self.fixture_app else []
        self.acc = self.sim.add(self.spec.board, self.spec.app, self.spec.runtime, name=self.name,
                                config=cfg, extra_path=extra)
        self.acc.wait_for("ready", 60)

    def can_bus(self) -> can.BusABC:
        return self.sim.can_peer(receive_own_messages=True)

    def ble_central(self) -> Any:
        from .ble_probe import SimCentral

        return SimCentral(self.sim.ble)

    def ble_match(self, adv: Any) -> bool:
        return self.name.encode() in adv.scan_response

    def power_cycle(self) -> None:
        """Cut the power (SIGKILL: nothing unwritten survives) and wait for the new boot."""
        mark = len(self.acc.log)
        self.acc.cut_power()
        self.acc.wait_for("ready", 60, start=mark)

    def bus_off(self) -> None:
        """The accessory's CAN controller goes bus-off now (TEC 256), as after a run of
        transmit errors; it may leave bus-off only by the rules of spec 7.7."""
        chip = self.acc.devices.can
        if chip is not None:
            # an MCP2515 leaves bus-off by itself after 128 x 11 recessive bits: the fault
            # holds the bus (stuck dominant) for 80 ms, then lets it recover
            chip.force_bus_off(hold=True)
            time.sleep(0.08)
            chip.release_bus_off()
        else:
            self.sim.bus.force_bus_off(self.sim.bus.find(self.name))

    def stimulus(self) -> Stimulus | None:
        acc = self.acc
        if self.spec.app == "controller":
            return Stimulus("button 0 pressed and released", lambda: acc.press(0), lambda: acc.release(0))
        if self.spec.app == "mount":
            return Stimulus("a phone put into the cradle", lambda: acc.insert_phone(), lambda: acc.remove_phone())
        return None

    def variation(self) -> Variation | None:
        from cabinlink import registry as reg

        acc = self.acc
        stop = self._vary_stop

        def run(step: Callable[[int], None], period: float) -> Callable[[], None]:
            def start() -> None:
                stop.clear()

                def loop() -> None:
                    i = 0
                    while not stop.wait(period):
                        step(i)
                        i += 1

                self._vary_thread = threading.Thread(target=loop, daemon=True)
                self._vary_thread.start()
            return start

        def halt() -> None:
            stop.set()
            if self._vary_thread is not None:
                self._vary_thread.join(2)

        if self.spec.app == "controller":
            return Variation(reg.CAP_ROTARY_ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION,
                             run(lambda i: acc.turn(1), 0.06), halt, "the knob turned a detent every 60 ms")
        if self.spec.app == "ambient":
            cabin = self.sim.cabin

            def light(i: int) -> None:
                with self.sim.world.lock:
                    cabin.set_light(300 + 40 * (i % 10))

            return Variation(reg.CAP_ILLUMINANCE, reg.ATTR_ILLUMINANCE_VALUE, run(light, 0.05), halt,
                             "the cabin light changing every 50 ms, illuminance sampled every 100 ms",
                             setup=[(reg.CAP_ILLUMINANCE, reg.ATTR_ILLUMINANCE_SAMPLE_PERIOD_MS, 100)])
        if self.spec.app == "mount":
            def phone(i: int) -> None:
                acc.remove_phone() if i % 2 else acc.insert_phone()

            return Variation(reg.CAP_PHONE_PRESENCE, reg.ATTR_PHONE_PRESENCE_PRESENT, run(phone, 0.15), halt,
                             "a phone put in and taken out every 150 ms", int_valued=False)
        return None

    def info(self) -> dict[str, str]:
        d = {"target": self.spec.text, "kind": "simulation", "app": self.spec.app,
             "runtime": self.spec.runtime, "board": self.spec.board}
        if self.fixture_app:
            d["fixture app"] = str(self.fixture_app)
        return d

    def diagnostics(self) -> dict[str, str]:
        chip = self.acc.devices.can if self.acc is not None else None
        out = {"firmware boots": str(self.acc.process.boots)} if self.acc is not None else {}
        if chip is not None:
            out["MCP2515 receive overflows (frames the firmware read too late)"] = str(chip.overflows)
        return out

    def close(self) -> None:
        self._vary_stop.set()
        if self.sim is not None:
            self.sim.stop()


class CanAccessoryTarget(AccessoryTarget):
    """A real accessory on a python-can bus."""

    has_can = True

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec
        self.bus: can.BusABC | None = None

    def can_bus(self) -> can.BusABC:
        try:
            return can.Bus(interface=self.spec.interface, channel=self.spec.channel, bitrate=500_000,
                           receive_own_messages=True)
        except TypeError:
            return can.Bus(interface=self.spec.interface, channel=self.spec.channel, bitrate=500_000)

    def info(self) -> dict[str, str]:
        return {"target": self.spec.text, "kind": "CAN adapter", "interface": self.spec.interface,
                "channel": self.spec.channel}


class BleAccessoryTarget(AccessoryTarget):
    """A real accessory over BLE (bleak)."""

    has_ble = True

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec

    def ble_central(self) -> Any:
        from .ble_probe import BleakCentral

        return BleakCentral()

    def ble_match(self, adv: Any) -> bool:
        return str(adv.address).upper() == self.spec.address.upper()

    def info(self) -> dict[str, str]:
        return {"target": self.spec.text, "kind": "BLE (bleak)", "address": self.spec.address}


def make_accessory_target(spec: TargetSpec, fixture_app: Path | None = None) -> AccessoryTarget:
    if spec.kind == "sim":
        return SimAccessoryTarget(spec, fixture_app)
    if spec.kind == "can":
        return CanAccessoryTarget(spec)
    if spec.kind == "ble":
        return BleAccessoryTarget(spec)
    raise ValueError(f"{spec.text}: not an accessory target")
