"""The simulated world: boards, their wiring and chips, served to firmware processes.

A firmware process (CPython or the MicroPython unix port) imports the simulated
``machine`` module, which connects here over TCP on 127.0.0.1 and sends JSON-line requests
(``platform/_world.py`` documents the wire). The world answers them from its board models:
GPIO levels, I2C/SPI transactions with chip models, PWM, ADC voltages, the watchdog and
timers; and it pushes events (pin edges, timer ticks) back to the process.

Thread model: one thread per connection plus one ticker thread; every access to board
state happens under :attr:`World.lock`, so chip models need not be thread-safe.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .chips.base import I2CTarget
from .chips.pins import SimPin

# machine.reset_cause() values
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
ENODEV = 19


@dataclass(frozen=True)
class ChipFacts:
    """What the silicon offers (ESP-IDF / MicroPython port sources, see docs/simulation.md)."""

    gpios: frozenset[int]
    input_only: frozenset[int]
    adc: frozenset[int]
    timers: tuple[int, ...]

    @property
    def no_pull(self) -> frozenset[int]:
        return self.input_only


def _r(*spans: tuple[int, int]) -> frozenset[int]:
    return frozenset(n for a, b in spans for n in range(a, b + 1))


CHIPS: dict[str, ChipFacts] = {
    "esp32": ChipFacts(_r((0, 19), (21, 23), (25, 27), (32, 39)), _r((34, 39)),
                       _r((32, 39), (0, 0), (2, 2), (4, 4), (12, 15), (25, 27)), (0, 1, 2, 3)),
    "esp32s3": ChipFacts(_r((0, 21), (26, 48)), frozenset(), _r((1, 20)), (0, 1, 2, 3)),
    "esp32c3": ChipFacts(_r((0, 21)), frozenset(), _r((0, 4)), (0, 1)),
    "esp32c6": ChipFacts(_r((0, 23)), frozenset(), _r((0, 6)), (0, 1)),
}


class SpiTarget:
    """Contract for an SPI device: selected while its chip-select pin is low."""

    def spi_select(self) -> None:
        """CS went low: a new transaction starts."""

    def spi_transfer(self, data: bytes) -> bytes:
        """Full-duplex exchange of len(data) bytes during one selection."""
        raise NotImplementedError

    def spi_deselect(self) -> None:
        """CS went high: the transaction ends."""


@dataclass
class _Timer:
    period_ms: int
    periodic: bool
    due: float


@dataclass
class SimBoard:
    """One simulated board: its chip, pins, buses, devices and supervision state."""

    name: str
    chip: str
    unique_id: bytes
    variant: str = "ESP32_GENERIC"  # the MicroPython image (its partition table)
    spec: dict[str, Any] = field(default_factory=dict)  # its boards/*.json description
    facts: ChipFacts = field(init=False)
    pins: dict[int, SimPin] = field(default_factory=dict)
    i2c: dict[str, dict[int, I2CTarget]] = field(default_factory=dict)
    spi: dict[str, list[tuple[int, SpiTarget]]] = field(default_factory=dict)
    bitstream_sinks: dict[int, Callable[[bytes], None]] = field(default_factory=dict)
    uart_out: dict[int, bytearray] = field(default_factory=dict)
    uart_in: dict[int, bytearray] = field(default_factory=dict)
    reset_cause: int = PWRON_RESET
    can_addr: str | None = None  # "127.0.0.1:port" of the SimBusServer an on-chip CAN joins
    can_bitrate: int = 500_000
    wdt_timeout_ms: int | None = None
    wdt_fed: float = 0.0
    timers: dict[int, _Timer] = field(default_factory=dict)
    irq_pins: dict[int, int] = field(default_factory=dict)
    on_reset: Callable[[SimBoard, int], None] | None = None
    conn: _Connection | None = None

    def __post_init__(self) -> None:
        self.facts = CHIPS[self.chip]

    def pin(self, n: int) -> SimPin:
        """The board's GPIO ``n`` (created on first use)."""
        p = self.pins.get(n)
        if p is None:
            if n not in self.facts.gpios:
                raise ValueError(f"{self.name}: {self.chip} has no GPIO {n}")
            p = self.pins[n] = SimPin(n)
            p.listeners.append(self._pin_changed)
        return p

    def release_pins(self) -> None:
        """The chip lost power or reset: its GPIOs float as inputs, its PWM stops (a
        motor bridge or servo on them sees its inputs go idle, as on a board)."""
        for p in self.pins.values():
            pwm = p.pwm_duty_u16 is not None
            p.pwm_freq, p.pwm_duty_u16 = 0, None
            p.configure(None, None)
            if pwm:
                for fn in list(p.listeners):
                    fn(p, p.level(), p.level())

    def attach_i2c(self, scl: int, sda: int, device: I2CTarget) -> None:
        self.i2c.setdefault(f"{scl}/{sda}", {})[device.address] = device

    def attach_spi(self, sck: int, mosi: int, miso: int, cs: int, device: SpiTarget) -> None:
        self.spi.setdefault(f"{sck}/{mosi}/{miso}", []).append((cs, device))
        cs_pin = self.pin(cs)

        def cs_edge(pin: SimPin, old: int, new: int) -> None:
            if old and not new:
                device.spi_select()
            elif new and not old:
                device.spi_deselect()

        cs_pin.listeners.append(cs_edge)

    def _pin_changed(self, pin: SimPin, old: int, new: int) -> None:
        if pin.number in self.irq_pins and self.conn is not None:
            self.conn.event({"ev": "pin", "pin": pin.number, "level": new})

    def facts_for_firmware(self) -> dict[str, Any]:
        return {
            "name": self.name, "chip": self.chip, "unique_id": self.unique_id.hex(),
            "reset_cause": self.reset_cause, "gpios": sorted(self.facts.gpios),
            "input_only": sorted(self.facts.input_only), "no_pull": sorted(self.facts.no_pull),
            "adc": sorted(self.facts.adc), "timers": list(self.facts.timers),
            "can": self.can_addr, "can_bitrate": self.can_bitrate,
        }


