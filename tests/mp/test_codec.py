# CBOR subset codec against the golden vectors (spec 4). Runs on CPython
# (pytest) and on the MicroPython unix port (tests/test_micropython.py).
from mpcompat import load_vectors, unhex, tohex, from_json, same, raises

from cabinlink.codec import Encoder, ProtocolError, decode, encode

V = load_vectors("cbor.json")


def test_encode_matches_vectors():
    for v in V["valid"]:
        got = tohex(encode(from_json(v["value"])))
        assert got == v["hex"], (v["name"], got)


def test_decode_matches_vectors():
    for v in V["valid"] + V["decode_only"]:
        got = decode(unhex(v["hex"]))
        assert same(got, from_json(v["value"])), (v["name"], got)


def test_invalid_vectors_raise_protocol_error_only():
    for v in V["invalid"]:
        try:
            decode(unhex(v["hex"]))
        except ProtocolError:
            continue
        except Exception as e:
            raise AssertionError("%s: raised %r" % (v["name"], e))
        raise AssertionError("%s: decoded" % v["name"])


def test_decode_accepts_memoryview_and_bytearray():
    b = unhex("83010203")
    assert decode(memoryview(b)) == [1, 2, 3]
    assert decode(bytearray(b)) == [1, 2, 3]
    assert decode(memoryview(b"\x00" + b)[1:]) == [1, 2, 3]


def test_encoder_reuses_its_buffer_and_reports_overflow():
    e = Encoder(8)
    first = e.encode([10, 1, 0, 2150])
    assert bytes(first) == unhex("840a0100190866")
    assert bytes(e.encode([1])) == unhex("8101")
    assert raises(ProtocolError, e.encode, [1, 2, 3, 4, 5, 6, 7, 8])


def test_encode_rejects_unsupported_types():
    assert raises(ProtocolError, encode, 1.5)
    assert raises(ProtocolError, encode, object())
    assert raises(ProtocolError, encode, 2**64)
    assert raises(ProtocolError, encode, -(2**64) - 1)
    assert raises(ProtocolError, encode, {True: 1})
    assert raises(ProtocolError, encode, {(1,): 1})
    deep = []
    for _ in range(8):
        deep = [deep]
    assert raises(ProtocolError, encode, deep)  # 9 levels, innermost empty
    assert len(encode(deep[0])) == 8


def test_encode_tuple_as_array_and_sorts_keys():
    assert encode((1, 2)) == encode([1, 2])
    assert encode({10: 1, 1: 2, -1: 3}) == unhex("a3" "0102" "0a01" "2003")


def test_every_prefix_of_a_message_is_rejected():
    whole = unhex([v for v in V["valid"] if v["name"] == "map int keys sorted"][0]["hex"])
    for i in range(len(whole)):
        assert raises(ProtocolError, decode, whole[:i])


def test_encoding_a_report_allocates_only_the_returned_view_on_micropython():
    # Measured where it matters: MicroPython's heap (the CPython run checks the
    # bytes only). A report on every sample must not churn the heap.
    import sys

    e = Encoder(32)
    report = [10, 1, 0, 2150]
    assert bytes(e.encode(report)) == unhex("840a0100190866")
    if sys.implementation.name != "micropython":
        return
    import gc

    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(100):
            e.encode(report)
        used = (gc.mem_alloc() - before) / 100
    finally:
        gc.enable()
    assert used <= 48, used  # one memoryview object per message
