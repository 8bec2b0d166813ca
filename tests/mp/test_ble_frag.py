# BLE fragmentation (spec 8.3): sizes, sequence numbers, loss detection.
from mpcompat import unhex, tohex

from cabinlink.ble_frag import Sender, Reassembler, START, END


def _cut(s, data, size):
    assert s.start(data)
    out = []
    while True:
        f = s.next(size)
        if f is None:
            return out
        out.append(bytes(f))


def _collect():
    got = []
    return got, Reassembler(lambda m: got.append(bytes(m)))


def test_single_fragment_layout():
    s = Sender()
    frags = _cut(s, unhex("8402010001"), 20)
    assert [tohex(f) for f in frags] == ["c000058402010001"]
    assert s.seq == 1


def test_multi_fragment_layout_and_sizes():
    s = Sender()
    data = bytes(range(50))
    frags = _cut(s, data, 20)
    assert [len(f) for f in frags] == [20, 20, 15]  # 17 + 19 + 14 payload bytes
    assert frags[0][0] == START | 0 and frags[0][1:3] == b"\x00\x32"
    assert frags[1][0] == 1 and frags[2][0] == END | 2
    got, r = _collect()
    for f in frags:
        r.feed(f)
    assert got == [data] and r.ok == 1 and r.dropped == 0


def test_large_mtu_and_sequence_wraps():
    s = Sender(max_fragment=244)
    got, r = _collect()
    msgs = [bytes([i]) * (i * 37 % 600 + 1) for i in range(80)]
    for m in msgs:
        for f in _cut(s, m, 244):
            r.feed(f)
    assert got == msgs and r.dropped == 0


def test_lost_fragment_drops_message_and_resyncs():
    s = Sender()
    got, r = _collect()
    a = _cut(s, bytes(60), 20)
    b = _cut(s, b"\x01\x02", 20)
    r.feed(a[0])
    r.feed(a[2])  # a[1] lost
    r.feed(b[0])
    assert got == [b"\x01\x02"] and r.dropped >= 1


def test_bad_fragments_never_raise():
    got, r = _collect()
    for f in (b"", b"\x80", b"\x80\x00", b"\xc0\x00\x00", b"\xc0\x0f\xff\x01",
              b"\x41abc", b"\x00abc", b"\xc0\x00\x05ab", b"\xc0\x00\x01abc",
              b"\x80\xff\xff" + bytes(17)):
        r.feed(f)
    assert got == [] and r.dropped >= 9


def test_sender_refuses_while_busy_and_bad_sizes():
    s = Sender()
    assert not s.start(b"")
    assert not s.start(bytes(4096))
    assert s.start(b"abc")
    assert not s.start(b"def")
    assert s.next(20) is not None and not s.busy


def test_a_whole_lost_message_is_counted_as_a_gap():
    s = Sender()
    got, r = _collect()
    a = _cut(s, b"\x01", 20)
    _cut(s, b"\x02", 20)  # lost entirely
    c = _cut(s, b"\x03", 20)
    r.feed(a[0])
    r.feed(c[0])
    assert got == [b"\x01", b"\x03"] and r.gaps == 1
