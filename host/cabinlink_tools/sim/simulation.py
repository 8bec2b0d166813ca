"""A whole simulated world in one object: the CAN bus, the cabin, the vehicle, boards.

``Simulation`` is what tests, the demo and ``cabinlink sim`` use::

    with Simulation() as sim:
        acc = sim.add("esp32-devkitc", "controller", runtime="micropython")
        acc.press(0)
        car = sim.can_peer()            # a python-can Bus on the same simulated bus

Each :class:`Accessory` is one board running its firmware in its own process, with a test
API that acts on the world (press a button, turn the knob, raise CO2, insert a phone,
unplug it, cut its power) and reads it back (LEDs, servo, motor, its console).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import can

from . import boards
from .cabin import Cabin
from .canbus import CandumpLogger, SimBus, SimBusServer
from .runner import FIRMWARE, BoardProcess
from .vehicle import Vehicle
from .world import SimBoard, World



def unique_id_for(name: str) -> bytes:
    """A stable 6-byte eFuse-MAC-like id per board name (Espressif OUI 24:0A:C4)."""
    return bytes.fromhex("240ac4") + hashlib.sha256(name.encode()).digest()[:3]


def default_config(board: str, app: str, name: str, ble: bool = False) -> dict[str, Any]:
    """A valid config.json for a simulated unit (what ``cabinlink config`` would write)."""
    return {
        "version": 1, "app": app, "board": board,
        "identity": {"vendor": "CabinLink", "product": f"sim {app}", "serial": name, "hardware": board[:32]},
        "links": {"can": {"enabled": True, "bitrate": 500_000},
                  "ble": {"enabled": ble, "name": name[:20], "bond": False}},
        "keys": {}, "calibration": {}, "app_config": {},
    }


class Accessory:
    """One simulated board + its firmware process, with a test API."""

    def __init__(self, sim: Simulation, board: SimBoard, devices: boards.Devices,
                 process: BoardProcess, app: str) -> None:
        self.sim = sim
        self.board = board
        self.devices = devices
        self.process = process
        self.app = app
        self.plugged = True

    @property
    def name(self) -> str:
        return self.board.name

    @property
    def log(self) -> list[str]:
        return self.process.log

    def wait_for(self, text: str, timeout: float = 10.0, start: int = 0) -> int:
        return self.process.wait_for(text, timeout, start)

    # --- stimulus ----------------------------------------------------------------------
    def press(self, i: int) -> None:
        self.devices.buttons[i].press()

    def release(self, i: int) -> None:
        self.devices.buttons[i].release()

    def hold(self, i: int, seconds: float) -> None:
        self.devices.buttons[i].hold(seconds)

    def turn(self, detents: int) -> None:
        if self.devices.encoder is None:
            raise ValueError(f"{self.name} has no encoder")
        self.devices.encoder.turn(detents)

    def insert_phone(self, at: float = 0.7) -> None:
        with self.sim.world.lock:
            if self.devices.motor is not None:
                self.devices.motor.set_phone(at)
        if self.devices.phone_sense is not None:
            self.devices.phone_sense.press()

    def remove_phone(self) -> None:
        with self.sim.world.lock:
            if self.devices.motor is not None:
                self.devices.motor.set_phone(None)
        if self.devices.phone_sense is not None:
            self.devices.phone_sense.release()

    def cut_power(self, off_s: float = 0.0) -> None:
        self.process.cut_power(off_s)

    def unplug(self) -> None:
        """Pull the connector: the car's power and bus go away together."""
        self.process.stop()
        self._bus_attach(False)
        self.plugged = False

    def replug(self) -> None:
        self._bus_attach(True)
        self.plugged = True
        self.process.start()

    def _bus_attach(self, on: bool) -> None:
        ctl = self.devices.can
        if ctl is not None and hasattr(ctl, "set_connected"):
            with self.sim.world.lock:
                ctl.set_connected(on)

    # --- observation -------------------------------------------------------------------
    def leds(self) -> list[tuple[int, int, int]]:
        return [] if self.devices.leds is None else list(self.devices.leds.pixels)

    def servo_angle(self) -> float | None:
        return None if self.devices.servo is None else self.devices.servo.angle

    def motor_position(self) -> float | None:
        with self.sim.world.lock:
            return None if self.devices.motor is None else self.devices.motor.position

    def pin_level(self, n: int) -> int:
        with self.sim.world.lock:
            return self.board.pin(n).level()


