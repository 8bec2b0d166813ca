"""Bus-off in the middle of a subscription (issue 4 acceptance, spec 7.7), end to end: the
ambient accessory on the simulated bus reports its temperature every second; its CAN
transmissions then fail for one second (its frames destroyed by error frames, as on a
shorted bus), which drives it to bus-off again and again, and
afterwards the same subscription must report again, from the same address, in the same boot,
with the episode in the device log and the restarts backed off rather than looped.

Both CAN paths of the firmware are covered: the MCP2515 over SPI (ESP32-DevKitC: the chip
recovers by itself after 128 x 11 recessive bits; the driver sees bus-off and re-initialises it) and the on-chip
controller (ESP32-C6: machine.CAN stays bus-off until the firmware calls restart()).
Parametrized over CPython and the MicroPython unix port."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink_tools.sim.runner import RUNTIMES
from cabinlink_tools.sim.simulation import Simulation

from carhelper import SimCar

TEMP, VALUE = 1, 0  # the ambient app's slot order: device_info, temperature, ...
INFO = 0
HOLD_S = 1.0  # with the back-off the link is off <= 1.5 s: under the 3 s that ends sessions (7.7)


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as s:
        yield s


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("board", ["esp32-devkitc", "esp32-c6-devkitc-1"])
def test_bus_off_mid_report_then_reports_resume(sim: Simulation, board: str, runtime: str) -> None:
    acc = sim.add(board, "ambient", runtime, name="amb")
    acc.wait_for("ambient: sht4x@0x44", 60)
    car = SimCar(sim)
    a = car.find()
    reports: list[float] = []
    car.client.on_report = lambda _acc, slot, attr, _v: (
        reports.append(time.monotonic()) if (slot, attr) == (TEMP, VALUE) else None)
    assert car.ask(a, msg.subscribe, TEMP, VALUE, 0, 1).ok  # at least one report a second
    boots = car.ask(a, msg.read, INFO, reg.ATTR_DEVICE_INFO_BOOT_COUNT).value
    assert car.pump(10, lambda: len(reports) >= 2), "no reports before the fault"

    # The fault: every frame the accessory sends is destroyed by an error frame (its
    # transceiver sees a shorted bus), so its TEC climbs to bus-off, and again after each
    # recovery, until the bus is repaired.
    sim.bus.corrupt_next(1 << 30, match=lambda f: f.can_id & 0xFF == a)
    start = time.monotonic()
    car.pump(HOLD_S)
    sim.bus.clear_injections()
    released = time.monotonic()
    # nothing got through while the fault lasted (the car handles a frame a little after it
    # crossed the bus, and one report may have been on the wire when the fault struck)
    assert sum(1 for t in reports if start + 0.5 < t < released) == 0, reports
    chip = acc.devices.can  # the MCP2515 model; None for the on-chip controller
    node = chip.node if chip is not None else sim.bus.find("amb")
    assert node is not None and node.n_busoff >= 1

    assert car.pump(15, lambda: any(t > released for t in reports)), \
        f"no report after the bus came back; log: {acc.log[-8:]}"
    assert car.pump(5, lambda: sum(1 for t in reports if t > released) >= 2)
    # same unit, same boot, same address, and it says what happened
    assert car.find() == a
    assert car.ask(a, msg.read, INFO, reg.ATTR_DEVICE_INFO_BOOT_COUNT).value == boots
    acc.wait_for("can: bus-off", 5)
    if chip is None:
        # machine.CAN stays bus-off until the firmware's restart(); the persisting fault sent it
        # back each time. With the back-off (100 ms doubling) one second holds a few restarts,
        # a restart loop hundreds. (An MCP2515 recovers by itself, in hardware; the exact
        # back-off sequence is checked in tests/mp/test_can_link.py.)
        assert 1 <= node.n_busoff <= 6, node.n_busoff
