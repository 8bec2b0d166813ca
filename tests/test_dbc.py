"""``cabinlink dbc``: the DBC loads back into cantools and decodes CabinLink frames - the
worked examples of spec 7 / Appendix A, and frames captured (candump -L) from the simulated
bus while the real controller firmware talks to a car: claim NAME fields equal the
accessory's NAME, heartbeat PCI length and fields equal the CBOR heartbeat, ISO-TP FF_DL
equals the DESCRIBE answer's length, the event channel shows the event the car received."""
from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import cantools
import pytest
from cantools import logreader

from cabinlink import claim, msg
from cabinlink.codec import decode
from cabinlink_tools import cli, dbc
from cabinlink_tools.sim.simulation import Simulation

from carhelper import SimCar

MASK = dbc.FRAME_ID_MASK


def load(text: str, mask: int | None = MASK) -> cantools.database.can.Database:
    db = cantools.database.load_string(text, "dbc", frame_id_mask=mask)
    assert isinstance(db, cantools.database.can.Database)
    return db


def dec(db: cantools.database.can.Database, can_id: int, hexdata: str) -> tuple[str, dict]:
    m = db.get_message_by_frame_id(can_id)
    return m.name, m.decode(bytes.fromhex(hexdata.replace(" ", "")), decode_choices=False)


def test_spec_examples_decode_with_the_pattern_dbc() -> None:
    db = load(dbc.dbc_text())
    assert {m.name for m in db.messages} == {"CL_AddressClaim", "CL_Request", "CL_Heartbeat",
                                             "CL_IsoTp", "CL_IsoTpEvent"}
    # 7.3: NAME 0x80FEC2000000A5A5 claiming 0xAD
    name, s = dec(db, 0x18EEFFAD, "A5 A5 00 00 00 C2 FE 80")
    assert name == "CL_AddressClaim"
    assert (s["IdentityNumber"], s["ManufacturerCode"], s["Function"], s["VehicleSystem"],
            s["ArbitraryAddressCapable"]) == (0x0A5A5, 0, 0xC2, 0x7F, 1)
    # Appendix A: the car's NAME 0x00FEBF0000000001 (not arbitrary address capable)
    _, s = dec(db, 0x18EEFF00, "01 00 00 00 00 BF FE 00")
    assert (s["IdentityNumber"], s["Function"], s["ArbitraryAddressCapable"]) == (1, 0xBF, 0)
    # 7.6 and 5.10: every heartbeat length
    assert dec(db, 0x18DBFFAD, "07 84 01 19 0E 11 00 00")[1] == {
        "PCI": 7, "CborArrayHeader": 0x84, "MessageType": 1, "UptimeCborHead_7": 0x19,
        "Uptime_7": 3601, "Health_7": 0, "Mode_7": 0}
    _, s = dec(db, 0x18DBFFAD, "07 84 01 19 FF FF 02 02")
    assert (s["Uptime_7"], s["Health_7"], s["Mode_7"]) == (65535, 2, 2)
    _, s = dec(db, 0x18DBFF00, "05 84 01 00 00 00 CC CC")
    assert (s["PCI"], s["Uptime_5"], s["Health_5"], s["Mode_5"]) == (5, 0, 0, 0)
    _, s = dec(db, 0x18DBFF00, "06 84 01 18 2A 01 03 CC")
    assert (s["PCI"], s["Uptime_6"], s["Health_6"], s["Mode_6"]) == (6, 42, 1, 3)
    # 7.3: Request for Address Claimed, 3 bytes
    assert dec(db, 0x18EAFF00, "00 EE 00") == ("CL_Request", {"RequestedPGN": 0xEE00})
    # Appendix A: HELLO SF, DESCRIBE answer FF, FC, CFs; 7.4 OVFLW
    assert dec(db, 0x18DAAD00, "05 84 02 01 00 01 CC CC") == ("CL_IsoTp", {
        "PciType": 0, "SF_DL": 5, "SF_CborItems": 4, "SF_CborMajor": 4, "SF_MessageType": msg.HELLO})
    assert dec(db, 0x18DA00AD, "10 7A 84 09 02 00 A9 00")[1] == {
        "PciType": 1, "FF_DL": 122, "FF_CborItems": 4, "FF_CborMajor": 4, "FF_MessageType": msg.RESULT}
    assert dec(db, 0x18DAAD00, "30 00 00 CC CC CC CC CC")[1] == {
        "PciType": 3, "FC_FlowStatus": 0, "FC_BlockSize": 0, "FC_STmin": 0}
    assert dec(db, 0x18DA8000, "32 00 00 CC CC CC CC CC")[1]["FC_FlowStatus"] == 2
    assert dec(db, 0x18DA0080, "30 01 F1 CC CC CC CC CC")[1]["FC_STmin"] == 0xF1
    assert dec(db, 0x18DA00AD, "20 07 03 81 00 04 81 00")[1] == {"PciType": 2, "CF_SN": 0}
    assert dec(db, 0x18DA00AD, "2F 87 00 01 02 03 05 06")[1]["CF_SN"] == 15
    # 5.8 REPORT and 5.9 / Appendix A EVENT on the priority-3 channel
    assert dec(db, 0x18DA00AD, "07 84 0A 01 00 19 08 66")[1]["SF_MessageType"] == msg.REPORT
    name, s = dec(db, 0x0CDA00AD, "05 84 0B 02 00 01 CC CC")
    assert name == "CL_IsoTpEvent"
    assert (s["SF_MessageType"], s["SF_Slot"], s["SF_Event"], s["SF_DataHead"]) == (msg.EVENT, 2, 0, 1)
    # choices are named
    named = db.get_message_by_frame_id(0x18DBFF85).decode(bytes.fromhex("0584010102 03CCCC".replace(" ", "")))
    assert (str(named["Health_5"]), str(named["Mode_5"])) == ("caution", "update")