class OpError(Exception):
    """Raised by an operation: the firmware side raises ``OSError(errno, text)``."""

    def __init__(self, errno: int, text: str) -> None:
        super().__init__(text)
        self.errno = errno


class _Connection:
    """One firmware process's connection: requests in, replies and events out."""

    def __init__(self, world: World, sock: socket.socket) -> None:
        self.world = world
        self.sock = sock
        self.board: SimBoard | None = None
        self.send_lock = threading.Lock()
        self.closed = False

    def send(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        with self.send_lock:
            if self.closed:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def event(self, obj: dict[str, Any]) -> None:
        self.send(obj)

    def serve(self) -> None:
        f = self.sock.makefile("rb")
        try:
            for line in f:
                req = json.loads(line)
                rid = req.get("id")
                try:
                    with self.world.lock:
                        r = self.world.handle(self, req)
                    if rid is not None:
                        self.send({"id": rid, "r": r})
                except OpError as e:
                    if rid is not None:
                        self.send({"id": rid, "err": [e.errno, str(e)]})
        except (OSError, ValueError):
            pass
        finally:
            self.closed = True
            with self.world.lock:
                if self.board is not None and self.board.conn is self:
                    self.board.conn = None
                    self.board.release_pins()  # power cut, unplug or reset
            self.sock.close()


class World:
    """Serves boards to firmware processes; ``start()`` returns the address to give them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.boards: dict[str, SimBoard] = {}
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.address = ""
        self.ops: dict[str, Callable[[SimBoard, dict[str, Any]], Any]] = {}
        # Called (under the lock) each time a board's firmware connects: a boot.
        self.on_boot: list[Callable[[SimBoard], None]] = []
        # Called (under the lock) every tick, ~1 ms: models that move on their own.
        self.tickers: list[Callable[[], None]] = []

    def register_op(self, name: str, handler: Callable[[SimBoard, dict[str, Any]], Any]) -> None:
        """Serve request ``name`` with ``handler(board, request) -> reply`` (called under
        :attr:`lock`). Extensions (BLE, ...) add their operations this way. A handler raises
        :class:`OpError` to make the firmware side raise ``OSError(errno)``."""
        self.ops[name] = handler

    def add_board(self, board: SimBoard) -> SimBoard:
        with self.lock:
            self.boards[board.name] = board
        return board

    def start(self) -> str:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        self._server = srv
        self.address = "127.0.0.1:%d" % srv.getsockname()[1]
        for target in (self._accept, self._tick):
            t = threading.Thread(target=target, daemon=True, name=f"world-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self.address

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
        with self.lock:
            for b in self.boards.values():
                if b.conn is not None:
                    b.conn.closed = True
                    try:
                        b.conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> World:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Connection(self, sock)
            threading.Thread(target=c.serve, daemon=True, name="world-conn").start()

    def _tick(self) -> None:
        # Watchdogs and timers, checked every millisecond of wall-clock time.
        while not self._stop.wait(0.001):
            now = self.clock()
            resets: list[tuple[SimBoard, int]] = []
            with self.lock:
                for fn in self.tickers:
                    fn()
                for b in self.boards.values():
                    if b.wdt_timeout_ms and b.conn is not None and \
                            (now - b.wdt_fed) * 1000 > b.wdt_timeout_ms:
                        b.wdt_timeout_ms = None
                        resets.append((b, WDT_RESET))
                    for tid, t in list(b.timers.items()):
                        if now >= t.due and b.conn is not None:
                            b.conn.event({"ev": "timer", "timer": tid})
                            if t.periodic:
                                t.due += t.period_ms / 1000
                            else:
                                del b.timers[tid]
            for b, cause in resets:
                if b.on_reset:
                    b.on_reset(b, cause)

    # --- requests ------------------------------------------------------------
    def handle(self, conn: _Connection, req: dict[str, Any]) -> Any:
        op = req["op"]
        if op == "hello":
            board = self.boards.get(req["board"])
            if board is None:
                raise OpError(ENODEV, f"no simulated board named {req['board']!r}")
            conn.board = board
            board.conn = conn
            board.irq_pins.clear()
            for fn in self.on_boot:
                fn(board)
            return None
        b = conn.board
        if b is None:
            raise OpError(ENODEV, "say hello first")
        handler = self.ops.get(op) or getattr(self, "_op_" + op, None)
        if handler is None:
            raise OpError(22, f"unknown operation {op!r}")
        try:
            return handler(b, req)
        except ValueError as e:
            raise OpError(22, str(e)) from e

    def _op_board(self, b: SimBoard, req: dict[str, Any]) -> Any:
        return b.facts_for_firmware()

    def _op_pin_init(self, b: SimBoard, req: dict[str, Any]) -> Any:
        p = b.pin(req["pin"])
        if req.get("value") is not None:
            p.set_output(1 if req["value"] else 0)
        p.configure(req["mode"], req["pull"])

    def _op_pin_write(self, b: SimBoard, req: dict[str, Any]) -> Any:
        b.pin(req["pin"]).set_output(req["value"])

    def _op_pin_read(self, b: SimBoard, req: dict[str, Any]) -> Any:
        return b.pin(req["pin"]).level()

    def _op_pin_irq(self, b: SimBoard, req: dict[str, Any]) -> Any:
        if req["trigger"]:
            b.irq_pins[req["pin"]] = req["trigger"]
        else:
            b.irq_pins.pop(req["pin"], None)

    def _op_i2c_init(self, b: SimBoard, req: dict[str, Any]) -> Any:
        b.i2c.setdefault(f"{req['scl']}/{req['sda']}", {})

    def _i2c_target(self, b: SimBoard, req: dict[str, Any]) -> I2CTarget:
        dev = b.i2c.get(req["bus"], {}).get(req["addr"])
        if dev is None:
            raise OpError(ENODEV, "ENODEV")
        return dev

    def _op_i2c_scan(self, b: SimBoard, req: dict[str, Any]) -> Any:
        return sorted(a for a in b.i2c.get(req["bus"], {}) if 0x08 <= a <= 0x77)

    def _op_i2c_write(self, b: SimBoard, req: dict[str, Any]) -> Any:
        data = bytes.fromhex(req["data"])
        if not self._i2c_target(b, req).i2c_write(data):
            raise OpError(ENODEV, "ENODEV")
        return len(data) + 1

    def _op_i2c_read(self, b: SimBoard, req: dict[str, Any]) -> Any:
        data = self._i2c_target(b, req).i2c_read(req["n"])
        if data is None:
            raise OpError(ENODEV, "ENODEV")
        return bytes(data).hex()

    def _op_spi_init(self, b: SimBoard, req: dict[str, Any]) -> Any:
        b.spi.setdefault(req["bus"], [])

    def _op_spi_xfer(self, b: SimBoard, req: dict[str, Any]) -> Any:
        data = bytes.fromhex(req["data"])
        for cs, dev in b.spi.get(req["bus"], []):
            if not b.pin(cs).level():
                return dev.spi_transfer(data).hex()
        return (b"\xff" * len(data)).hex()  # nobody selected: MISO floats high

    def _op_pwm(self, b: SimBoard, req: dict[str, Any]) -> Any:
        p = b.pin(req["pin"])
        p.pwm_freq = req["freq"]
        p.pwm_duty_u16 = req["duty_u16"]
        for fn in list(p.listeners):
            fn(p, p.level(), p.level())  # let devices see the new duty

    def _op_adc_read(self, b: SimBoard, req: dict[str, Any]) -> Any:
        p = b.pin(req["pin"])
        return float(p.adc_volts()) if p.adc_volts else 0.0

    def _op_bitstream(self, b: SimBoard, req: dict[str, Any]) -> Any:
        sink = b.bitstream_sinks.get(req["pin"])
        if sink is not None:
            sink(bytes.fromhex(req["data"]))

    def _op_uart(self, b: SimBoard, req: dict[str, Any]) -> Any:
        b.uart_out.setdefault(req["id"], bytearray()).extend(bytes.fromhex(req["data"]))

    def _op_uart_read(self, b: SimBoard, req: dict[str, Any]) -> Any:
        buf = b.uart_in.setdefault(req["id"], bytearray())
        n = len(buf) if req["n"] < 0 else min(req["n"], len(buf))
        out = bytes(buf[:n])
        del buf[:n]
        return out.hex()

    def _op_uart_any(self, b: SimBoard, req: dict[str, Any]) -> Any:
        return len(b.uart_in.get(req["id"], b""))

    def _op_wdt_init(self, b: SimBoard, req: dict[str, Any]) -> Any:
        b.wdt_timeout_ms = req["timeout"]
        b.wdt_fed = self.clock()

    def _op_wdt_feed(self, b: SimBoard, req: dict[str, Any]) -> Any:
        b.wdt_fed = self.clock()

    def _op_timer_init(self, b: SimBoard, req: dict[str, Any]) -> Any:
        if req["period"] <= 0:
            b.timers.pop(req["timer"], None)
        else:
            b.timers[req["timer"]] = _Timer(req["period"], req["periodic"],
                                            self.clock() + req["period"] / 1000)

    def _op_reset(self, b: SimBoard, req: dict[str, Any]) -> Any:
        if b.on_reset:
            b.on_reset(b, req["cause"])
