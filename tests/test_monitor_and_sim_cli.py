"""The bus monitor decodes CabinLink traffic passively; ``cabinlink sim`` shows it."""
from __future__ import annotations

import argparse
import io

from cabinlink import claim, isotp, msg
from cabinlink.clock import ManualClock
from cabinlink.codec import encode
from cabinlink_tools.monitor import BusDecoder, describe_message
from cabinlink_tools.sim import cli_sim
from cabinlink_tools.sim.cli_args import add_sim_arguments


def bus_frames(payload: bytes, can_id: int) -> list[tuple[int, bytes]]:
    """Every frame on the bus while our ISO-TP sender delivers ``payload`` on ``can_id``
    to a receiver that answers with flow control (both sides on one manual clock)."""
    clock = ManualClock()
    wire: list[tuple[int, bytes]] = []
    fc_id = (can_id & 0x1CFF0000) | ((can_id & 0xFF) << 8) | ((can_id >> 8) & 0xFF)
    put = lambda i, d: wire.append((i, bytes(d))) or True  # noqa: E731
    rx = isotp.Channel(clock, put, fc_id)
    tx = isotp.Channel(clock, put, can_id)
    tx.send(payload)
    seen: list[tuple[int, bytes]] = []
    for _ in range(200):
        while wire:
            i, d = wire.pop(0)
            seen.append((i, d))
            (rx if i == can_id else tx).on_frame(d)
        clock.advance(1)
        tx.poll()
        rx.poll()
    return seen


def test_describe_message_names_and_values() -> None:
    assert describe_message(encode(msg.heartbeat(12))) == \
        "HEARTBEAT uptime 12 s, health nominal, mode operational"
    assert describe_message(encode(msg.read(4, 1, 0))) == "READ tid 4 slot 1 attr 0"
    assert describe_message(encode(msg.result(4, msg.OK, 2150))) == "RESULT tid 4 OK 2150"
    assert describe_message(encode(msg.event(1, 0, -3))) == "EVENT slot 1 event 0 data -3"
    assert describe_message(b"\xff").startswith("undecodable")


def test_decoder_follows_claims_single_and_multi_frame_messages() -> None:
    d = BusDecoder(ManualClock())
    name = claim.make_name(0xA5A5, 0xC2)
    assert d.feed(claim.claim_id(0x93), claim.name_bytes(name)) == \
        [f"0x93 claims address (NAME {name:016X})"]
    assert d.feed(claim.request_id(0xFF, 0x00), b"\x00\xee\x00") == ["0x00 requests address claims from all"]
    hb = encode(msg.heartbeat(7))
    assert d.feed(isotp.func_id(6, 0xFF, 0x93), bytes([len(hb)]) + hb + b"\xcc") == \
        ["0x93 → all  HEARTBEAT uptime 7 s, health nominal, mode operational"]
    big = encode(msg.result(9, msg.OK, ["x" * 30, list(range(20))]))
    frames = bus_frames(big, isotp.phys_id(6, 0x00, 0x93))
    lines = []
    for i, data in frames:
        lines += d.feed(i, data)
    assert len(frames) > 5  # first frame, flow control, consecutive frames
    assert len(lines) == 1 and lines[0].startswith("0x93 → 0x00  RESULT tid 9 OK ['xxxxxxxxxx")
    ev = encode(msg.event(1, 0, 1))
    assert d.feed(isotp.phys_id(3, 0x00, 0x93), bytes([len(ev)]) + ev) == \
        ["0x93 → 0x00 [event channel]  EVENT slot 1 event 0 data 1"]
    assert d.feed(0x123, b"\x01", extended=False) == ["11-bit frame 0x123 01 (not CabinLink)"]


def test_cabinlink_sim_runs_boards_and_prints_their_console() -> None:
    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    args = p.parse_args(["--app", "controller", "--duration", "2", "--stats-every", "1"])
    out = io.StringIO()
    assert cli_sim.run(args, out) == 0
    text = out.getvalue()
    assert "controller1: controller on esp32-devkitc" in text
    assert "controller1  I boot: firmware" in text and "bus load" in text, text


def test_cabinlink_sim_unknown_board_is_a_clear_error(capsys) -> None:  # type: ignore[no-untyped-def]
    p = argparse.ArgumentParser()
    add_sim_arguments(p)
    assert cli_sim.run(p.parse_args(["--board", "nope"]), io.StringIO()) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
