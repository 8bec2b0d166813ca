"""The reference car (host/cabinlink_tools/car, docs/tools/car.md) against the real firmware
on the simulation: discovery over CAN and BLE, binding by capability, reports, bindings
acting on the simulated vehicle, the phone mount's lock policy, unplug and re-plug with the
spec's bounds, tracking by NAME across an address change, record and replay, the CLI, and
bindings files rejected with the field named.

Time bounds of the spec (offline within 3 s, back within 1 s) are measured in the
simulation's time: bus time stamps of the frames (SimBus listener) against the bus clock at
the moment the car raised its event. The only margin is the heartbeat period, where the
spec's bound starts at a heartbeat that the unplug may have come just after."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import can
import pytest

from cabinlink import claim
from cabinlink_tools.car import Car, CarEvent
from cabinlink_tools.car.bindings import BindingsError, load_bindings, parse_bindings
from cabinlink_tools.sim.runner import RUNTIMES
from cabinlink_tools.sim.simulation import Accessory, Simulation, default_config
from cabinlink_tools.sim.vehicle import Vehicle, couple_cabin

BOARD = "esp32-devkitc"
HEARTBEAT_S = 1.0
CLI = [sys.executable, "-m", "cabinlink_tools.cli"]


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation() as s:
        yield s


def run(coro: Coroutine[Any, Any, Any], timeout: float = 120.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def boot(sim: Simulation, app: str, runtime: str = "cpython", name: str | None = None,
         config: dict[str, Any] | None = None) -> Accessory:
    acc = sim.add(BOARD, app, runtime, name=name or app[:3], config=config)
    acc.wait_for(f"{app}:", 60)
    return acc


class BusClock:
    """Bus times of each accessory's frames (SimBus listener: the simulation's time)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.last: dict[int, float] = {}
        self.claims: dict[int, list[float]] = {}
        sim.bus.add_listener(self)

    def __call__(self, ev: Any) -> None:
        f = ev.frame
        if ev.kind != "frame" or f is None or not f.extended:
            return
        sa = f.can_id & 0xFF
        self.last[sa] = ev.timestamp
        if (f.can_id >> 16) & 0xFF == 0xEE:
            self.claims.setdefault(sa, []).append(ev.timestamp)

    def now(self) -> float:
        return self.sim.bus.now()


def stamp(car: Car, sim: Simulation, kinds: tuple[str, ...]) -> list[tuple[float, CarEvent]]:
    """Every later event of ``kinds`` with the bus clock when the car raised it."""
    seen: list[tuple[float, CarEvent]] = []
    car.on(lambda ev: seen.append((sim.bus.now(), ev)), kinds)
    return seen


def comparable(timeline: list[CarEvent]) -> list[tuple[str, str, str]]:
    """What a replay must reproduce: everything but the vehicle's outside changes, the bus
    load and the car's own start and stop."""
    return [(e.kind, e.who, e.text) for e in timeline
            if e.kind not in ("vehicle", "bus")
            and not (e.kind == "car" and e.data.get("what") in ("stopped", "ble_scanning"))]


async def stimulus(fn: Any, *args: Any) -> None:
    """A stimulus that takes real time (a knob turn) runs off the car's loop."""
    await asyncio.to_thread(fn, *args)


# --- CAN: discovery, binding by capability, reports, a button and the knob ------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_can_controller_is_bound_by_capability_and_drives_the_media(sim: Simulation,
                                                                    runtime: str) -> None:
    ctl = boot(sim, "controller", runtime, "ctl")

    async def main() -> None:
        async with Car(can=f"cabinlink:{sim.bus_address}") as car:
            acc = await car.wait_ready("ctl", timeout=30)
            assert acc.transport == "can" and acc.name is not None and acc.name >> 63
            assert acc.class_name == "controller" and isinstance(acc.address, int)
            assert 0x80 <= acc.address <= 0xF7
            d = acc.description
            assert d is not None and [c.name for c in d.capabilities] == [
                "device_info", "buttons", "rotary_encoder", "leds", "haptic"]
            # bound by capability: every default binding on buttons / rotary_encoder applies,
            # the air-quality ones do not (no co2 here)
            assert "volume knob" in acc.bindings and "play/pause" in acc.bindings
            assert not any("air" in b and "fresh/recirculation" not in b for b in acc.bindings)
            assert set(acc.subscriptions) == {"buttons.pressed", "rotary_encoder.position"}
            v = car.vehicle
            vol0, playing0 = v.volume, v.playing

            n = len(car.timeline)
            await stimulus(ctl.press, 0)
            await car.wait_for("binding", acc=acc, since=n,
                               match=lambda e: e.data["action"] == "media.play_pause")
            assert v.playing is (not playing0)
            await car.wait_for("value", acc=acc, since=n,  # the report of the subscription
                               match=lambda e: e.data["path"] == "buttons.pressed" and e.data["value"] == 1)
            await car.wait_for("request", acc=acc, since=n,  # the binding's haptic feedback
                               match=lambda e: e.data["path"] == "haptic.pulse" and e.data["status"] == 0)
            await stimulus(ctl.release, 0)

            n = len(car.timeline)
            await stimulus(ctl.turn, 3)
            await car.wait_for("value", acc=acc, since=n, timeout=15,
                               match=lambda e: e.data["path"] == "rotary_encoder.position"
                               and e.data["value"] == 3)
            assert v.volume == vol0 + 3
            n = len(car.timeline)
            await stimulus(ctl.turn, -5)
            await car.wait_for("value", acc=acc, since=n, timeout=15,
                               match=lambda e: e.data["path"] == "rotary_encoder.position"
                               and e.data["value"] == -2)
            assert v.volume == vol0 - 2
            assert acc.value("rotary_encoder.position") == -2
            assert await acc.read("buttons.count") == 5

    run(main())


