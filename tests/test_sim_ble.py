"""The simulated ``bluetooth`` module, each firmware-side test run under CPython AND the
MicroPython unix port: the firmware uses MicroPython's ``bluetooth.BLE`` exactly as on an
ESP32, a real BLE host stack (Bumble) carries the traffic, and a Bumble central on the same
simulated link is the peer (the CabinLink service of docs/spec.md section 8)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from bumble.pairing import PairingDelegate

from cabinlink_tools.sim import world as W
from cabinlink_tools.sim.ble import Advert, BleLink, BleWorld, board_address
from cabinlink_tools.sim.runner import RUNTIMES, BoardProcess

CAB = "cab488e3-1190-4c04-8cbe-c122f022e37b"
RX = "cab488e4-1190-4c04-8cbe-c122f022e37b"
TX = "cab488e5-1190-4c04-8cbe-c122f022e37b"
CAB_LE = bytes.fromhex("7be322f022c1be8c044c9011e388b4ca")
# docs/spec.md 8.2: advertising data and the ambient sensor's scan response
ADV = bytes.fromhex("020106" "1107") + CAB_LE
RESP = bytes.fromhex("1721") + CAB_LE + bytes.fromhex("000102a5a501" "0509" "41512d31")
UID = bytes.fromhex("24a16012ab01")

PRELUDE = f"""
import asyncio
from bluetooth import BLE, UUID, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE, FLAG_NOTIFY
from bluetooth import FLAG_INDICATE
CAB = UUID("{CAB}")
RX_U = UUID("{RX}")
TX_U = UUID("{TX}")
ADV = bytes.fromhex("{ADV.hex()}")
RESP = bytes.fromhex("{RESP.hex()}")
ble = BLE()
events = []
flag = asyncio.ThreadSafeFlag()

def err(label, fn, *args, **kw):
    try:
        fn(*args, **kw)
        print("E", label, "none")
    except Exception as e:
        print("E", label, type(e).__name__, e.args[0] if e.args else "")