def test_pattern_dbc_declares_j1939_matching() -> None:
    text = dbc.dbc_text()
    assert 'BA_ "ProtocolType" "J1939";' in text
    assert 'BA_DEF_DEF_  "isj1939dbc" 1;' in text  # SavvyCAN's PGN matching
    assert text.count("CM_ BO_") == 5
    db = load(text)
    assert all(m.protocol == "j1939" and m.is_extended_frame for m in db.messages)
    assert db.get_message_by_name("CL_Heartbeat").cycle_time == 1000


def test_concrete_ids_match_exactly() -> None:
    db = load(dbc.dbc_text([0x85, 0xAD], car=0x02), mask=None)
    ids = {m.name: m.frame_id for m in db.messages}
    assert ids["CL_Claim_85"] == 0x18EEFF85 and ids["CL_Heartbeat_AD"] == 0x18DBFFAD
    assert ids["CL_IsoTp_85_to_02"] == 0x18DA0285 and ids["CL_IsoTp_02_to_85"] == 0x18DA8502
    assert ids["CL_Event_AD_to_02"] == 0x0CDA02AD and ids["CL_EventFc_02_to_AD"] == 0x0CDAAD02
    assert ids["CL_Request_02_85"] == 0x18EA8502 and ids["CL_Request_02_FF"] == 0x18EAFF02
    assert ids["CL_Claim_02"] == 0x18EEFF02 and ids["CL_CannotClaim"] == 0x18EEFFFE
    assert db.decode_message(0x18DBFFAD, bytes.fromhex("07840119 0E110000"))["Uptime_7"] == 3601
    with pytest.raises(KeyError):
        db.decode_message(0x18DBFF86, bytes(8))  # not an address that was asked for


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cabinlink.dbc"
    assert cli.main(["dbc", "-o", str(out)]) == 0
    assert "0x1FFF0000" in capsys.readouterr().err
    assert len(load(out.read_text()).messages) == 5
    assert cli.main(["dbc", "--address", "0x85", "--address", "134", "-o", str(out)]) == 0
    assert {"CL_Claim_85", "CL_Claim_86"} <= {m.name for m in load(out.read_text(), None).messages}
    assert cli.main(["dbc"]) == 0
    assert capsys.readouterr().out.startswith('VERSION "CabinLink 0.1"')
    for bad in (["--address", "0xFF"], ["--address", "x85"], ["--car", "0x85", "--address", "0x85"]):
        assert cli.main(["dbc", *bad]) == 1
        err = capsys.readouterr().err
        assert err.startswith("cabinlink dbc:") and err.count("\n") == 1, err
    assert cli.main(["dbc", "-o", str(tmp_path / "no" / "such" / "dir.dbc")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_decodes_a_candump_log_of_the_simulated_bus(tmp_path: Path) -> None:
    """The real controller firmware (CPython runtime) and a car on the simulated bus, logged
    by CandumpLogger; the log is decoded with the DBC, in Python and by cantools' CLI."""
    log = tmp_path / "bus.log"
    with Simulation(log_path=log) as sim:
        acc = sim.add("esp32-c6-devkitc-1", "controller", "cpython", name="dbcctl")
        acc.wait_for("controller:", 60)
        line = acc.log[acc.wait_for("NAME ", 10)]
        name_hex = re.search(r"NAME ([0-9a-f]{16})", line)
        assert name_hex, line
        name = int(name_hex.group(1), 16)
        car = SimCar(sim)
        events: list[tuple[int, int]] = []
        car.client.on_event = lambda a, slot, ev, data: events.append((slot, ev))
        addr = car.find()
        for _ in range(3):
            if car.ask(addr, msg.hello).ok:
                break
        desc = car.ask(addr, msg.describe)
        assert desc.ok
        acc.press(0)
        car.pump(5.0, lambda: bool(events))
        acc.release(0)
        car.pump(2.0, lambda: len(events) >= 2)
        assert events, acc.log[-20:]
        car.pump(1.2)  # at least one heartbeat after the exchange
        sim.logger.flush()  # type: ignore[union-attr]
        time.sleep(0.05)
        text = log.read_text()

    db = load(dbc.dbc_text())
    frames = [f for _, f in logreader.Parser(io.StringIO(text)).iterlines() if f is not None]
    assert frames, text[:500]
    seen: dict[str, int] = {}
    claims = heartbeats = 0
    ff_dls: list[int] = []
    ev_frames: list[tuple[int, int]] = []
    for f in frames:
        sa = f.frame_id & 0xFF
        try:
            m = db.get_message_by_frame_id(f.frame_id)
        except KeyError:
            continue
        s = m.decode(f.data, decode_choices=False)
        seen[m.name] = seen.get(m.name, 0) + 1
        if m.name == "CL_AddressClaim" and sa == addr:
            claims += 1
            want = claim.name_bytes(name)
            assert f.data == want
            assert s["IdentityNumber"] == name & 0x1FFFFF
            assert s["ManufacturerCode"] == (name >> 21) & 0x7FF
            assert s["Function"] == (name >> 40) & 0xFF == 0xC3  # controller
            assert s["VehicleSystem"] == 0x7F and s["ArbitraryAddressCapable"] == 1
        elif m.name == "CL_Heartbeat" and sa == addr:
            heartbeats += 1
            pci = f.data[0]
            hb = decode(f.data[1:1 + pci])
            assert hb[0] == msg.HEARTBEAT
            assert s["PCI"] == pci and s["MessageType"] == msg.HEARTBEAT
            assert (s[f"Uptime_{pci}"], s[f"Health_{pci}"], s[f"Mode_{pci}"]) == tuple(hb[1:4])
        elif m.name == "CL_IsoTp" and sa == addr and s["PciType"] == 1:
            ff_dls.append(s["FF_DL"])
        elif m.name == "CL_IsoTpEvent" and sa == addr and s["PciType"] == 0:
            assert s["SF_MessageType"] == msg.EVENT
            ev_frames.append((s["SF_Slot"], s["SF_Event"]))
    assert claims >= 1 and heartbeats >= 1, seen
    assert seen.get("CL_Request", 0) >= 1, seen
    # The DESCRIBE answer is one multi-frame message: RESULT header + the description.
    assert len(desc.request) == 2 and any(n > 100 for n in ff_dls), ff_dls
    assert ev_frames[: len(events)] == events

    # The same log through cantools' own command line, as docs/tools/dbc.md shows it.
    dbc_file = tmp_path / "cabinlink.dbc"
    dbc_file.write_text(dbc.dbc_text())
    out = subprocess.run([sys.executable, "-m", "cantools", "decode", "--single-line", "-m",
                          hex(MASK), str(dbc_file)], input=text, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"CL_AddressClaim(IdentityNumber: {name & 0x1FFFFF}" in out.stdout
    assert "Function: accessory_controller" in out.stdout
    assert "SF_MessageType: EVENT" in out.stdout and "Unknown frame id" not in out.stdout