# --- BLE: advertising, CO2 event -> fresh air; an accessory on both is used over CAN ------------
def test_ble_ambient_co2_event_turns_on_fresh_air_and_both_transports_use_can(sim: Simulation) -> None:
    with sim.world.lock:  # stale air already: the first CO2 sample is "poor"
        sim.cabin.occupants = 0
        sim.cabin.ach_recirc = 1e-9
        sim.cabin.set_co2(1600)
    cfg = default_config(BOARD, "ambient", "amb", ble=True)
    cfg["links"]["can"]["enabled"] = False  # BLE only
    boot(sim, "ambient", name="amb", config=cfg)
    boot(sim, "controller", name="both", config=default_config(BOARD, "controller", "both", ble=True))
    vehicle = Vehicle()
    couple_cabin(vehicle, sim.cabin, sim.world.lock)

    async def main() -> None:
        async with Car(can=f"cabinlink:{sim.bus_address}", ble=sim.ble, vehicle=vehicle) as car:
            amb = await car.wait_ready("amb", timeout=40)
            assert amb.transport == "ble" and amb.class_name == "ambient"
            assert isinstance(amb.address, str) and amb.uid == f"ble:{amb.address}"
            # over BLE the car subscribes health and mode (spec 8.7), and every sensor value
            assert {"device_info.health", "device_info.mode", "co2.value", "co2.level",
                    "temperature.value"} <= set(amb.subscriptions)
            assert "stale air: fresh air" in amb.bindings
            assert not vehicle.fresh_air and not sim.cabin.fresh_air
            ev = await car.wait_for("binding", acc=amb, since=0, timeout=30,
                                    match=lambda e: e.data["action"] == "climate.fresh_air")
            assert ev.data["result"] == "fresh air"
            assert vehicle.fresh_air and sim.cabin.fresh_air
            await car.wait_for("value", acc=amb, since=0, timeout=15,
                               match=lambda e: e.data["path"] == "co2.value" and e.data["value"] >= 1500)

            both = await car.wait_ready("both", timeout=30)
            assert both.transport == "can"  # also advertising over BLE, used over CAN (2.2)
            await asyncio.sleep(0.5)
            assert [a.label for a in car.accessories() if a.transport == "ble"] == ["amb"]
            assert any(e.kind == "car" and e.data.get("what") == "ble_duplicate"
                       and e.acc == both.uid for e in car.timeline)

    run(main())


def test_a_bumble_stack_over_hci_tcp_finds_a_ble_controller(sim: Simulation) -> None:
    """The car's own Bumble stack in its own loop, on the simulated radio served as HCI over
    TCP (what `cabinlink sim --ble` offers to `cabinlink car --ble bumble:tcp-client:...`)."""
    cfg = default_config(BOARD, "controller", "blectl", ble=True)
    cfg["links"]["can"]["enabled"] = False
    ctl = boot(sim, "controller", name="blectl", config=cfg)
    port = sim.ble.serve_hci()

    async def main() -> None:
        async with Car(ble=f"bumble:tcp-client:127.0.0.1:{port}") as car:
            acc = await car.wait_ready("blectl", timeout=40)
            assert acc.transport == "ble" and acc.address == acc.uid[4:]
            n = len(car.timeline)
            await stimulus(ctl.press, 2)
            await car.wait_for("binding", acc=acc, since=n, match=lambda e: e.data["action"] == "media.previous")
            assert car.vehicle.track == 12
            await stimulus(ctl.release, 2)
            snap = json.loads(json.dumps(car.snapshot()))
            (a,) = snap["accessories"]
            assert a["label"] == "blectl" and a["transport"] == "ble" and a["ready"]
            assert {c["name"] for c in a["description"]["capabilities"]} >= {"buttons", "rotary_encoder"}
            assert snap["vehicle"]["media.track"] == 12 and snap["car"]["ble"] == "bumble"
            assert all(json.dumps(e.to_dict()) for e in car.timeline)

    run(main())


