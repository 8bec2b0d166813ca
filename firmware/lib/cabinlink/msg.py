# CabinLink v0.1 messages (spec section 5). A message is one CBOR array whose
# first element is the message type. Requests carry a transaction id (tid) in
# element 1 and are answered by exactly one RESULT echoing it. Trailing elements
# a receiver does not know are ignored (forward compatibility).
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

from cabinlink.codec import ProtocolError, decode

VERSION_MAJOR = const(0)
VERSION_MINOR = const(1)

# Message types
HEARTBEAT = const(1)  # [1, uptime_s mod 65536, health, mode]        node -> all
HELLO = const(2)  # [2, tid, major, minor]                            car -> acc
DESCRIBE = const(3)  # [3, tid]                                       car -> acc
READ = const(4)  # [4, tid, slot, attr]                               car -> acc
WRITE = const(5)  # [5, tid, slot, attr, value]                       car -> acc
SUBSCRIBE = const(6)  # [6, tid, slot, attr, min_ms, max_s, threshold?]
UNSUBSCRIBE = const(7)  # [7, tid, slot, attr]
INVOKE = const(8)  # [8, tid, slot, cmd, args?]                       car -> acc
RESULT = const(9)  # [9, tid, status, value?]                          acc -> car
REPORT = const(10)  # [10, slot, attr, value]                          acc -> car
EVENT = const(11)  # [11, slot, event, data?]                          acc -> car
SECURED = const(15)  # [15, session, freshness, inner, mac] reserved (spec 9)
FUTURE_REQUEST_FIRST = const(16)  # 16..31: answered with UNSUPPORTED
FUTURE_NOTICE_FIRST = const(32)  # 32..63: ignored and counted
TYPE_LIMIT = const(64)

# RESULT status codes
OK = const(0)
MALFORMED = const(1)
UNSUPPORTED = const(2)
NOT_FOUND = const(3)
ACCESS_DENIED = const(4)
INVALID_VALUE = const(5)
BUSY = const(6)
CONFIRM_REQUIRED = const(7)
NO_RESOURCES = const(8)
HW_FAULT = const(9)
VERSION_MISMATCH = const(10)
AUTH_REQUIRED = const(11)
INVALID_STATE = const(12)

# HEARTBEAT health (after Cyphal) and mode
HEALTH_NOMINAL = const(0)
HEALTH_ADVISORY = const(1)
HEALTH_CAUTION = const(2)
HEALTH_WARNING = const(3)
MODE_OPERATIONAL = const(0)
MODE_INITIALIZING = const(1)
MODE_SAFE = const(2)
MODE_UPDATE = const(3)

# Keys of the DESCRIBE map (spec 5.4) and of each capability entry in it
D_VERSION = const(0)
D_CLASS = const(1)
D_VENDOR = const(2)
D_PRODUCT = const(3)
D_SERIAL = const(4)
D_FIRMWARE = const(5)
D_HARDWARE = const(6)
D_CAPS = const(7)
D_MAX_RX = const(8)
C_ID = const(0)
C_INSTANCE = const(1)
C_ATTRS = const(2)
C_COMMANDS = const(3)
C_EVENTS = const(4)
C_RANGES = const(5)
C_LABEL = const(6)

MAX_SUBSCRIBE_S = const(3600)


def is_heartbeat(b):
    # True only for a complete, well-formed v0.1 HEARTBEAT [1, uint16, health,
    # mode] (health and mode < 24): checked byte by byte, no decoding, so the
    # commonest frame on a bus costs almost nothing. Anything else -> False
    # (the caller decodes it the normal way, errors and all).
    n = len(b)
    if n < 5 or b[0] != 0x84 or b[1] != HEARTBEAT:
        return False
    h = b[2]
    i = 3 if h < 24 else 4 if h == 24 else 5 if h == 25 else 0
    return i > 0 and n == i + 2 and b[i] < 24 and b[i + 1] < 24


def is_request(t):
    return HELLO <= t <= INVOKE or FUTURE_REQUEST_FIRST <= t < FUTURE_NOTICE_FIRST


def parse(data):
    # -> the message list, element 0 a valid type; ProtocolError otherwise.
    m = decode(data)
    if not isinstance(m, list) or not m:
        raise ProtocolError("not a message array")
    t = m[0]
    if not isinstance(t, int) or isinstance(t, bool) or not 0 < t < TYPE_LIMIT:
        raise ProtocolError("bad message type")
    if is_request(t) and (len(m) < 2 or not _is_uint(m[1]) or m[1] > 0xFFFF):
        raise ProtocolError("bad tid")
    return m


def _is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def field_uint(m, i, limit):
    # Element i of m as an int in 0..limit, else ProtocolError.
    if i >= len(m):
        raise ProtocolError("missing field")
    v = m[i]
    if not _is_uint(v) or v > limit:
        raise ProtocolError("bad field")
    return v


# Builders: used by the accessory (result/report/event/heartbeat) and by the car.
def hello(tid, major=VERSION_MAJOR, minor=VERSION_MINOR):
    return [HELLO, tid, major, minor]


def describe(tid):
    return [DESCRIBE, tid]


def read(tid, slot, attr):
    return [READ, tid, slot, attr]


def write(tid, slot, attr, value):
    return [WRITE, tid, slot, attr, value]


def subscribe(tid, slot, attr, min_ms, max_s, threshold=None):
    m = [SUBSCRIBE, tid, slot, attr, min_ms, max_s]
    if threshold is not None:
        m.append(threshold)
    return m


def unsubscribe(tid, slot, attr):
    return [UNSUBSCRIBE, tid, slot, attr]


def invoke(tid, slot, cmd, args=None):
    m = [INVOKE, tid, slot, cmd]
    if args is not None:
        m.append(args)
    return m


def result(tid, status, value=None):
    if value is None:
        return [RESULT, tid, status]
    return [RESULT, tid, status, value]


def report(slot, attr, value):
    return [REPORT, slot, attr, value]


def event(slot, ev, data=None):
    if data is None:
        return [EVENT, slot, ev]
    return [EVENT, slot, ev, data]


def heartbeat(uptime_s, health=HEALTH_NOMINAL, mode=MODE_OPERATIONAL):
    return [HEARTBEAT, uptime_s & 0xFFFF, health, mode]
