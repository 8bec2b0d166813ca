# Message vectors (spec 5): our builders produce the golden bytes, our parser
# accepts them, and the single-frame budget of periodic messages holds.
from mpcompat import load_vectors, unhex, tohex, from_json, same, raises

from cabinlink import msg
from cabinlink.codec import ProtocolError, encode

V = load_vectors("messages.json")["messages"]


def test_vectors_round_trip():
    for v in V:
        value = from_json(v["value"])
        assert tohex(encode(value)) == v["hex"], v["name"]
        assert same(msg.parse(unhex(v["hex"])), value), v["name"]


def test_single_frame_budget():
    # Every periodic report, event and heartbeat fits one ISO-TP single frame.
    for v in V:
        if v["name"].startswith(("REPORT", "EVENT", "HEARTBEAT")):
            assert len(v["hex"]) // 2 <= 7, v["name"]


def test_builders_match_vectors():
    by = dict((v["name"], unhex(v["hex"])) for v in V)
    assert encode(msg.heartbeat(3601)) == by["HEARTBEAT uptime 3601 s, nominal, operational"]
    assert encode(msg.heartbeat(65535 + 65536, msg.HEALTH_CAUTION, msg.MODE_SAFE)) == \
        by["HEARTBEAT uptime 65535 s (largest), safe mode"]
    assert encode(msg.hello(1)) == by["HELLO v0.1"]
    assert encode(msg.read(4, 1, 0)) == by["READ slot 1 attr 0"]
    assert encode(msg.result(4, msg.OK, 2150)) == by["RESULT OK 21.50 C"]
    assert encode(msg.result(5, msg.OK)) == by["RESULT OK (no value)"]
    assert encode(msg.write(5, 1, 2, -50)) == by["WRITE slot 1 attr 2 (temperature.offset -0.50 C)"]
    assert encode(msg.subscribe(7, 1, 0, 1000, 60, 10)) == \
        by["SUBSCRIBE slot 1 attr 0 min 1000 ms max 60 s threshold 10"]
    assert encode(msg.unsubscribe(9, 1, 0)) == by["UNSUBSCRIBE slot 1 attr 0"]
    assert encode(msg.invoke(10, 1, 0)) == by["INVOKE slot 1 cmd 0 (clamp.clamp) no args"]
    assert encode(msg.invoke(11, 1, 1, [True])) == by["INVOKE slot 1 cmd 1 (clamp.release) confirm=true"]
    assert encode(msg.report(1, 0, 2150)) == by["REPORT temperature 21.50 C"]
    assert encode(msg.event(0, 2, 2)) == by["EVENT button 2 long press"]
    assert encode(msg.describe(3)) == by["DESCRIBE"]


def test_parse_rejects_non_messages():
    for h in ("01", "80", "a0", "8100", "8140", "81f5", "8220",  # not array / empty / bad type
              "8102", "820220", "8202f5", "82021a00010000",  # request with bad tid
              "ff", ""):
        assert raises(ProtocolError, msg.parse, unhex(h)), h


def test_type_ranges():
    assert msg.is_request(msg.HELLO) and msg.is_request(msg.INVOKE)
    assert msg.is_request(16) and msg.is_request(31)
    assert not msg.is_request(msg.RESULT) and not msg.is_request(msg.SECURED)
    assert not msg.is_request(32) and not msg.is_request(msg.HEARTBEAT)


def test_is_heartbeat_accepts_exactly_well_formed_heartbeats():
    for up in (0, 23, 24, 255, 256, 65535):
        for h, mo in ((0, 0), (3, 2)):
            assert msg.is_heartbeat(encode(msg.heartbeat(up, h, mo))), (up, h, mo)
    for bad in ("8301", "840119", "8401190e1100", "8401190e11000000", "840100001800",
                "8402010001", "8501000000", "84011a000100000000", ""):
        assert not msg.is_heartbeat(unhex(bad)), bad
