"""Smoke tests of the issue 6 benchmarks (bench/issue6_bench.py) at reduced size: the
measurement machinery runs end to end and its numbers are internally consistent. No
performance assertion: the host is shared and has 2 cores; the figures live in `make bench`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import issue6_bench as b  # noqa: E402

from cabinlink import msg  # noqa: E402
from cabinlink import registry as reg  # noqa: E402


def test_plug_in_two_controllers_powered_together() -> None:
    # the reference car itself binds them (the bench car runs in the bus-load test)
    r = b.plug_in(2, "micropython", "controller", car="reference")
    assert r["all_bound"] and r["bound"] == 2, r
    for p in r["per"]:
        assert p["phase"] == "bound"
        # Claims follow the power-on; the first heartbeat comes after the settle time
        # (a little less than 250 ms between frame ends can show: the firmware starts the
        # settle when its controller accepts the claim, and the claim may wait to be sent).
        assert 0 <= p["on_to_claim_ms"] < p["on_to_ready_ms"] < p["on_to_desc_ms"] < p["on_to_bound_ms"]
        assert 235 <= p["claim_to_ready_ms"] < 2000, p
        # the buttons' reportable attribute and the encoder's position (device_info's health
        # and mode come with the heartbeat on CAN: the default bindings leave them out)
        assert p["subscriptions"] == 2 and p["refused"] == 0 and not p["failures"]
        assert p["desc_bytes"] > 100
    assert r["bound_max_ms"] >= r["bound_median_ms"] > 250
    assert r["frames_until_bound"] > 2 * (3 + 2 + 2 * 6)  # claims, hb, HELLO, DESCRIBE, SUBSCRIBEs
    assert 0 < r["bus_load_until_bound"] < 1


def test_reference_car_only_with_its_own_plan() -> None:
    with pytest.raises(ValueError, match="bindings"):
        b.plug_in(1, "cpython", "controller", plan="every reportable", car="reference")


def test_plans_follow_the_registry() -> None:
    desc = {7: [{0: reg.CAP_DEVICE_INFO, 2: list(range(14))},
                {0: reg.CAP_TEMPERATURE, 2: [0, 1, 2, 3]},
                {0: reg.CAP_LEDS, 2: [0, 1]}]}
    assert b.plan_all_reportable(desc) == [(0, 8, 1000, 60), (0, 9, 1000, 60),
                                           (1, 0, 1000, 60), (1, 1, 1000, 60)]
    assert b.plan_temperature(desc) == [(1, reg.ATTR_TEMPERATURE_VALUE, 1000, 1)]
    assert b.plan_temperature({7: []}) == []


def test_reference_car_plan_is_the_cars_own() -> None:
    # The car's planner with its default bindings: device_info's reportable attributes are
    # left to the heartbeat on CAN; numbers get the 1000 ms floor, states (bool) none.
    desc = {msg.D_VERSION: [0, 1], msg.D_CLASS: 2, msg.D_VENDOR: "v", msg.D_PRODUCT: "p",
            msg.D_SERIAL: "s", msg.D_FIRMWARE: "f", msg.D_HARDWARE: "h", msg.D_MAX_RX: 512,
            msg.D_CAPS: [{msg.C_ID: reg.CAP_DEVICE_INFO, msg.C_ATTRS: list(range(14))},
                         {msg.C_ID: reg.CAP_TEMPERATURE, msg.C_ATTRS: [0, 1, 2, 3]},
                         {msg.C_ID: reg.CAP_LEDS, msg.C_ATTRS: [0, 1]}]}
    plan = b.plan_reference_car(desc)
    assert plan and all(slot != 0 for slot, *_ in plan)
    assert (1, reg.ATTR_TEMPERATURE_VALUE, 1000, 60) in plan
    reportable = {(s, a) for s, a, *_ in b.plan_all_reportable(desc) if s != 0}
    assert {(s, a) for s, a, *_ in plan} == reportable


def test_bus_load_two_accessories_at_1hz() -> None:
    r = b.bus_load(2, "micropython", "ambient", window_s=2.0)
    assert r["all_bound"] and r["subscriptions"] == 2, r
    k = r["fps_by_kind"]
    assert 2.0 <= k["heartbeat"] <= 4.0  # two accessories and the car, once a second
    # one REPORT per accessory per second: 2..4 in a 2 s window (phase), measured over a
    # window a hair longer than 2 s
    assert 0.9 <= k["report"] <= 3.0
    assert 0 < r["load"] < 0.05
    # SimBus.load() agrees with the frames the listener saw, and with spec 7.8's arithmetic
    assert abs(r["load"] - r["busy_load"]) < 0.002
    assert 0.5 < r["load"] / r["spec_load"] < 2.0


def test_bulk_transfers_4k() -> None:
    r = b.bulk(4096)
    c29, c11 = r["ceiling"], r["ceiling_11bit"]
    assert 3500 < c29["frames_per_s"] < 3800 and c11["frames_per_s"] > c29["frames_per_s"]
    for name, x in (("isotp", r["isotp"]), ("sdo_block", r["sdo_block"])):
        assert x["ok"], name
        assert x["frames"] >= 4096 / 7, name
        assert 0.1 < x["of_ceiling"] <= 1.2 and 0.1 < x["of_own_ceiling"] <= 1.0, (name, x)
        assert 0 < x["bus_busy"] <= 1.0
    assert r["isotp"]["messages"] == 2  # 4095 + 1 bytes: ISO-TP's 12-bit FF_DL
    assert 130 < r["isotp"]["mean_frame_bits"] < 145 and 105 < r["sdo_block"]["mean_frame_bits"] < 125