# --- unplug -> offline within 3 s; re-plug -> back with bindings and subscriptions within 1 s ----
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unplug_offline_within_3s_and_replug_back_within_1s(sim: Simulation, runtime: str) -> None:
    ctl = boot(sim, "controller", runtime, "ctl")
    bus = BusClock(sim)

    async def main() -> None:
        async with Car(can=f"cabinlink:{sim.bus_address}") as car:
            acc = await car.wait_ready("ctl", timeout=30)
            subs = dict(acc.subscriptions)
            addr = acc.address
            assert isinstance(addr, int)
            marks = stamp(car, sim, ("offline", "online", "ready", "restarted"))
            await asyncio.sleep(0.3)
            t_unplug = bus.now()
            n = len(car.timeline)
            await stimulus(ctl.unplug)
            await car.wait_for("offline", acc=acc, since=n, timeout=10)
            t_off, ev = marks[-1]
            last = bus.last[addr]
            assert ev.data["why"] == "silent" and not acc.online and not acc.ready
            assert t_off - last >= 3.0, "offline before 3000 ms of silence (M-7.6-3)"
            assert t_off - t_unplug <= 3.0 + HEARTBEAT_S, (t_off - t_unplug, t_off - last)

            n_claims = len(bus.claims.get(addr, []))
            n = len(car.timeline)
            await stimulus(ctl.replug)
            await car.wait_for("ready", acc=acc, since=n, timeout=60)
            t_ready = [t for t, e in marks if e.kind == "ready"][-1]
            claims = bus.claims[addr][n_claims:]
            assert claims, "no address claim after the re-plug"
            assert t_ready - claims[0] <= 1.0, f"back {t_ready - claims[0]:.3f} s after its claim"
            kinds = [e.kind for _, e in marks]
            assert kinds[kinds.index("offline"):] == ["offline", "restarted", "online", "ready"]
            assert acc.restarts == 1 and acc.address == addr and car.accessories() == [acc]
            assert acc.subscriptions == subs  # re-subscribed
            # the bindings work again, and the reports flow again
            track = car.vehicle.track
            n = len(car.timeline)
            await stimulus(ctl.press, 1)
            await car.wait_for("binding", acc=acc, since=n, match=lambda e: e.data["action"] == "media.next")
            await car.wait_for("value", acc=acc, since=n,
                               match=lambda e: e.data["path"] == "buttons.pressed" and e.data["value"] == 2)
            assert car.vehicle.track == track + 1

    run(main())


def test_a_quick_power_cycle_is_a_restart_and_the_session_comes_back(sim: Simulation) -> None:
    """Power off and on within the 3 s: never offline, but the Address Claimed at its own
    address says it restarted (M-7.3-7), so the car says HELLO again, re-reads DESCRIBE and
    re-subscribes (M-5.3-8, M-6.6-4); without that new session no event would reach it."""
    ctl = boot(sim, "controller", "micropython", "ctl")

    async def main() -> None:
        async with Car(can=f"cabinlink:{sim.bus_address}") as car:
            acc = await car.wait_ready("ctl", timeout=30)
            n = len(car.timeline)
            await stimulus(ctl.cut_power, 0.2)
            await car.wait_for("ready", acc=acc, since=n, timeout=30)
            kinds = [e.kind for e in car.timeline[n:] if e.acc == acc.uid and e.kind not in ("value", "request")]
            assert kinds == ["restarted", "described", "ready"], kinds
            assert acc.restarts == 1 and acc.online
            m = len(car.timeline)
            await stimulus(ctl.press, 1)
            await car.wait_for("binding", acc=acc, since=m, match=lambda e: e.data["action"] == "media.next")

    run(main())


