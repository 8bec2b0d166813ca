"""The phone mount app (firmware/apps/mount) on the simulated ESP32-DevKitC under both
runtimes, driven by a car on the simulated CAN bus: clamp and release with the moving-vehicle
confirmation, stall, power cuts and link loss that never open the clamp, rotation, the
charger's over-temperature cut-off, phone presence, refused writes.

The clamp state machine's timing and every fault path are unit-tested without hardware in
tests/mp/test_clamp_logic.py; here the whole accessory meets the motor model.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink_tools.sim.boards import load
from cabinlink_tools.sim.runner import RUNTIMES
from cabinlink_tools.sim.simulation import Accessory, Simulation

from carhelper import SimCar

BOARD = "esp32-devkitc"
WIRING = load(BOARD)["apps"]["mount"]
IN_A, IN_B = WIRING["motor"]["in_a"], WIRING["motor"]["in_b"]
LIMIT = WIRING["motor"]["limit"]
CHG_EN = WIRING["charger"]["enable"]
CLAMP, ROT, PRESENCE, CHARGER = 1, 2, 3, 4  # slots (device_info is 0)
OPEN, CLOSING, CLAMPED, RELEASING, FAULT = range(5)


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as s:
        yield s


class Mount:
    """One mount on the bus and a car that said HELLO, collecting events."""

    def __init__(self, sim: Simulation, runtime: str, config: dict[str, Any] | None = None) -> None:
        self.sim = sim
        self.acc: Accessory = sim.add(BOARD, "mount", runtime, name="mount", config=config)
        self.acc.wait_for("ready", 60)
        self.car = SimCar(sim)
        self.events: list[tuple[int, int, Any]] = []
        self.seen = 0  # events before this index are matched already
        self.car.client.on_event = lambda _a, slot, ev, data: self.events.append((slot, ev, data))
        self.connect()

    def connect(self) -> None:
        self.addr = self.car.find()
        self.car.pump(0.5)  # the claim settles before ISO-TP traffic (spec 7.3)
        assert self.ask(msg.hello).ok

    def ask(self, build: Any, *args: Any) -> Any:
        p = self.car.ask(self.addr, build, *args)
        assert p.done and not p.timed_out, f"no answer to {build.__name__}{args}"
        return p

    def read(self, slot: int, attr: int) -> Any:
        p = self.ask(msg.read, slot, attr)
        assert p.ok, p.status
        return p.value

    def invoke(self, slot: int, cmd: int, args: list[Any] | None = None) -> int:
        return self.ask(msg.invoke, slot, cmd, args).status

    def write(self, slot: int, attr: int, value: Any) -> int:
        return self.ask(msg.write, slot, attr, value).status

    def wait_event(self, slot: int, ev: int, data: Any, timeout: float = 10.0) -> None:
        """Until the event arrives after the one the previous wait matched."""
        want = (slot, ev, data)
        ok = self.car.pump(timeout, lambda: want in self.events[self.seen:])
        assert ok, f"no event {want}; got {self.events}\n" + "\n".join(self.acc.log[-20:])
        self.seen = self.events.index(want, self.seen) + 1

    def read_until(self, slot: int, attr: int, want: Any, timeout: float = 5.0) -> None:
        """Poll an attribute until it holds ``want`` (device_info mirrors health once a
        second)."""
        end = time.monotonic() + timeout
        while (got := self.read(slot, attr)) != want:
            assert time.monotonic() < end, f"{slot}/{attr} is {got!r}, not {want!r}"
            self.car.pump(0.1)

    def clamp_states(self) -> list[Any]:
        return [e[2] for e in self.events if e[:2] == (CLAMP, reg.EV_CLAMP_STATE_CHANGED)]

    # --- the world ---------------------------------------------------------------------
    def duties(self) -> tuple[int, int]:
        with self.sim.world.lock:
            a, b = (self.acc.board.pin(n).pwm_duty_u16 or 0 for n in (IN_A, IN_B))
        return a, b

    def position(self) -> float:
        pos = self.acc.motor_position()
        assert pos is not None
        return pos

    def watch_opening(self) -> list[int]:
        """Every nonzero duty on the opening input from now on (none may appear)."""
        seen: list[int] = []
        pin = self.acc.board.pin(IN_B)

        def on_change(p: Any, old: int, new: int) -> None:
            if p.pwm_duty_u16:
                seen.append(p.pwm_duty_u16)

        with self.sim.world.lock:
            pin.listeners.append(on_change)
        return seen

    def reboot(self, how: str) -> None:
        start = len(self.acc.log)
        if how == "cut":
            self.acc.cut_power()
        else:
            self.acc.unplug()
            time.sleep(0.5)
            self.acc.replug()
        self.acc.wait_for("ready", 60, start=start)
        self.connect()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_clamp_and_a_release_the_moving_car_confirms(sim: Simulation, runtime: str) -> None:
    m = Mount(sim, runtime)
    d = m.ask(msg.describe).value
    assert [c[msg.C_ID] for c in d[msg.D_CAPS]] == [
        reg.CAP_DEVICE_INFO, reg.CAP_CLAMP, reg.CAP_ROTATION, reg.CAP_PHONE_PRESENCE,
        reg.CAP_WIRELESS_CHARGER]
    assert d[msg.D_CLASS] == reg.CLASS_PHONE_MOUNT
    assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == OPEN and m.read(PRESENCE, 0) is False
    m.acc.insert_phone(0.7)
    m.wait_event(PRESENCE, reg.EV_PHONE_PRESENCE_CHANGED, True)
    opening = m.watch_opening()

    assert m.invoke(CLAMP, reg.CMD_CLAMP_CLAMP) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_STATE_CHANGED, CLAMPED)
    assert m.clamp_states() == [CLOSING, CLAMPED]
    assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == CLAMPED
    assert m.read(CLAMP, reg.ATTR_CLAMP_FAULT) == 0
    assert m.duties() == (0, 0)  # clamped = motor off; the worm gear holds
    held = m.position()
    assert 0.7 < held <= 0.73  # on the phone, squeezing it

    # The car says it moves: a release without confirm is refused and nothing moves.
    assert m.write(CLAMP, reg.ATTR_CLAMP_VEHICLE_MOVING, True) == msg.OK
    assert m.invoke(CLAMP, reg.CMD_CLAMP_RELEASE) == msg.CONFIRM_REQUIRED
    assert m.invoke(CLAMP, reg.CMD_CLAMP_RELEASE, [False]) == msg.CONFIRM_REQUIRED
    m.car.pump(0.5)
    assert m.position() == held and m.duties() == (0, 0)
    assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == CLAMPED and m.clamp_states() == [CLOSING, CLAMPED]
    assert opening == []

    # Confirmed by the occupant: released to the limit switch.
    assert m.invoke(CLAMP, reg.CMD_CLAMP_RELEASE, [True]) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_STATE_CHANGED, OPEN)
    assert m.clamp_states() == [CLOSING, CLAMPED, RELEASING, OPEN]
    assert m.acc.pin_level(LIMIT) == 0  # the switch is closed: fully open
    assert m.position() <= 0.005 and m.duties() == (0, 0)
    assert opening and max(opening) == 65535  # the watch sees an opening drive

    m.acc.remove_phone()
    m.wait_event(PRESENCE, reg.EV_PHONE_PRESENCE_CHANGED, False)
    assert m.read(PRESENCE, 0) is False


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_stall_faults_and_stops_the_motor(sim: Simulation, runtime: str) -> None:
    m = Mount(sim, runtime)
    m.acc.insert_phone(0.7)
    with sim.world.lock:
        m.acc.devices.motor.stall_at(0.3)  # something in the jaws, far before any phone
    assert m.invoke(CLAMP, reg.CMD_CLAMP_CLAMP) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_FAULT, 1)  # stall
    assert [e for e in m.events if e[0] == CLAMP] == [
        (CLAMP, reg.EV_CLAMP_STATE_CHANGED, CLOSING), (CLAMP, reg.EV_CLAMP_STATE_CHANGED, FAULT),
        (CLAMP, reg.EV_CLAMP_FAULT, 1)]
    assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == FAULT
    assert m.read(CLAMP, reg.ATTR_CLAMP_FAULT) == 1
    assert m.duties() == (0, 0) and m.acc.devices.motor.drive == 0
    pos = m.position()
    assert abs(pos - 0.3) < 0.01
    m.car.pump(0.5)
    assert m.position() == pos
    m.read_until(0, reg.ATTR_DEVICE_INFO_HEALTH, msg.HEALTH_CAUTION)
    # the car clears the obstruction's fault by releasing
    assert m.invoke(CLAMP, reg.CMD_CLAMP_RELEASE) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_STATE_CHANGED, OPEN)
    assert m.read(CLAMP, reg.ATTR_CLAMP_FAULT) == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_power_cuts_and_link_loss_never_open_the_clamp(sim: Simulation, runtime: str) -> None:
    m = Mount(sim, runtime)
    m.acc.insert_phone(0.7)
    m.car.pump(0.2)
    opening = m.watch_opening()

    # Power cut half-way through closing: the motor stops with the power, and the
    # rebooted mount reads "not fully open" back as clamped without moving.
    assert m.invoke(CLAMP, reg.CMD_CLAMP_CLAMP) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_STATE_CHANGED, CLOSING)
    m.car.pump(0.5)
    m.reboot("cut")
    mid = m.position()
    assert 0.05 < mid < 0.65
    assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == CLAMPED
    m.car.pump(0.5)
    assert m.position() == mid and m.duties() == (0, 0)
    m.acc.wait_for("mount: clamp clamped at boot")

    # The car tightens it on the phone (a clamp from a clamped state closes again).
    assert m.write(CLAMP, reg.ATTR_CLAMP_FORCE_LIMIT_MA, 800) == msg.OK
    assert m.invoke(CLAMP, reg.CMD_CLAMP_CLAMP) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_STATE_CHANGED, CLAMPED)
    held = m.position()
    assert 0.7 < held <= 0.73

    for how in ("cut", "unplug"):
        m.reboot(how)
        assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == CLAMPED, how
        assert m.read(CLAMP, reg.ATTR_CLAMP_FORCE_LIMIT_MA) == 800  # persisted
        m.car.pump(0.3)
        assert m.position() == held and m.duties() == (0, 0), how

    # The car goes silent past the 3 s liveness limit: the mount ends the session
    # (a phone removal raises no event to it) and nothing moves.
    time.sleep(4.0)
    before = len(m.events)
    m.acc.remove_phone()
    m.car.pump(0.5)
    assert m.events[before:] == []
    assert m.ask(msg.hello).ok
    assert m.read(CLAMP, reg.ATTR_CLAMP_STATE) == CLAMPED and m.read(PRESENCE, 0) is False
    assert m.position() == held and m.duties() == (0, 0)
    assert opening == []  # the opening side of the bridge was never driven


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rotation_only_when_the_phone_cannot_fall(sim: Simulation, runtime: str) -> None:
    m = Mount(sim, runtime)
    assert abs(m.acc.servo_angle() - 0) < 1  # portrait at boot
    # empty cradle: turning is harmless
    assert m.invoke(ROT, reg.CMD_ROTATION_ROTATE, [1]) == msg.OK
    m.wait_event(ROT, reg.EV_ROTATION_ROTATED, 1)
    assert abs(m.acc.servo_angle() - 90) < 1
    assert m.read(ROT, reg.ATTR_ROTATION_ORIENTATION) == 1
    assert m.read(ROT, reg.ATTR_ROTATION_ANGLE_DEG) == 90
    # a loose phone in an open cradle: refused, the servo stays
    m.acc.insert_phone(0.7)
    m.wait_event(PRESENCE, reg.EV_PHONE_PRESENCE_CHANGED, True)
    assert m.invoke(ROT, reg.CMD_ROTATION_ROTATE, [0]) == msg.INVALID_STATE
    m.car.pump(0.3)
    assert abs(m.acc.servo_angle() - 90) < 1
    # held by the clamp: turns
    assert m.invoke(CLAMP, reg.CMD_CLAMP_CLAMP) == msg.OK
    m.wait_event(CLAMP, reg.EV_CLAMP_STATE_CHANGED, CLAMPED)
    assert m.invoke(ROT, reg.CMD_ROTATION_ROTATE, [0]) == msg.OK
    m.wait_event(ROT, reg.EV_ROTATION_ROTATED, 0)
    assert abs(m.acc.servo_angle() - 0) < 1
    assert m.read(ROT, reg.ATTR_ROTATION_ANGLE_DEG) == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_charger_over_temperature_cut_off_and_recovery(sim: Simulation, runtime: str) -> None:
    m = Mount(sim, runtime)
    chg, ntc = m.acc.devices.charger, m.acc.devices.ntc
    assert m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_STATE) == 1  # idle
    assert abs(m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_TEMPERATURE) - 2500) <= 30
    assert m.acc.pin_level(CHG_EN) == 1
    with sim.world.lock:
        chg.charging = True
    m.wait_event(CHARGER, reg.EV_WIRELESS_CHARGER_STATE_CHANGED, 2)
    assert m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_POWER_MW) == 5000

    with sim.world.lock:
        ntc.temperature_c = 65.0  # over the 60.00 degC default cut-off
    m.wait_event(CHARGER, reg.EV_WIRELESS_CHARGER_STATE_CHANGED, 5)
    assert m.acc.pin_level(CHG_EN) == 0
    assert m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_POWER_MW) == 0
    assert abs(m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_TEMPERATURE) - 6500) <= 50
    m.read_until(0, reg.ATTR_DEVICE_INFO_HEALTH, msg.HEALTH_ADVISORY)
    m.acc.wait_for("charger over temperature")
    with sim.world.lock:
        ntc.temperature_c = 57.0  # inside the 5 degC hysteresis: stays off
    m.car.pump(1.5)
    assert m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_STATE) == 5 and m.acc.pin_level(CHG_EN) == 0
    with sim.world.lock:
        ntc.temperature_c = 50.0
    m.wait_event(CHARGER, reg.EV_WIRELESS_CHARGER_STATE_CHANGED, 2)
    assert m.acc.pin_level(CHG_EN) == 1

    # the car switches charging off; both settings persist
    assert m.write(CHARGER, reg.ATTR_WIRELESS_CHARGER_CUTOFF_TEMPERATURE, 4500) == msg.OK
    m.wait_event(CHARGER, reg.EV_WIRELESS_CHARGER_STATE_CHANGED, 5)  # 50 degC > 45
    assert m.write(CHARGER, reg.ATTR_WIRELESS_CHARGER_ENABLED, False) == msg.OK
    m.wait_event(CHARGER, reg.EV_WIRELESS_CHARGER_STATE_CHANGED, 0)
    settings = json.loads((sim.fs_root / "mount" / "settings.json").read_text())
    assert settings["cutoff_temperature"] == 4500 and settings["charger_enabled"] is False


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_out_of_range_writes_are_refused_without_actuation(sim: Simulation, runtime: str) -> None:
    m = Mount(sim, runtime)
    angle = m.acc.servo_angle()
    for slot, attr, bad in ((CLAMP, reg.ATTR_CLAMP_FORCE_LIMIT_MA, 99),
                            (CLAMP, reg.ATTR_CLAMP_FORCE_LIMIT_MA, 2001),
                            (CLAMP, reg.ATTR_CLAMP_VEHICLE_MOVING, 1),
                            (CHARGER, reg.ATTR_WIRELESS_CHARGER_CUTOFF_TEMPERATURE, 8001),
                            (CHARGER, reg.ATTR_WIRELESS_CHARGER_ENABLED, "no")):
        assert m.write(slot, attr, bad) == msg.INVALID_VALUE, (slot, attr, bad)
    assert m.write(CLAMP, reg.ATTR_CLAMP_STATE, CLAMPED) == msg.ACCESS_DENIED
    assert m.invoke(ROT, reg.CMD_ROTATION_ROTATE, [2]) == msg.INVALID_VALUE
    assert m.invoke(ROT, reg.CMD_ROTATION_ROTATE, []) == msg.INVALID_VALUE
    assert m.invoke(CLAMP, reg.CMD_CLAMP_RELEASE, ["yes"]) == msg.INVALID_VALUE
    m.car.pump(0.8)
    assert m.read(CLAMP, reg.ATTR_CLAMP_FORCE_LIMIT_MA) == 600
    assert m.read(CHARGER, reg.ATTR_WIRELESS_CHARGER_CUTOFF_TEMPERATURE) == 6000
    assert m.read(CLAMP, reg.ATTR_CLAMP_VEHICLE_MOVING) is False
    assert m.position() == 0.0 and m.duties() == (0, 0)
    assert m.acc.servo_angle() == angle
    assert [e for e in m.events if e[0] in (CLAMP, ROT)] == []
    assert not (sim.fs_root / "mount" / "settings.json").exists()
