# Seeded mutation corpus for the decoder and the node, on both runtimes:
# every mutant of every vector either decodes or raises ProtocolError, and the
# node swallows all of them.
from mpcompat import load_vectors, unhex

from cabinlink.clock import ManualClock
from cabinlink.codec import ProtocolError, decode
from cabinlink.model import device_info
from cabinlink.node import Node


class XorShift:
    def __init__(self, seed):
        self.s = seed or 1

    def next(self, n):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x % n


def corpus():
    v = load_vectors("messages.json")["messages"] + load_vectors("cbor.json")["valid"]
    return [unhex(x["hex"]) for x in v]


def mutants(seed, rounds):
    rng = XorShift(seed)
    base = corpus()
    for _ in range(rounds):
        b = bytearray(base[rng.next(len(base))])
        op = rng.next(5)
        if op == 0 and b:
            b[rng.next(len(b))] ^= 1 << rng.next(8)
        elif op == 1 and b:
            b = b[: rng.next(len(b))]
        elif op == 2:
            i = rng.next(len(b) + 1)
            b = b[:i] + bytes([rng.next(256)]) + b[i:]  # no bytearray.insert on MicroPython
        elif op == 3 and b:
            b[rng.next(len(b))] = rng.next(256)
        else:
            b = b + b[: rng.next(len(b) + 1)]
        yield bytes(b)


def test_decoder_mutants():
    n = bad = 0
    for b in mutants(12345, 3000):
        n += 1
        try:
            decode(b)
        except ProtocolError:
            bad += 1
    assert n == 3000 and 0 < bad < n


def test_node_swallows_mutants():
    class L:
        liveness_ms = 0

        def send(self, peer, data, urgent=False):
            return True

    node = Node(ManualClock(), 0, [device_info("v", "p", "s", "1", "a", lambda c, a, b: 0)])
    link = L()
    for b in mutants(777, 2000):
        node.receive(link, 1, b)
        node.poll()
    assert node.rx_malformed + node.rx_ok + node.rx_dropped > 0
