# Helpers shared by the dual-runtime tests in tests/mp/ (CPython and MicroPython).
import json

VECTORS = "spec/vectors/"


def load_vectors(name):
    with open(VECTORS + name) as f:
        return json.load(f)


def unhex(s):
    return bytes.fromhex(s.replace(" ", ""))


def tohex(b):
    return "".join("%02x" % x for x in b)


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return True
    except Exception as e:
        raise AssertionError("expected %s, got %s %r" % (exc.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing raised" % exc.__name__)


def from_json(v):
    # Vector values: bytes as {"$bytes": hex}, maps as {"$map": [[k, v], ...]}.
    if isinstance(v, dict):
        if "$bytes" in v:
            return unhex(v["$bytes"])
        out = {}
        for k, x in v["$map"]:
            out[from_json(k)] = from_json(x)
        return out
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def same(a, b):
    # Equality that tells True from 1 (CBOR does).
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(k in b and same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b