# --- an address change is tracked by NAME (M-7.3-7) -----------------------------------------------
def test_address_change_is_tracked_by_name(sim: Simulation) -> None:
    ctl = boot(sim, "controller", name="ctl")
    peer = sim.can_peer()

    async def main() -> None:
        async with Car(can=f"cabinlink:{sim.bus_address}") as car:
            acc = await car.wait_ready("ctl", timeout=30)
            old = acc.address
            assert isinstance(old, int) and acc.name is not None
            # a newcomer with a lower NAME claims that address: the controller must give it up
            # (spec 7.3) and claim the next free one; the car follows it by NAME
            newcomer = claim.make_name(1, 0xC0)
            assert newcomer < acc.name
            peer.send(can.Message(arbitration_id=claim.claim_id(old), is_extended_id=True,
                                  data=claim.name_bytes(newcomer)))
            ev = await car.wait_for("moved", acc=acc, timeout=10)
            assert ev.data == {"old": old, "new": acc.address} and acc.address != old
            assert acc.ready and acc is car.accessory(acc.name)
            await asyncio.sleep(0.4)  # the new address settles (250 ms) before traffic
            vol = car.vehicle.volume
            n = len(car.timeline)
            await stimulus(ctl.turn, 2)
            await car.wait_for("value", acc=acc, since=n, timeout=15,
                               match=lambda e: e.data["path"] == "rotary_encoder.position"
                               and e.data["value"] == 2)
            assert car.vehicle.volume == vol + 2
            assert await acc.read("buttons.count") == 5  # requests go to the new address
            described = [e for e in car.timeline if e.kind == "described" and e.acc == acc.uid]
            assert len(described) == 1  # same session: no restart, no second DESCRIBE
            other = car.accessory(newcomer)
            assert other is not None and other.address == old and not other.ready

    run(main())


# --- the phone mount's lock policy ------------------------------------------------------------------
def test_moving_vehicle_locks_the_mount_and_the_car_policy_asks_for_confirmation(sim: Simulation) -> None:
    mnt = boot(sim, "mount", "micropython", "mnt")

    async def main() -> None:
        async with Car(can=f"cabinlink:{sim.bus_address}") as car:
            acc = await car.wait_ready("mnt", timeout=30)
            assert acc.value("clamp.vehicle_moving") is False  # written at the HELLO
            assert "mount policy: vehicle_moving" in acc.bindings
            await stimulus(mnt.insert_phone)
            await car.wait_for("value", acc=acc, since=0, match=lambda e:
                               e.data["path"] == "phone_presence.present" and e.data["value"] is True)
            assert await car.clamp_phone() == "clamped"
            await car.wait_for("value", acc=acc, since=0, timeout=15, match=lambda e:
                               e.data["path"] == "clamp.state" and e.data["text"] == "clamped")

            n = len(car.timeline)
            car.vehicle.set_speed(60)  # the car tells the mount at once
            await car.wait_for("request", acc=acc, since=n, match=lambda e:
                               e.data["path"] == "clamp.vehicle_moving" and e.data["status"] == 0)
            assert await acc.read("clamp.vehicle_moving") is True
            pos = mnt.motor_position()
            assert await car.release_phone() == "confirm_required"  # the mount refused
            await asyncio.sleep(0.5)
            assert mnt.motor_position() == pos and acc.value("clamp.state") == 2  # clamped
            n = len(car.timeline)
            assert await car.release_phone(confirm=True) == "released"
            await car.wait_for("value", acc=acc, since=n, timeout=15, match=lambda e:
                               e.data["path"] == "clamp.state" and e.data["text"] == "open")

            n = len(car.timeline)
            car.set_bindings(parse_bindings({"mount": {"release_while_moving": "refuse"}}, "t"))
            await car.wait_for("ready", acc=acc, since=n)  # a new session with the new policy
            n = len(car.timeline)
            assert await car.clamp_phone() == "clamped"
            await car.wait_for("value", acc=acc, since=n, timeout=15, match=lambda e:
                               e.data["path"] == "clamp.state" and e.data["text"] == "clamped")
            assert (await car.release_phone(confirm=True)).startswith("refused")
            assert acc.value("clamp.state") == 2
            car.vehicle.set_speed(0)
            await car.wait_for("request", acc=acc, match=lambda e:
                               e.data["path"] == "clamp.vehicle_moving" and e.data["status"] == 0)
            assert await acc.read("clamp.vehicle_moving") is False
            assert await car.release_phone() == "released"  # standing: no confirmation

    run(main())


