# Seeded mutation fuzzing of the ISO-TP channel (spec 6) on both runtimes:
# valid frame sequences from spec/vectors/isotp.json are bit-flipped,
# truncated, reordered, duplicated, given random PCIs and gaps past N_Cr, then
# fed to a receiver. Nothing may raise, memory stays at rx_max, and every
# counter must equal what a small independent model of the rules predicts.
# The model is also used by the hypothesis test in tests/test_isotp_interop.py.
from mpcompat import load_vectors, unhex

from cabinlink.clock import ManualClock
from cabinlink.isotp import Channel, phys_id

V = load_vectors("isotp.json")
GAP = None  # a corpus entry that is not a frame: let 1001 ms pass (past N_Cr)


class XorShift:
    # xorshift32 (Marsaglia 2003): MicroPython has no random.Random to seed.
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n


class Model:
    # What a receiver must do, written as plainly as possible (rx side only:
    # the channel under test sends nothing, so every FC is unexpected).
    def __init__(self, rx_max, bs, n_cr=1000):
        self.rx_max = rx_max
        self.bs = bs
        self.n_cr = n_cr
        self.busy = False
        self.data = b""
        self.want = 0
        self.sn = 0
        self.blk = 0
        self.quiet = 0
        self.messages = []
        self.fcs = []  # flow status of every FC the receiver sends
        self.frames = self.ok = self.dropped = self.aborted = self.timeouts = 0

    def end(self):
        if self.busy:
            self.aborted += 1
        self.busy = False

    def frame(self, f):
        self.frames += 1
        n = len(f)
        if n == 0 or n > 8:
            self.dropped += 1
            return
        kind = f[0] >> 4
        low = f[0] & 0xF
        if kind == 0:
            if low < 1 or low > 7 or n < 1 + low:
                self.dropped += 1
                return
            self.end()
            self.ok += 1
            self.messages.append(bytes(f[1 : 1 + low]))
        elif kind == 1:
            size = low * 256 + f[1] if n > 1 else 0
            if n < 8 or size < 8:
                self.dropped += 1
                return
            self.end()
            if size > self.rx_max:
                self.dropped += 1
                self.fcs.append(2)
                return
            self.busy = True
            self.data = bytes(f[2:8])
            self.want = size
            self.sn = 1
            self.blk = 0
            self.quiet = 0
            self.fcs.append(0)
        elif kind == 2:
            if not self.busy:
                self.dropped += 1
            elif low != self.sn:
                self.busy = False
                self.aborted += 1
                self.dropped += 1
            else:
                k = min(7, self.want - len(self.data))
                if n < 1 + k:
                    self.dropped += 1
                    return
                self.data += bytes(f[1 : 1 + k])
                self.sn = (self.sn + 1) % 16
                self.quiet = 0
                if len(self.data) == self.want:
                    self.busy = False
                    self.ok += 1
                    self.messages.append(self.data)
                elif self.bs:
                    self.blk += 1
                    if self.blk == self.bs:
                        self.blk = 0
                        self.fcs.append(0)
        else:
            self.dropped += 1

    def advance(self, ms):
        self.quiet += ms
        if self.busy and self.quiet > self.n_cr:
            self.busy = False
            self.timeouts += 1


class Probe:
    # A channel under test plus what it sent and delivered.
    def __init__(self, rx_max, bs, pad):
        self.clock = ManualClock()
        self.sent = []
        self.messages = []
        self.ch = Channel(self.clock, self._send, phys_id(6, 0x80, 0x00), rx_max=rx_max, bs=bs,
                          stmin=0, pad=pad, on_message=self._msg)
        self.buf = self.ch._rxbuf

    def _send(self, can_id, data):
        self.sent.append(bytes(data))
        return True

    def _msg(self, p):
        self.messages.append(bytes(p))

    def frame(self, f):
        self.ch.on_frame(f)

    def advance(self, ms):
        self.clock.advance(ms)
        self.ch.poll()


def check(seq, rx_max=4095, bs=0, pad=0xCC):
    # Feed seq (frames and GAP markers) to a channel and to the model; compare.
    p = Probe(rx_max, bs, pad)
    m = Model(rx_max, bs)
    for f in seq:
        if f is GAP:
            p.advance(1001)
            m.advance(1001)
        else:
            p.frame(f)
            m.frame(f)
            p.advance(1)
            m.advance(1)
    ch = p.ch
    got = (ch.rx_frames, ch.rx_ok, ch.rx_dropped, ch.rx_aborted, ch.rx_timeouts, ch.rx_busy)
    want = (m.frames, m.ok, m.dropped, m.aborted, m.timeouts, m.busy)
    assert got == want, (got, want, ch.last_error, seq)
    assert p.messages == m.messages, (p.messages, m.messages)
    assert [f[0] & 0xF for f in p.sent] == m.fcs, (p.sent, m.fcs)
    for f in p.sent:
        assert f[0] >> 4 == 3 and len(f) == (8 if pad is not None else 3)
    # Memory: the one buffer, never replaced, never grown.
    assert ch._rxbuf is p.buf and len(p.buf) == rx_max
    for msg in p.messages:
        assert len(msg) <= rx_max
    assert ch.tx_ok == 0 and ch.tx_failed == 0 and not ch.tx_busy
    return ch


