"""The controller accessory (firmware/apps/controller) on the simulation, under both runtimes:
a car that said HELLO gets press/release/long/double-press and delta events on the
priority-3 channel; LEDs, brightness and the haptic motor follow its commands; refused
values change nothing; persisted timings survive a power cut. The drivers' fine timing is
tested with a manual clock in tests/mp/test_controller_drivers.py."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink_tools.sim.runner import RUNTIMES
from cabinlink_tools.sim.simulation import Accessory, Simulation, default_config

from carhelper import SimCar

BOARD = "esp32-devkitc"
BUTTONS, ENCODER, LEDS, HAPTIC = 1, 2, 3, 4  # slots (device_info is 0)
P, R, L, D = (reg.EV_BUTTONS_PRESS, reg.EV_BUTTONS_RELEASE, reg.EV_BUTTONS_LONG_PRESS,
              reg.EV_BUTTONS_DOUBLE_PRESS)
STEP_S = 0.01  # encoder Gray step interval: 40 ms per detent, a brisk turn


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as s:
        yield s


class Rig:
    """One controller, a SimCar that said HELLO, and the events it received."""

    def __init__(self, sim: Simulation, runtime: str, board: str = BOARD, name: str = "ctl",
                 config: dict[str, Any] | None = None) -> None:
        self.sim = sim
        self.acc: Accessory = sim.add(board, "controller", runtime, name=name, config=config)
        self.acc.wait_for("controller:", 60)
        self.car = SimCar(sim)
        self.events: list[tuple[int, int, Any]] = []
        self.car.client.on_event = lambda acc, slot, ev, data: self.events.append((slot, ev, data))
        self.hello()
        if self.acc.devices.encoder is not None:
            self.acc.devices.encoder.step_interval = STEP_S

    def hello(self) -> None:
        self.addr = self.car.find()
        for _ in range(3):  # a fresh claim settles for 250 ms before the node answers
            p = self.ask(msg.hello)
            if p.ok:
                break
        assert p.ok and p.value[2] == reg.CLASS_CONTROLLER, (p.status, self.acc.log)

    def ask(self, build: Any, *args: Any) -> Any:
        return self.car.ask(self.addr, build, *args)

    def read(self, slot: int, attr: int) -> Any:
        p = self.ask(msg.read, slot, attr)
        assert p.ok, p.status
        return p.value

    def do(self, fn: Callable[..., None], *args: Any, timeout: float = 30.0) -> None:
        """Run a stimulus that takes time (hold, turn) while the car keeps pumping."""
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        assert self.car.pump(timeout, lambda: not t.is_alive())

    def until(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        assert self.car.pump(timeout, cond), (self.events, self.acc.log[-5:])

    def button_events(self, n: int, timeout: float = 10.0) -> list[tuple[int, int]]:
        """The next n button events as (event, index); nothing else may arrive."""
        self.until(lambda: len(self.events) >= n, timeout)
        self.car.pump(0.3)  # no more than n
        got = [(e, d) for s, e, d in self.events if s == BUTTONS]
        self.events.clear()
        return got

    def deltas(self, total: int, timeout: float = 10.0) -> list[int]:
        """Delta events until they add up to total (then a moment more, to see no extra)."""
        def d() -> list[int]:
            return [x for s, e, x in self.events if s == ENCODER and e == reg.EV_ROTARY_ENCODER_DELTA]
        self.until(lambda: sum(d()) == total, timeout)
        self.car.pump(0.3)
        got = d()
        self.events.clear()
        return got


def tap(acc: Accessory, i: int, hold: float = 0.06, gap: float = 0.06, times: int = 2) -> None:
    b = acc.devices.buttons[i]
    for k in range(times):
        if k:
            time.sleep(gap)
        b.press()
        time.sleep(hold)
        b.release()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_button_events_on_the_priority_3_channel(sim: Simulation, runtime: str) -> None:
    raw = sim.can_peer()
    r = Rig(sim, runtime)
    d = r.ask(msg.describe).value
    assert [c[msg.C_ID] for c in d[msg.D_CAPS]] == [
        reg.CAP_DEVICE_INFO, reg.CAP_BUTTONS, reg.CAP_ROTARY_ENCODER, reg.CAP_LEDS, reg.CAP_HAPTIC]
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_COUNT) == 5  # four buttons + the knob's switch
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS) == 800
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_DOUBLE_PRESS_MS) == 300

    # press -> press, release, in order; the bitmap follows
    while raw.recv(0) is not None:
        pass
    r.acc.press(0)
    r.until(lambda: len(r.events) >= 1)
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_PRESSED) == 0b1
    r.acc.release(0)
    assert r.button_events(2) == [(P, 0), (R, 0)]
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_PRESSED) == 0
    # ... sent as EVENT [11, 1, 0, 0] on 0x0CDA<car><accessory>: priority 3 (spec 7.5)
    frames = []
    while (f := raw.recv(0.05)) is not None:
        frames.append(f)
    ev_id = 0x0CDA0000 | (r.car.link.claim.address << 8) | r.addr
    ev = [f for f in frames if f.arbitration_id == ev_id]
    assert [bytes(f.data[1:1 + f.data[0]]) for f in ev] == [bytes.fromhex("840b010000"),
                                                             bytes.fromhex("840b010100")]
    assert ev[0].arbitration_id >> 26 == 3

    # held -> long_press exactly once, while held
    r.do(r.acc.hold, 1, 1.2)
    assert r.button_events(3) == [(P, 1), (L, 1), (R, 1)]

    # double press within double_press_ms vs two presses further apart
    r.do(tap, r.acc, 2)
    assert r.button_events(5) == [(P, 2), (R, 2), (P, 2), (D, 2), (R, 2)]
    r.do(tap, r.acc, 2, 0.06, 0.6)
    assert r.button_events(4) == [(P, 2), (R, 2), (P, 2), (R, 2)]

    # a bouncy contact still gives exactly one press and one release
    b = r.acc.devices.buttons[3]
    b.bounce, b.bounce_interval = 5, 0.001
    r.do(r.acc.hold, 3, 0.15)
    assert r.button_events(2) == [(P, 3), (R, 3)]

    # the knob's push switch is the last button
    r.do(r.acc.devices.encoder_switch.hold, 0.1)
    assert r.button_events(2) == [(P, 4), (R, 4)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_encoder_settings_and_power_cut(sim: Simulation, runtime: str) -> None:
    r = Rig(sim, runtime)
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION) == 0
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_DETENTS_PER_REV) == 20
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_ACCELERATION) is False

    r.do(r.acc.turn, 3)
    assert all(x > 0 for x in r.deltas(3))
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION) == 3
    r.do(r.acc.turn, -2)
    assert all(x < 0 for x in r.deltas(-2))
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION) == 1

    # acceleration: a fast spin counts more than its detents; off: exactly the detents
    assert r.ask(msg.write, ENCODER, reg.ATTR_ROTARY_ENCODER_ACCELERATION, True).ok
    r.do(r.acc.turn, 10)
    r.until(lambda: sum(x for s, _, x in r.events if s == ENCODER) > 10)
    r.car.pump(0.5)
    fast = sum(x for s, _, x in r.events if s == ENCODER)
    r.events.clear()
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION) == 1 + fast
    assert r.ask(msg.write, ENCODER, reg.ATTR_ROTARY_ENCODER_ACCELERATION, False).ok
    r.do(r.acc.turn, -10)
    assert sum(r.deltas(-10)) == -10
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION) == 1 + fast - 10

    # out-of-range writes: INVALID_VALUE and nothing changes, nothing is persisted
    settings = sim.fs_root / "ctl" / "settings.json"
    before = settings.read_text()
    for slot, attr, v in ((BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS, 5001),
                          (BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS, 199),
                          (BUTTONS, reg.ATTR_BUTTONS_DOUBLE_PRESS_MS, 1001),
                          (LEDS, reg.ATTR_LEDS_BRIGHTNESS, 101),
                          (ENCODER, reg.ATTR_ROTARY_ENCODER_ACCELERATION, 1)):
        assert r.ask(msg.write, slot, attr, v).status == msg.INVALID_VALUE, (attr, v)
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS) == 800
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_DOUBLE_PRESS_MS) == 300
    assert settings.read_text() == before
    r.do(r.acc.hold, 0, 0.9)
    assert r.button_events(3) == [(P, 0), (L, 0), (R, 0)]  # still 800 ms

    # persisted timings: in force at once, and after a power cut
    for slot, attr, v in ((BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS, 1500),
                          (BUTTONS, reg.ATTR_BUTTONS_DOUBLE_PRESS_MS, 0),
                          (ENCODER, reg.ATTR_ROTARY_ENCODER_ACCELERATION, True),
                          (LEDS, reg.ATTR_LEDS_BRIGHTNESS, 30)):
        assert r.ask(msg.write, slot, attr, v).ok
    r.do(r.acc.hold, 0, 0.9)
    assert r.button_events(2) == [(P, 0), (R, 0)]  # no long press below 1500 ms
    r.do(tap, r.acc, 0)
    assert r.button_events(4) == [(P, 0), (R, 0), (P, 0), (R, 0)]  # double press off
    seen = len(r.acc.log)
    r.acc.cut_power()
    r.acc.wait_for("controller:", 60, start=seen)
    r.hello()
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS) == 1500
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_DOUBLE_PRESS_MS) == 0
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_ACCELERATION) is True
    assert r.read(LEDS, reg.ATTR_LEDS_BRIGHTNESS) == 30
    assert r.read(ENCODER, reg.ATTR_ROTARY_ENCODER_POSITION) == 0  # steps since boot
    r.do(r.acc.hold, 0, 0.9)
    assert r.button_events(2) == [(P, 0), (R, 0)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_leds_and_haptic(sim: Simulation, runtime: str) -> None:
    r = Rig(sim, runtime)
    acc = r.acc
    off = [(0, 0, 0)] * 4
    assert acc.leds() == off
    assert r.read(LEDS, reg.ATTR_LEDS_COUNT) == 4
    assert r.read(LEDS, reg.ATTR_LEDS_BRIGHTNESS) == 50

    assert r.ask(msg.write, LEDS, reg.ATTR_LEDS_BRIGHTNESS, 100).ok
    assert r.ask(msg.invoke, LEDS, reg.CMD_LEDS_SET, [1, 0x112233]).ok
    assert acc.leds() == [(0, 0, 0), (0x11, 0x22, 0x33), (0, 0, 0), (0, 0, 0)]  # GRB on the wire
    assert r.ask(msg.invoke, LEDS, reg.CMD_LEDS_FILL, [0xFF8000]).ok
    assert acc.leds() == [(255, 128, 0)] * 4
    assert r.ask(msg.write, LEDS, reg.ATTR_LEDS_BRIGHTNESS, 50).ok
    assert acc.leds() == [(128, 64, 0)] * 4  # c * 50 / 100, rounded
    assert r.ask(msg.invoke, LEDS, reg.CMD_LEDS_SET, [3, 0x0000FF]).ok
    assert acc.leds()[3] == (0, 0, 128)
    # refused: index not below count (the app), index or colour out of range (the node)
    for args in ([4, 0xFFFFFF], [256, 0xFFFFFF], [0, 0x1000000], [0]):
        assert r.ask(msg.invoke, LEDS, reg.CMD_LEDS_SET, args).status == msg.INVALID_VALUE, args
    assert acc.leds() == [(128, 64, 0)] * 3 + [(0, 0, 128)]
    assert r.ask(msg.invoke, LEDS, reg.CMD_LEDS_OFF).ok
    assert acc.leds() == off
    assert r.read(LEDS, reg.ATTR_LEDS_BRIGHTNESS) == 50

    pin = acc.devices.haptic
    assert pin.pwm_fraction() == 0 and pin.pwm_freq == 20000
    for args in ([0], [1001], [100, 101], []):
        assert r.ask(msg.invoke, HAPTIC, reg.CMD_HAPTIC_PULSE, args).status == msg.INVALID_VALUE
    assert pin.pwm_fraction() == 0
    t0 = time.monotonic()
    assert r.ask(msg.invoke, HAPTIC, reg.CMD_HAPTIC_PULSE, [300, 60]).ok
    assert pin.pwm_fraction() == pytest.approx(0.6, abs=0.01)  # on when the OK arrives
    r.until(lambda: pin.pwm_fraction() == 0, 5)
    took = time.monotonic() - t0
    assert 0.3 <= took < 3.0, took  # not before the duration; then off
    assert r.ask(msg.invoke, HAPTIC, reg.CMD_HAPTIC_PULSE, [50]).ok
    assert pin.pwm_fraction() == 1.0  # default strength 100
    r.until(lambda: pin.pwm_fraction() == 0, 5)
    assert r.ask(msg.write, HAPTIC, reg.ATTR_HAPTIC_ENABLED, False).ok
    assert r.ask(msg.invoke, HAPTIC, reg.CMD_HAPTIC_PULSE, [300]).status == msg.INVALID_STATE
    assert pin.pwm_fraction() == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_c6_board_and_app_config(sim: Simulation, runtime: str) -> None:
    # The ESP32-C6 wiring (on-chip CAN), with app_config options and a calibration.
    cfg = default_config("esp32-c6-devkitc-1", "controller", "c6")
    cfg["app_config"] = {"encoder_switch": False, "brightness": 100, "haptic_strength": 25,
                         "long_press_ms": 400}
    cfg["calibration"] = {"encoder_reverse": True}
    r = Rig(sim, runtime, board="esp32-c6-devkitc-1", name="c6", config=cfg)
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_COUNT) == 4
    assert r.read(BUTTONS, reg.ATTR_BUTTONS_LONG_PRESS_MS) == 400
    r.do(r.acc.hold, 3, 0.6)
    assert r.button_events(3) == [(P, 3), (L, 3), (R, 3)]
    r.do(r.acc.turn, 2)
    assert sum(r.deltas(-2)) == -2  # reversed by the calibration
    assert r.ask(msg.invoke, LEDS, reg.CMD_LEDS_FILL, [0x102030]).ok
    assert r.acc.leds() == [(0x10, 0x20, 0x30)] * 4
    assert r.ask(msg.invoke, HAPTIC, reg.CMD_HAPTIC_PULSE, [200]).ok
    assert r.acc.devices.haptic.pwm_fraction() == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_app_config_is_named_in_safe_mode(sim: Simulation, runtime: str) -> None:
    cfg = default_config(BOARD, "controller", "bad")
    cfg["app_config"] = {"debounce_ms": 0}
    acc = sim.add(BOARD, "controller", runtime, name="bad", config=cfg)
    acc.wait_for("SAFE MODE: app controller: ValueError app_config.debounce_ms: must be an integer 1..200", 60)