# --- record, then replay: the same timeline -----------------------------------------------------------
def test_record_then_replay_gives_the_same_timeline(sim: Simulation, tmp_path: Path) -> None:
    ctl = boot(sim, "controller", name="ctl")
    log = tmp_path / "drive.log"
    from cabinlink_tools.sim.canbus import CandumpLogger

    bus_log = CandumpLogger(tmp_path / "bus.log", sim.bus)  # the bus as candump sees it

    async def live() -> list[CarEvent]:
        async with Car(can=f"cabinlink:{sim.bus_address}", record=log) as car:
            acc = await car.wait_ready("ctl", timeout=30)
            await stimulus(ctl.press, 0)
            await car.wait_for("request", acc=acc, since=0, match=lambda e:  # haptic feedback
                               e.data["path"] == "haptic.pulse")
            await stimulus(ctl.release, 0)
            await stimulus(ctl.turn, 2)
            await car.wait_for("value", acc=acc, since=0, timeout=15, match=lambda e:
                               e.data["path"] == "rotary_encoder.position" and e.data["value"] == 2)
            n = len(car.timeline)
            await stimulus(ctl.unplug)
            await car.wait_for("offline", acc=acc, since=n, timeout=10)
            n = len(car.timeline)
            await stimulus(ctl.replug)
            await car.wait_for("ready", acc=acc, since=n, timeout=60)
            await stimulus(ctl.press, 3)  # -> fresh air
            await car.wait_for("binding", acc=acc, since=0, match=lambda e:
                               e.data["action"] == "climate.toggle_air")
            await asyncio.sleep(0.3)
            return car.timeline

    recorded = run(live())
    lines = log.read_text().splitlines()
    assert lines[0].endswith("can0 18EEFF00#0100000000BFFE00")  # the car's claim, candump -L

    async def replay() -> list[CarEvent]:
        return await Car.replay(log).run()

    replayed = run(replay())
    assert comparable(replayed) == comparable(recorded)
    bus_log.close()  # any candump -L of the bus replays the same (frames stamped at bus time)
    assert comparable(run(Car.replay(tmp_path / "bus.log").run())) == comparable(recorded)
    kinds = [k for k, _, _ in comparable(recorded)]
    for k in ("discovered", "online", "described", "ready", "event", "binding", "value",
              "offline", "restarted", "request"):
        assert k in kinds, k
    # the replayed car ends in the same vehicle state, from the same binding actions
    live_events = [(e.kind, e.text) for e in recorded if e.kind == "binding"]
    assert [(e.kind, e.text) for e in replayed if e.kind == "binding"] == live_events
    # and at the same times, within the clock steps of the replay
    for a, b in zip([e for e in recorded if e.kind == "binding"],
                    [e for e in replayed if e.kind == "binding"]):
        assert abs(a.t - b.t) < 0.05