"""




def start(world: W.World, tmp_path: Path, runtime: str, body: str,
          uid: bytes = UID) -> BoardProcess:
    board = world.add_board(W.SimBoard("b1", "esp32", uid))
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    proc = BoardProcess(world, board, runtime, script, tmp_path / "fs")
    proc.start()
    return proc


def lines(p: BoardProcess, prefix: str) -> list[str]:
    return [line for line in p.log if line.startswith(prefix)]


def be_hex(address: str) -> str:
    return address.replace(":", "").lower()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cabinlink_service_end_to_end_with_a_bumble_central(world: W.World, ble: BleWorld,
                                                              tmp_path: Path, runtime: str) -> None:
    p = start(world, tmp_path, runtime, """
        err("mac-inactive", ble.config, "mac")
        err("adv-inactive", ble.gap_advertise, 100000, b"")
        print("gap_name-inactive", ble.config("gap_name"))

        def irq(event, data):
            if event in (1, 2):
                events.append((event, data[0], data[1], bytes(data[2])))
            elif event == 3:  # synchronous IRQ: read the value right here, as on a board
                events.append((event, data[0], data[1], ble.gatts_read(data[1])))
            elif event == 21:
                events.append((event, data[0], data[1]))
            flag.set()

        err("irq", ble.irq, 5)
        ble.irq(irq)
        print("active", ble.active(), ble.active(True), ble.active())
        ble.config(gap_name="AQ-1")
        name = ble.config("gap_name")
        print("gap_name", type(name).__name__, name.decode())
        print("mtu", ble.config("mtu"))
        addr_type, mac = ble.config("mac")
        print("mac", addr_type, mac.hex())
        err("rxbuf", ble.config, "rxbuf")
        err("bogus", ble.config, "bogus")
        err("bond-get", ble.config, "bond")
        err("two", ble.config, "gap_name", "mtu")
        err("none", ble.config)
        err("set-rxbuf", ble.config, rxbuf=512)
        err("mixed", ble.config, "mtu", gap_name="x")
        services = (
            (CAB, ((RX_U, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE), (TX_U, FLAG_NOTIFY))),
            (UUID(0x180A), ((UUID(0x2A24), FLAG_READ), (UUID(0x2A29), FLAG_READ))),
            (UUID(0xFFF0), ((UUID(0xFFF1), FLAG_WRITE),)),
        )
        err("bad-service", ble.gatts_register_services, (("x", ()),))
        handles = ble.gatts_register_services(services)
        ((rx, tx), (model, maker), (aux,)) = handles
        print("handles", type(handles).__name__, [len(s) for s in handles],
              all([isinstance(h, int) for s in handles for h in s]))
        print("write-len", ble.gatts_write(model, b"AQ-1"), ble.gatts_write(maker, b"Acme"))
        ble.gatts_set_buffer(rx, 256)
        err("setbuf-bad", ble.gatts_set_buffer, 9999, 10)
        err("notify-noconn", ble.gatts_notify, 7, tx, b"x")
        print("disc-none", ble.gap_disconnect(7))
        err("adv-too-long", ble.gap_advertise, 100000, bytes(32))
        ble.gap_advertise(100000, ADV, resp_data=RESP)
        err("register-adv", ble.gatts_register_services, services)
        print("advertising")

        async def main():
            while True:
                await flag.wait()
                while events:
                    ev = events.pop(0)
                    if ev[0] == 1:
                        print("connect", ev[2], ev[3].hex())
                    elif ev[0] == 21:
                        print("mtu-exchanged", ev[2])
                    elif ev[0] == 3:
                        which = "rx" if ev[2] == rx else "aux" if ev[2] == aux else str(ev[2])
                        print("write", which, len(ev[3]), ev[3].hex())
                        if ev[2] == rx:
                            ble.gatts_notify(ev[1], tx, b"pong:" + ev[3][:4])
                            ble.gatts_write(tx, b"local")
                            ble.gatts_notify(ev[1], tx)  # no data: the local value
                    elif ev[0] == 2:
                        print("disconnect", ev[2], ev[3].hex())
                        return

        asyncio.run(main())
        print("done")
    """)
    p.wait_for("advertising", 30)
    text = "\n".join(p.log)
    errors = {line.split()[1]: line.split(None, 2)[2] for line in lines(p, "E ")}
    assert errors["mac-inactive"] == "OSError 19" and errors["adv-inactive"] == "OSError 19"
    assert errors["irq"] == "ValueError invalid handler"
    for key in ("rxbuf", "bogus", "bond-get", "set-rxbuf"):
        assert errors[key] == "ValueError unknown config param", (key, text)
    assert errors["two"] == errors["none"] == "TypeError must query one param"
    assert errors["mixed"] == "TypeError can't specify pos and kw args"
    assert errors["bad-service"] == "ValueError invalid service UUID"
    assert errors["setbuf-bad"] == "OSError 22"
    assert errors["notify-noconn"] == "OSError 128"
    assert errors["adv-too-long"] == "OSError -18"
    assert errors["register-adv"] == "OSError 16"  # NimBLE: services are immutable while advertising
    assert "gap_name-inactive b'ESP32'" in text
    assert "active False True True" in text and "gap_name bytes AQ-1" in text
    assert "mtu 256" in text and "disc-none False" in text
    assert "handles tuple [2, 2, 1] True" in text and "write-len 4 4" in text
    mac = lines(p, "mac ")[0].split()
    assert mac[1] == "1" and mac[2] == be_hex(str(board_address(UID)))

    car = ble.central("car")
    adv = car.scan(lambda a: CAB_LE in a.adv_data, timeout=30)
    assert (adv.adv_data, adv.scan_response, adv.adv_type) == (ADV, RESP, 0)
    assert be_hex(adv.address) == mac[2] and adv.addr_type == 1
    link = car.connect(adv)
    p.wait_for("connect ", 10)
    assert lines(p, "connect ") == [f"connect 1 {be_hex(str(car.address))}"]
    assert link.exchange_mtu(247) == 247  # min(247, NimBLE's preferred 256)
    p.wait_for("mtu-exchanged 247", 10)

    services = link.discover()
    assert {CAB.upper(), "180A", "FFF0", "1800", "1801"} <= set(services)
    notes = link.subscribe(TX)
    payload = bytes(range(100))
    link.write(RX, payload)  # the firmware enlarged RX's buffer to 256
    p.wait_for("write rx 100 " + payload.hex(), 10)
    assert notes.get(timeout=5) == b"pong:" + payload[:4]
    assert notes.get(timeout=5) == b"local"
    link.write(0xFFF1, bytes(range(30)))  # default buffer: 20 bytes kept
    p.wait_for("write aux 20 " + bytes(range(20)).hex(), 10)
    assert link.read(0x2A24) == b"AQ-1" and link.read(0x2A29) == b"Acme"
    assert link.read(0x2A00) == b"AQ-1"  # GAP device name follows config(gap_name=)
    link.disconnect()
    p.wait_for("done", 10)
    assert lines(p, "disconnect ") == [f"disconnect 1 {be_hex(str(car.address))}"]
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_indicate_append_buffer_and_advertising_payload_rules(world: W.World, ble: BleWorld,
                                                              tmp_path: Path, runtime: str) -> None:
    p = start(world, tmp_path, runtime, """
        from machine import Pin
        go = Pin(4, Pin.IN)

        def irq(event, data):
            if event == 3:
                events.append((3, data[0], data[1]))
            elif event == 20:
                events.append((20, data[0], data[1], data[2]))
            elif event in (1, 2):
                events.append((event, data[0]))
            flag.set()

        ble.irq(irq)
        ble.active(True)
        svc = (UUID(0xFFE0), ((UUID(0xFFE1), FLAG_READ | FLAG_NOTIFY | FLAG_INDICATE),
                              (UUID(0xFFE2), FLAG_WRITE | FLAG_WRITE_NO_RESPONSE)))
        ((ind, up),) = ble.gatts_register_services((svc,))
        ble.gatts_set_buffer(up, 64, True)  # append: the Nordic UART pattern
        ble.gap_advertise(30000, b"\\x02\\x01\\x06", resp_data=b"\\x03\\x09hi", connectable=False)
        print("phase1")

        async def main():
            while not go.value():
                await asyncio.sleep_ms(5)
            ble.gap_advertise(30000)  # payloads None: the previous ones again, connectable
            print("phase2")
            writes = 0
            conn = None
            while True:
                await flag.wait()
                while events:
                    ev = events.pop(0)
                    if ev[0] == 1:
                        conn = ev[1]
                        print("connect")
                    elif ev[0] == 3:
                        writes += 1
                        if writes == 2:
                            print("appended", ble.gatts_read(up), ble.gatts_read(up))
                            ble.gatts_indicate(conn, ind, b"ind")
                    elif ev[0] == 20:
                        print("indicate-done", ev[2] == ind, ev[3])
                        if ev[3] == 0 and ble.gatts_read(ind) != b"upd":
                            print("write-update", ble.gatts_write(ind, b"upd", True))
                    elif ev[0] == 2:
                        ble.gap_advertise(30000, b"")  # b"" clears; resp_data None: kept
                        print("cleared")
                        return

        asyncio.run(main())
        print("done")
    """)
    p.wait_for("phase1", 30)
    car = ble.central("car")
    addr = str(board_address(UID))
    first = car.scan(lambda a: a.address == addr, timeout=30)
    assert (first.adv_type, first.adv_data, first.scan_response) == (2, b"\x02\x01\x06", b"\x03\x09hi")
    with world.lock:
        p.board.pin(4).drive = 1
    p.wait_for("phase2", 10)
    again = car.scan(lambda a: a.address == addr and a.connectable, timeout=30)
    assert (again.adv_data, again.scan_response) == (b"\x02\x01\x06", b"\x03\x09hi")
    link = car.connect(again)
    p.wait_for("connect", 10)
    values = link.subscribe(0xFFE1, indicate=True)
    link.write(0xFFE2, b"abc", response=False)
    link.write(0xFFE2, b"def")
    p.wait_for("appended b'abcdef' b''", 10)  # a read returns the accumulated bytes, then clears
    assert values.get(timeout=5) == b"ind"
    assert values.get(timeout=5) == b"upd"  # gatts_write(send_update=True) to an indicate subscriber
    p.wait_for("indicate-done", 10, p.wait_for("indicate-done", 10) + 1)  # IRQ 20 for both
    assert lines(p, "indicate-done") == ["indicate-done True 0", "indicate-done True 0"]
    link.disconnect()
    p.wait_for("done", 10)
    cleared = car.scan(lambda a: a.address == addr, timeout=30)
    assert (cleared.adv_data, cleared.scan_response) == (b"", b"\x03\x09hi")
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_just_works_bond_survives_a_power_cut(world: W.World, ble: BleWorld, tmp_path: Path,
                                              runtime: str) -> None:
    p = start(world, tmp_path, runtime, """
        import json

        def load():
            try:
                with open("secrets.json") as f:
                    return json.load(f)
            except OSError:
                return {}

        secrets = load()

        def save():
            with open("secrets.json", "w") as f:
                json.dump(secrets, f)

        def irq(event, data):
            if event == 29:  # GET_SECRET (the aioble way, in a JSON file)
                sec_type, index, key = data
                v = secrets.get("%d:%s" % (sec_type, bytes(key).hex())) if key else None
                print("get_secret", sec_type, v is not None)
                return None if v is None else bytes.fromhex(v)
            if event == 30:  # SET_SECRET
                sec_type, key, value = data
                k = "%d:%s" % (sec_type, bytes(key).hex())
                if value is None:
                    return secrets.pop(k, None) is not None
                secrets[k] = bytes(value).hex()
                save()
                print("set_secret", sec_type, len(key))
                return True
            if event == 1:
                events.append((1, data[0]))
            elif event == 2:
                events.append((2, data[0]))
            elif event == 28:
                events.append((28,) + tuple(data))
            flag.set()

        ble.irq(irq)
        ble.config(bond=True, le_secure=True, mitm=False, io=3)
        print("active", ble.active(True))
        ble.gatts_register_services(((CAB, ((RX_U, FLAG_WRITE), (TX_U, FLAG_NOTIFY))),))
        print("stored", sorted([k.split(":")[0] for k in secrets]))
        ble.gap_advertise(30000, ADV)
        print("advertising")

        async def main():
            while True:
                await flag.wait()
                while events:
                    ev = events.pop(0)
                    if ev[0] == 1:
                        print("connect")
                        if len(secrets) > 1:
                            ble.gap_pair(ev[1])  # a bonded peer: ask it to encrypt
                    elif ev[0] == 28:
                        print("encryption", ev[2], ev[3], ev[4], ev[5])
                    elif ev[0] == 2:
                        print("disconnect")
                        ble.gap_advertise(30000)

        asyncio.run(main())
    """)
    p.wait_for("advertising", 30)
    text = "\n".join(p.log)
    assert "get_secret 10 False" in text and "set_secret 10 3" in text  # NimBLE's load_irk()
    car = ble.central("car")

    def connect() -> BleLink:
        start = len(p.log)
        a = car.scan(lambda x: CAB_LE in x.adv_data, timeout=30)
        link = car.connect(a)
        p.wait_for("connect", 10, start)
        return link

    link = connect()
    link.pair(bond=True)
    p.wait_for("encryption True False True 16", 10)  # encrypted, Just Works, bonded, 16
    assert sorted(lines(p, "set_secret ")) == ["set_secret 1 7", "set_secret 10 3",
                                               "set_secret 2 7"]
    link.disconnect()
    p.wait_for("disconnect", 10)

    mark = len(p.log)
    link = connect()  # the firmware asks (gap_pair); the car encrypts with the bond's key
    p.wait_for("encryption True False True 16", 10, mark)
    link.wait_encrypted()
    assert "get_secret 1 True" in p.log[mark:]

    mark = len(p.log)
    p.cut_power()  # the bond lives in the firmware's file, not in the simulator
    assert link.wait_disconnected() == 0x08  # the car sees a supervision timeout
    p.wait_for("advertising", 30, mark)
    assert "stored ['1', '10', '2']" in p.log[mark:] and "get_secret 10 True" in p.log[mark:]
    link = connect()
    p.wait_for("encryption True False True 16", 10, mark)
    link.wait_encrypted()
    link.disconnect()
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_numeric_comparison_goes_through_passkey_irq(world: W.World, ble: BleWorld,
                                                      tmp_path: Path, runtime: str) -> None:
    p = start(world, tmp_path, runtime, """
        def irq(event, data):
            if event == 31:
                conn, action, number = data
                print("passkey", action, number)
                ble.gap_passkey(conn, action, 1)  # the user pressed "yes"
            elif event == 28:
                print("encryption", data[1], data[2], data[3])

        ble.irq(irq)
        ble.config(bond=False, le_secure=True, mitm=True, io=1)  # DISPLAY_YESNO
        ble.active(True)
        ble.gatts_register_services(((CAB, ((RX_U, FLAG_WRITE), (TX_U, FLAG_NOTIFY))),))
        err("passkey-none", ble.gap_passkey, 0, 4, 1)
        ble.gap_advertise(30000, ADV)
        print("advertising")

        async def main():
            while True:
                await asyncio.sleep_ms(100)

        asyncio.run(main())
    """)
    p.wait_for("advertising", 30)
    assert "E passkey-none OSError 22" in p.log
    shown: list[int] = []

    class Car(PairingDelegate):
        async def compare_numbers(self, number: int, digits: int) -> bool:
            shown.append(number)
            return True

    car = ble.central("car")
    car.delegate_factory = lambda: Car(io_capability=PairingDelegate.DISPLAY_OUTPUT_AND_YES_NO_INPUT)
    link = car.connect(car.scan(lambda a: CAB_LE in a.adv_data, timeout=30))
    link.pair(bond=False, mitm=True)
    p.wait_for("encryption True True False", 10)  # encrypted, authenticated, not bonded
    assert shown and lines(p, "passkey ") == [f"passkey 4 {shown[0]}"]
    link.disconnect()
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gap_scan_reports_raw_advertising_and_scan_response(world: W.World, ble: BleWorld,
                                                            tmp_path: Path, runtime: str) -> None:
    car = ble.central("car")
    ble.run(car.device.start_advertising(advertising_data=ADV, scan_response_data=RESP,
                                         advertising_interval_min=20,
                                         advertising_interval_max=20))
    p = start(world, tmp_path, runtime, """
        car = bytes.fromhex("%s")
        seen = {}

        def irq(event, data):
            if event == 5:
                addr_type, addr, adv_type, rssi, adv_data = data
                if bytes(addr) == car:
                    seen[adv_type] = (addr_type, bytes(adv_data))
            elif event == 6:
                events.append(6)
                flag.set()

        ble.irq(irq)
        ble.active(True)
        ble.gap_scan(1000, 30000, 30000, True)
        err("scan-again", ble.gap_scan, 1000)

        async def main():
            await flag.wait()
            for t in sorted(seen):
                print("seen", t, seen[t][0], seen[t][1].hex())
            print("scan-done", events)

        asyncio.run(main())
    """ % be_hex(str(car.address)))
    p.wait_for("scan-done [6]", 30)
    assert "E scan-again OSError 120" in p.log  # EALREADY
    assert lines(p, "seen ") == [f"seen 0 1 {ADV.hex()}", f"seen 4 1 {RESP.hex()}"]
    p.stop()


def test_advert_fields_and_board_addresses() -> None:
    a = Advert("C0:00:00:00:00:02", 1, 0, ADV, RESP, -50)
    assert a.fields()[0] == (0x01, b"\x06") and a.fields()[2][0] == 0x21
    assert str(board_address(UID)) == "E4:A1:60:12:AB:03"