class Simulation:
    """The simulated world, CAN bus, cabin and vehicle; boards are added with :meth:`add`."""

    def __init__(self, bitrate: int = 500_000, log_path: Path | None = None,
                 fs_root: Path | None = None) -> None:
        self.clock: Callable[[], float] = time.monotonic
        self.world = World(self.clock)
        self.bus = SimBus(bitrate)
        self.server = SimBusServer(self.bus)
        self.cabin = Cabin(self.clock)
        self.vehicle = Vehicle()
        self.accessories: list[Accessory] = []
        self._tmp = None if fs_root else tempfile.TemporaryDirectory(prefix="cabinlink-sim-")
        self.fs_root = Path(fs_root) if fs_root else Path(self._tmp.name)  # type: ignore[union-attr]
        self.logger = CandumpLogger(log_path, self.bus) if log_path else None
        self._peers: list[can.BusABC] = []
        self.bus_address = ""
        self.ble: Any = None
        self._vboards: list[Any] = []

    def start(self) -> Simulation:
        from .ble import BleWorld
        from .flash import install_esp32

        self.world.start()
        self.ble = BleWorld(self.world)  # the radio: Bumble on one virtual link
        self.flash = install_esp32(self.world, self.fs_root / "flash")  # esp32.Partition, NVS
        host, port = self.server.start()
        self.bus_address = f"{host}:{port}"
        return self

    def stop(self) -> None:
        for a in self.accessories:
            a.process.stop()
        for vb in self._vboards:
            vb.close()
        for p in self._peers:
            p.shutdown()
        self.server.stop()
        self.ble.close()
        self.world.stop()
        if self.logger is not None:
            self.logger.close()
        self.bus.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Simulation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _can_attach(self, board: SimBoard, spec: dict[str, Any]) -> Any:
        if spec.get("controller") == "onchip":
            board.can_addr = self.bus_address
            board.can_bitrate = spec.get("bitrate", 500_000)
            return None
        if spec.get("controller") == "mcp2515":
            from .chips.mcp2515 import Mcp2515

            return Mcp2515.wire(board, self.bus, spec, self.clock, lock=self.world.lock,
                                spi=board.spec.get("spi"))
        raise ValueError(f"unknown CAN controller {spec.get('controller')!r}")

    def add(self, board: str, app: str, runtime: str = "cpython", name: str | None = None,
            script: Path | None = None, start: bool = True, heap: str = "512K",
            config: dict[str, Any] | str | None = None,
            extra_path: Sequence[Path] = (), firmware: Path | None = None) -> Accessory:
        """Add a board running ``app`` (its firmware: ``script``, default firmware/main.py).

        ``config`` becomes the board's ``config.json`` (a dict, or raw text to test a broken
        one); by default a valid one for ``app`` with the CAN link on is written.
        ``extra_path`` goes ahead of the firmware on the module path (e.g. test apps);
        ``firmware`` is the tree to run (default: the repository's; e.g. one compiled to .mpy)."""
        name = name or f"{app}{len(self.accessories) + 1}"
        sb, dev = boards.build(self.world, board, app, name, unique_id_for(name), self.cabin,
                               self.clock, self._can_attach)
        fs = self.fs_root / name
        fs.mkdir(parents=True, exist_ok=True)
        # What a deploy puts on the board: its own description, read by the firmware.
        (fs / "board.json").write_text(json.dumps(sb.spec, indent=1))
        if config is None:
            config = default_config(board, app, name)
        (fs / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        fw = firmware or FIRMWARE
        proc = BoardProcess(self.world, sb, runtime, script or fw / "main.py", fs, extra_path,
                            heap=heap, firmware=fw)
        acc = Accessory(self, sb, dev, proc, app)
        self.accessories.append(acc)
        if start:
            proc.start()
        return acc

    def add_virtual_board(self, board: str, app: str, name: str | None = None,
                          micropython: str | None = None,
                          heapsize: str = "2M") -> tuple[Any, SimBoard, boards.Devices]:
        """A :class:`~.virtual_board.VirtualBoard` (the unix port on a pty, for the host
        tools) that is also a board of this world: ``boards/<board>.json`` wired for ``app``,
        its CAN controller on this bus, the simulated platform modules first on its path.
        Its filesystem starts empty, like a freshly flashed board: ``cabinlink deploy`` and
        ``cabinlink config`` fill it, and after a reset the firmware runs here. Returns the
        started board, its world model and its devices; closed by :meth:`stop`."""
        from .runner import PLATFORM, SIM
        from .virtual_board import VirtualBoard
        from .world import WDT_RESET

        name = name or f"vboard{len(self._vboards) + 1}"
        sb, dev = boards.build(self.world, board, app, name, unique_id_for(name), self.cabin,
                               self.clock, self._can_attach)
        path = [PLATFORM]
        if sb.can_addr:  # an on-chip controller: the platform's bus client, alone on the path
            wire = self.fs_root / f".{name}-canwire"
            wire.mkdir(parents=True, exist_ok=True)
            (wire / "canwire.py").write_bytes((SIM / "canwire.py").read_bytes())
            path.append(wire)
        vb = VirtualBoard(root=self.fs_root / name, micropython=micropython, extra_path=path,
                          heapsize=heapsize, env={"CABINLINK_WORLD": self.world.address,
                                                  "CABINLINK_BOARD": name}, chip=sb.chip)

        def on_reset(b: SimBoard, cause: int) -> None:  # the world's side of a reset
            b.reset_cause = cause
            b.wdt_timeout_ms = None
            b.timers.clear()
            if cause == WDT_RESET:  # a firmware reset ends its own process; a watchdog not
                vb.reset(wait=False)

        sb.on_reset = on_reset
        vb.start()
        self._vboards.append(vb)
        return vb, sb, dev

    def can_peer(self, **kw: Any) -> can.BusABC:
        """A python-can bus on the simulated bus (the car, can-isotp, canopen, ...)."""
        b = can.Bus(interface="cabinlink", channel=self.bus_address, **kw)
        self._peers.append(b)
        return b