# --- the CLI -------------------------------------------------------------------------------------------
def test_cabinlink_car_cli_prints_the_timeline_records_and_replays(sim: Simulation,
                                                                  tmp_path: Path) -> None:
    ctl = boot(sim, "controller", name="ctl")
    log = tmp_path / "cli.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(CLI + ["car", "--can", f"cabinlink:{sim.bus_address}", "--duration", "6",
                                "--record", str(log)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    out: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            out.append(line.rstrip("\n"))
            if "ctl" in line and "ready:" in line:
                ready.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert ready.wait(40), out
    ctl.press(0)
    time.sleep(0.15)  # a contact shorter than the firmware reads is noise, not a press
    ctl.release(0)
    assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    t.join(5)
    text = "\n".join(out)
    assert "buttons.press 0 -> media.play_pause: playing" in text
    assert "1 accessory:" in text and "ctl: controller over CAN" in text

    r = subprocess.run(CLI + ["car", "--replay", str(log)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr

    def body(lines: list[str]) -> list[str]:
        keep = []
        for ln in lines:
            if ln.startswith(" ") and "  car            stopped" not in ln \
                    and "  vehicle  " not in ln and ln.strip()[0].isdigit():
                keep.append(ln.split(None, 1)[1])
        return keep

    live_lines = body(out)
    assert live_lines and body(r.stdout.splitlines()) == live_lines

    r = subprocess.run(CLI + ["car", "--replay", str(log), "--can", "virtual:x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot be combined" in r.stderr


def test_car_help_is_complete() -> None:
    r = subprocess.run(CLI + ["car", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for opt in ("--can", "--ble", "--bindings", "--record", "--replay", "--duration", "--address",
                "--console", "--check", "socketcan:can0", "cabinlink:127.0.0.1:PORT", "bleak"):
        assert opt in r.stdout, opt


# --- bindings files ------------------------------------------------------------------------------------
BAD = [
    ({"binding": [{"event": "buttons.press", "do": "media.plya"}]}, "binding[0].do", "unknown action"),
    ({"binding": [{"event": "buttons.presss", "do": "media.play"}]}, "binding[0].event",
     "not an event of buttons"),
    ({"binding": [{"event": "wipers.on", "do": "media.play"}]}, "binding[0].event",
     "unknown capability 'wipers'"),
    ({"binding": [{"do": "media.play"}]}, "binding[0]", "exactly one of event"),
    ({"binding": [{"event": "buttons.press", "do": "media.play"},
                  {"event": "co2.air_quality", "data": "stale", "do": "climate.fresh_air"}]},
     "binding[1].data", "'stale' is not a value of level"),
    ({"binding": [{"event": "buttons.press", "do": "media.volume"}]}, "binding[0].do",
     "needs an event with a number"),
    ({"binding": [{"value": "co2.value", "do": "climate.fresh_air"}]}, "binding[0]",
     "needs above, below or equals"),
    ({"binding": [{"value": "co2.offset", "above": 1, "do": "climate.fresh_air"}]},
     "binding[0].value", "not reportable"),
    ({"binding": [{"event": "buttons.press", "do": "media.play", "haptic": 30}]},
     "binding[0].haptic", "unknown key"),
    ({"subscribe": {"min_ms": -1}}, "subscribe.min_ms", "integer 0..65535"),
    ({"subscribe": {"max_s": 7200}}, "subscribe.max_s", "integer 1..3600"),
    ({"subscribe": {"override": [{"attribute": "co2.value", "min_ms": "fast"}]}},
     "subscribe.override[0].min_ms", "integer"),
    ({"mount": {"release_while_moving": "sometimes"}}, "mount.release_while_moving", "one of ask"),
    ({"bindings": []}, "bindings", "unknown key"),
]


@pytest.mark.parametrize("doc,field,problem", BAD)
def test_a_bad_bindings_document_is_rejected_naming_the_field(doc: dict[str, Any], field: str,
                                                               problem: str) -> None:
    with pytest.raises(BindingsError) as e:
        parse_bindings(doc, "my.toml")
    assert e.value.field == field
    assert problem in str(e.value) and str(e.value).startswith(f"my.toml: {field}: ")


def test_bindings_files_toml_and_json(tmp_path: Path) -> None:
    good = tmp_path / "b.toml"
    good.write_text('version = 1\n[[binding]]\nname = "warm"\nevent = "buttons.press"\n'
                    'data = 2\ndo = "climate.warmer"\nstep = 2\n'
                    '[[binding]]\nvalue = "co2.value"\nabove = 1400\ndo = "climate.fresh_air"\n')
    b = load_bindings(good)
    assert [x.name for x in b.bindings] == ["warm", "co2.value -> climate.fresh_air"]
    assert b.bindings[1].kind == "value" and b.bindings[1].above == 1400
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"binding": [{"event": "buttons.press", "step": 500,
                                            "do": "climate.warmer"}]}))
    with pytest.raises(BindingsError, match=r"b.json: binding\[0\].step: must be an integer -100..100"):
        load_bindings(bad)
    broken = tmp_path / "c.toml"
    broken.write_text("[[binding]\n")
    with pytest.raises(BindingsError, match="not valid TOML"):
        load_bindings(broken)
    r = subprocess.run(CLI + ["car", "--bindings", str(bad), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "binding[0].step" in r.stderr
    assert len(load_bindings().bindings) >= 9  # the shipped default is valid


def test_vehicle_media_climate_and_the_cabin_coupling(sim: Simulation) -> None:
    v = Vehicle()
    seen: list[tuple[str, object]] = []
    v.listeners.append(lambda k, x: seen.append((k, x)))
    v.play_pause()
    v.next_track()
    v.volume_step(+50)
    v.setpoint_step(3)
    v.set_fresh_air(True)
    assert seen == [("media.playing", True), ("media.track", 2), ("media.volume", 40),
                    ("climate.setpoint_c", 22.5), ("climate.fresh_air", True)]
    v.volume_step(-100)
    assert v.volume == 0
    with pytest.raises(ValueError, match="setpoint"):
        v.set_setpoint(40)
    undo = couple_cabin(v, sim.cabin, sim.world.lock)
    assert sim.cabin.fresh_air and sim.cabin.hvac_setpoint == 22.5
    v.set_fresh_air(False)
    assert not sim.cabin.fresh_air
    undo()
    v.set_fresh_air(True)
    assert not sim.cabin.fresh_air
    assert v.snapshot()["media.volume"] == 0 and v.snapshot()["moving"] is False


# --- the engine alone, on a manual clock: the car-side MUSTs, exactly --------------------------------
class _FakeClaim:
    ready = True

    def request_claims(self, da: int = 0xFF) -> bool:
        return True


class _FakeLink:
    """What the engine needs of a CanLink; records the messages the car sends."""

    def __init__(self) -> None:
        self.claim = _FakeClaim()
        self.channels: dict[int, Any] = {}
        self.sent: list[tuple[int, list[Any]]] = []

    def send(self, peer: int, data: bytes, urgent: bool = False) -> bool:
        from cabinlink.codec import decode

        self.sent.append((peer, decode(data)))
        return True


def test_engine_car_side_rules_on_a_manual_clock() -> None:
    from cabinlink import msg
    from cabinlink.clock import ManualClock
    from cabinlink.codec import encode
    from cabinlink_tools.car.engine import Engine

    clock = ManualClock()
    events: list[tuple[str, str]] = []
    eng = Engine(clock, lambda kind, acc, text, data: events.append((kind, text)))
    from cabinlink_tools.car.bindings import BindingRunner

    eng.planner = BindingRunner(load_bindings(), Vehicle(), eng.request, lambda *a, **k: None,
                                lambda: list(eng.accessories.values()))
    link = _FakeLink()
    side = eng.add_can(link)
    name = claim.make_name(0x1234, 0xC2)
    eng.can_claim(side, 0x85, name)
    acc = eng.accessories[f"can:{name:016X}"]

    def hear(m: list[Any]) -> None:
        eng.can_receive(side, 0x85, encode(m))

    def last() -> list[Any]:
        return link.sent[-1][1]

    hear(msg.heartbeat(65534))
    assert acc.online and last()[:1] == [msg.HELLO]  # HELLO first (M-5.3-8)
    tid = last()[1]
    hear(msg.result(tid + 7, msg.OK, [0, 1, 2]))  # no such request: ignored (M-5.2-4)
    assert len(link.sent) == 1
    hear(msg.result(tid, msg.OK, [0, 1, 2]))
    assert last() == [msg.DESCRIBE, tid + 1]
    desc = {msg.D_VERSION: [0, 1], msg.D_CLASS: 2, msg.D_VENDOR: "V", msg.D_PRODUCT: "P",
            msg.D_SERIAL: "S1", msg.D_CAPS: [
                {msg.C_ID: 1, msg.C_INSTANCE: 0, msg.C_ATTRS: [0, 1, 2, 8, 9]},
                {msg.C_ID: 0x7777, msg.C_INSTANCE: 0, msg.C_ATTRS: [0]},  # unknown: slot kept
                {msg.C_ID: 0x0102, msg.C_INSTANCE: 0, msg.C_ATTRS: [0, 1, 7, 23], 99: "new key"}],
            msg.D_MAX_RX: 512, 42: "unknown key"}
    hear(msg.result(last()[1], msg.OK, desc))
    assert acc.description is not None and acc.description.capabilities[1].name is None
    assert acc.description.capabilities[2].attributes == (0, 1, 7)  # attr 23 unknown (M-3.6-4)
    subs = []
    while last()[0] == msg.SUBSCRIBE:
        subs.append(tuple(last()[2:4]))
        hear(msg.result(last()[1], msg.OK, last()[4:6]))
        if acc.ready:
            break
    assert sorted(subs) == [(2, 0), (2, 1), (2, 7)] and acc.ready  # CAN: no device_info subs
    n = len(events)
    hear(msg.report(1, 0, 5))  # the unknown capability's slot
    hear(msg.report(9, 0, 5))  # no such slot
    hear(msg.report(2, 23, 5))  # unknown attribute
    hear([msg.REPORT, 2])  # too short
    eng.can_receive(side, 0x85, b"\xff\x00")  # not CBOR
    assert events[n:] == [] and eng.malformed == 2
    hear(msg.report(2, 0, 1250))
    assert events[-1] == ("value", "co2.value = 1250 ppm")

    clock.advance(1000)
    eng.poll()
    hear(msg.heartbeat(65535))
    clock.advance(1000)
    eng.poll()
    hear(msg.heartbeat(0))  # the uptime wrapped: no restart
    assert acc.restarts == 0 and acc.ready
    clock.advance(1000)
    eng.poll()
    hear(msg.heartbeat(1))
    clock.advance(3000)
    eng.poll()
    assert acc.online, "offline after exactly 3000 ms: only after MORE than 3000 (M-7.6-3)"
    clock.advance(1)
    eng.poll()
    assert not acc.online and not acc.ready and events[-1] == ("offline", "offline: no frame for 3 s")
    sent = len(link.sent)
    hear(msg.heartbeat(5))  # back, uptime went on from 1: the same boot, no DESCRIBE needed
    assert acc.online and acc.restarts == 0 and last()[0] == msg.HELLO and len(link.sent) == sent + 1
    hear(msg.result(last()[1], msg.OK, [0, 1, 2]))
    assert last()[0] == msg.SUBSCRIBE  # straight to the subscriptions
    hear(msg.heartbeat(0))  # uptime 5 s backwards: restarted -> HELLO, then DESCRIBE again
    assert acc.restarts == 1 and ("restarted", "restarted: its uptime went backwards") in events
    assert last()[0] == msg.HELLO
    hear(msg.result(last()[1], msg.OK, [0, 1, 2]))
    assert last()[0] == msg.DESCRIBE


def test_engine_follows_an_address_contest_at_power_on() -> None:
    # Two accessories powered together prefer the same address (spec 7.3): both claim it,
    # the lower NAME defends it, the higher moves to the next one. The defence is no
    # restart, and the winner's first heartbeat (250 ms after its FIRST claim, so sooner
    # than 250 ms after its defence) is the winner's, not a late frame of the loser.
    from cabinlink import msg
    from cabinlink.clock import ManualClock
    from cabinlink.codec import encode
    from cabinlink_tools.car.engine import Engine

    clock = ManualClock()
    events: list[tuple[str, str]] = []
    eng = Engine(clock, lambda kind, acc, text, data: events.append((kind, text)))
    link = _FakeLink()
    side = eng.add_can(link)
    low, high = claim.make_name(0x1068FC, 0xC3), claim.make_name(0x1699D4, 0xC3)
    eng.can_claim(side, 0x8C, low)
    clock.advance(1)
    eng.can_claim(side, 0x8C, high)
    clock.advance(40)
    eng.can_claim(side, 0x8C, low)  # the defence
    clock.advance(8)
    eng.can_claim(side, 0x8D, high)  # the loser moves on
    winner, loser = eng.accessories[f"can:{low:016X}"], eng.accessories[f"can:{high:016X}"]
    assert (winner.address, loser.address) == (0x8C, 0x8D)
    assert not [e for e in events if e[0] == "restarted"], events
    clock.advance(195)  # 244 ms after the first claim
    eng.can_receive(side, 0x8C, encode(msg.heartbeat(0)))
    assert winner.online and not loser.online
    assert link.sent == [(0x8C, [msg.HELLO, link.sent[0][1][1], 0, 1])]  # to the winner only
    clock.advance(57)
    eng.can_receive(side, 0x8D, encode(msg.heartbeat(0)))
    assert loser.online and link.sent[-1][0] == 0x8D and link.sent[-1][1][0] == msg.HELLO


def test_two_cars_on_one_address_the_higher_name_gives_way_on_a_python_can_virtual_bus() -> None:
    """Any python-can interface works (here `virtual`); a car is not arbitrary address
    capable, so the one with the higher NAME sends Cannot Claim and stays silent (M-7.3-6)."""
    channel = f"virtual:car-test-{os.getpid()}"

    async def main() -> None:
        async with Car(can=channel, identity=1) as a, Car(can=channel, identity=2) as b:
            await a.wait_for("car", since=0, match=lambda e: e.data.get("what") == "claimed")
            await b.wait_for("warning", since=0, match=lambda e: "cannot claim" in e.text)
            assert a.name < b.name and a.name >> 63 == 0
            assert a.links[0].claim.ready and not b.links[0].claim.ready
            assert not any(e.kind == "car" and e.data.get("what") == "claimed" for e in b.timeline)
            await asyncio.sleep(1.2)
            assert a.bus_stats[0]["frames_per_s"] > 0  # its heartbeats, at least

    run(main())


def test_one_car_on_two_buses_claims_on_each() -> None:
    buses = [f"virtual:car-a-{os.getpid()}", f"virtual:car-b-{os.getpid()}"]

    async def main() -> None:
        async with Car(can=buses, address=0x03) as car:
            for i in (0, 1):
                await car.wait_for("car", since=0, match=lambda e, i=i:
                                   e.data.get("what") == "claimed" and e.data.get("bus") == i)
            assert [link.address for link in car.links] == [0x03, 0x03]
            assert [s["spec"] for s in car.snapshot()["car"]["can"]] == buses

    run(main())
    with pytest.raises(ValueError, match="0x00..0x0F"):
        Car(can=buses, address=0x80)