def corpus():
    out = []
    for case in V["cases"]:
        if "frames" in case:
            out.append([unhex(f["data"]) for f in case["frames"] if f["from"] == "sender"])
    for case in V["receiver_cases"]:
        out.append([unhex(f) for f in case["in"]])
    return out


def mutate(rng, seq):
    seq = list(seq)
    for _ in range(1 + rng.below(4)):
        op = rng.below(10)
        if not seq:
            seq.append(bytes([rng.below(256) for _ in range(rng.below(9))]))
            continue
        i = rng.below(len(seq))
        f = seq[i]
        if f is GAP:
            op = 5
        if op == 0 and len(f):  # flip one bit
            b = bytearray(f)
            b[rng.below(len(b))] ^= 1 << rng.below(8)
            seq[i] = bytes(b)
        elif op == 1:  # truncate
            seq[i] = f[: rng.below(len(f) + 1)]
        elif op == 2:  # lengthen, sometimes past 8 bytes
            seq[i] = f + bytes([rng.below(256) for _ in range(1 + rng.below(3))])
        elif op == 3:  # duplicate
            seq.insert(i, f)
        elif op == 4:  # swap with a neighbour
            j = rng.below(len(seq))
            seq[i], seq[j] = seq[j], seq[i]
        elif op == 5:  # drop
            seq.pop(i)
        elif op == 6 and len(f):  # random PCI byte
            seq[i] = bytes([rng.below(256)]) + f[1:]
        elif op == 7 and len(f):  # random PCI type, length/SN kept
            seq[i] = bytes([(rng.below(5) << 4) | (f[0] & 0xF)]) + f[1:]
        elif op == 8:  # a random frame
            seq.insert(i, bytes([rng.below(256) for _ in range(rng.below(9))]))
        else:  # silence past N_Cr
            seq.insert(i, GAP)
    return seq


CONFIGS = ((4095, 0, 0xCC), (64, 0, None), (20, 2, 0xCC), (7, 1, None), (4095, 3, None))


def test_valid_corpus_agrees_with_model():
    for seq in corpus():
        for rx_max, bs, pad in CONFIGS:
            check(seq, rx_max, bs, pad)


def test_mutated_sequences_never_raise_and_counters_agree():
    rng = XorShift(0xC0FFEE)
    base = corpus()
    seen = [0, 0, 0, 0, 0]
    for round_ in range(1500):
        seq = mutate(rng, base[rng.below(len(base))])
        rx_max, bs, pad = CONFIGS[round_ % len(CONFIGS)]
        ch = check(seq, rx_max, bs, pad)
        for i, v in enumerate((ch.rx_frames, ch.rx_ok, ch.rx_dropped, ch.rx_aborted, ch.rx_timeouts)):
            seen[i] += v
    # The mutations reach every outcome, and not only the drop path.
    assert seen[2] < seen[0] and min(seen) > 0, seen


def test_random_frames_into_a_busy_sender():
    # FCs and garbage while sending: no exception, exactly one outcome.
    rng = XorShift(12345)
    fcs = (b"\x30\x00\x00", b"\x30\x02\x05", b"\x31\x00\x00", b"\x32\x00\x00", b"\x30\x01\xf3",
           b"\x34\x00\x00", b"\x30", b"\x30\x00\x90")
    for _ in range(150):
        clock = ManualClock()
        ch = Channel(clock, lambda i, d: True, phys_id(6, 0x00, 0x80), wft_max=3)
        assert ch.send(bytes(6 + rng.below(200)))
        for _ in range(rng.below(40)):
            r = rng.below(4)
            if r == 0:
                f = bytes([rng.below(256) for _ in range(rng.below(10))])
            else:
                f = fcs[rng.below(len(fcs))]
            ch.on_frame(f)
            clock.advance(rng.below(300))
            ch.poll()
        for _ in range(300):
            clock.advance(200)
            ch.poll()  # N_Bs ends whatever is left
        assert not ch.tx_busy and ch.tx_ok + ch.tx_failed == 1, (ch.tx_ok, ch.tx_failed)
