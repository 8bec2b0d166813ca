# Simulated `bluetooth` module: MicroPython's BLE API as on the esp32 port
# (NimBLE, synchronous IRQs, pairing/bonding compiled in), every call carried
# out by the simulated world, whose radio is a Bumble device (sim/ble.py).
# Valid MicroPython: runs under the unix port and under CPython alike. Where
# the real module raises, this one raises the same way: ValueError for an
# unknown config key (incl. 'rxbuf', absent on esp32), TypeError for a config
# query of more or less than one name, OSError(19) while inactive, OSError(16)
# registering services while advertising or connected, ...
# Not simulated: gap_connect and gattc_* (central role), l2cap_*, hci_cmd.
import os as _os
import sys as _sys

from _world import world as _world

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_SECRET_TYPE_OUR_IRK = const(10)
_GET_KEYS = ("gap_name", "mac", "mtu")
_SET_KEYS = ("gap_name", "mtu", "addr_mode", "bond", "mitm", "le_secure", "io")


def _buf(obj):
    # mp_get_buffer_raise: str and any bytes-like object
    if isinstance(obj, str):
        return obj.encode()
    if isinstance(obj, UUID):
        return obj._b
    return bytes(obj)


class UUID:
    def __init__(self, value):
        if isinstance(value, int):
            if value > 65535:
                raise ValueError("invalid UUID")
            self._b = bytes((value & 0xFF, (value >> 8) & 0xFF))
            return
        raw = _buf(value)
        if len(raw) in (2, 4, 16):  # raw little-endian UUID bytes (even from a str)
            self._b = raw
            return
        digits = []
        for c in raw:
            if c == 0x2D:  # '-'
                continue
            if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66):
                raise ValueError("invalid char in UUID")
            digits.append(c)
            if len(digits) > 32:
                raise ValueError("UUID too long")
        if len(digits) < 32:
            raise ValueError("UUID too short")
        self._b = bytes(reversed(bytes.fromhex(bytes(digits).decode())))

    def __eq__(self, other):
        return isinstance(other, UUID) and self._b == other._b

    def __ne__(self, other):
        return not self.__eq__(other)

    def _key(self, other):
        if not isinstance(other, UUID):
            raise TypeError("unsupported types for comparison")
        if len(self._b) != len(other._b):
            return len(self._b), len(other._b)
        return self._b, other._b

    def __lt__(self, other):
        a, b = self._key(other)
        return a < b

    def __le__(self, other):
        a, b = self._key(other)
        return a <= b

    def __gt__(self, other):
        a, b = self._key(other)
        return a > b

    def __ge__(self, other):
        a, b = self._key(other)
        return a >= b

    def __hash__(self):
        return hash(self._b)

    def __bytes__(self):  # CPython's bytes(uuid)
        return self._b

    def __iter__(self):  # MicroPython's bytes(uuid) iterates
        return iter(self._b)

    def __repr__(self):
        h = bytes(reversed(self._b)).hex()
        if len(self._b) <= 4:
            return "UUID(0x%s)" % h
        return "UUID('%s-%s-%s-%s-%s')" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    __str__ = __repr__


def _mv(a):
    # IRQ payloads: read-only memoryviews over bytes (copy them with bytes()).
    if isinstance(a, dict):
        return memoryview(bytes.fromhex(a["b"]))
    return a


def _print_exc(e):
    pe = getattr(_sys, "print_exception", None)
    if pe is not None:
        pe(e)
    else:
        print(repr(e))


class BLE:
    _inst = None

    def __new__(cls, *args):
        if BLE._inst is None:
            o = object.__new__(cls)
            o._handler = None
            o._written = None
            o._listening = False
            BLE._inst = o
        return BLE._inst

    # --- general ------------------------------------------------------------
    def _listen(self):
        if not self._listening:
            _world().on("ble", self._event)
            self._listening = True

    def _event(self, ev):
        irq = ev["irq"]
        data = tuple([_mv(a) for a in ev["a"]])
        result = None
        h = self._handler
        v = ev.get("v")
        if v is not None:  # a GATTS_WRITE: gatts_read() in the handler sees what was written
            self._written = (data[1], bytes.fromhex(v))
        if h is not None:
            try:
                result = h(irq, data)
            except Exception as e:
                print("Unhandled exception in IRQ callback handler")
                _print_exc(e)
                result = None
        self._written = None
        rid = ev.get("rid")
        if rid is not None:
            if irq == _IRQ_GET_SECRET:
                r = None if result is None else _buf(result).hex()
            else:
                r = bool(result)
            _world().notify("ble_reply", rid=rid, r=r)

    def _irq_now(self, irq, data):
        # An IRQ raised synchronously inside a call (as NimBLE does during init).
        h = self._handler
        if h is None:
            return None
        try:
            return h(irq, data)
        except Exception as e:
            print("Unhandled exception in IRQ callback handler")
            _print_exc(e)
            return None

    def _load_irk(self):
        # NimBLE's load_irk(): our IRK from the secret store, else a new one stored.
        key = memoryview(b"irk")
        irk = self._irq_now(_IRQ_GET_SECRET, (_SECRET_TYPE_OUR_IRK, 0, key))
        if irk is not None and len(_buf(irk)) == 16:
            return _buf(irk)
        irk = _os.urandom(16)
        if self._irq_now(_IRQ_SET_SECRET, (_SECRET_TYPE_OUR_IRK, key, memoryview(irk))):
            return irk
        return None

    def active(self, *args):
        if len(args) > 1:
            raise TypeError("function takes at most 2 positional arguments")
        if not args:
            return _world().call("ble_active")
        self._listen()
        if args[0]:
            irk = self._load_irk()
            return _world().call("ble_active", on=True, irk=irk.hex() if irk else None)
        return _world().call("ble_active", on=False)

    def config(self, *args, **kw):
        if not kw:
            if len(args) != 1:
                raise TypeError("must query one param")
            name = args[0]
            if name not in _GET_KEYS:
                raise ValueError("unknown config param")
            r = _world().call("ble_config", get=name)
            if name == "gap_name":
                return bytes.fromhex(r)
            if name == "mac":
                return (r[0], bytes.fromhex(r[1]))
            return r
        if args:
            raise TypeError("can't specify pos and kw args")
        out = {}
        for k in kw:
            if k not in _SET_KEYS:
                raise ValueError("unknown config param")
            v = kw[k]
            if k == "gap_name":
                out[k] = _buf(v).hex()
            elif k in ("bond", "mitm", "le_secure"):
                out[k] = bool(v)
            else:
                out[k] = int(v)
        _world().call("ble_config", set=out)

    def irq(self, handler):
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._handler = handler
        self._listen()

    # --- GAP ------------------------------------------------------------------
    def gap_advertise(self, interval_us=500000, adv_data=None, *, resp_data=None,
                      connectable=True):
        if interval_us is None:
            _world().call("ble_adv", interval_us=None)
            return
        _world().call("ble_adv", interval_us=int(interval_us),
                     adv=None if adv_data is None else _buf(adv_data).hex(),
                     resp=None if resp_data is None else _buf(resp_data).hex(),
                     connectable=bool(connectable))

    def gap_scan(self, *args):
        if len(args) > 4:
            raise TypeError("function takes at most 5 positional arguments")
        if args and args[0] is None:
            _world().call("ble_scan", duration_ms=None)
            return
        a = list(args) + [0, 1280000, 11250, False][len(args):]
        _world().call("ble_scan", duration_ms=int(a[0]), interval_us=int(a[1]),
                     window_us=int(a[2]), active=bool(a[3]))

    def gap_connect(self, *args, **kw):
        raise NotImplementedError("central role (gap_connect) is not simulated")

    def gap_disconnect(self, conn_handle):
        return _world().call("ble_disconnect", conn=int(conn_handle))

    def gap_pair(self, conn_handle):
        _world().call("ble_pair", conn=int(conn_handle))

    def gap_passkey(self, conn_handle, action, passkey):
        _world().call("ble_passkey", conn=int(conn_handle), action=int(action),
                     passkey=int(passkey))

    # --- GATT server ------------------------------------------------------------
    def gatts_register_services(self, services):
        out = []
        for svc in services:
            if len(svc) != 2:
                raise ValueError("requested length 2 but object has length %d" % len(svc))
            if not isinstance(svc[0], UUID):
                raise ValueError("invalid service UUID")
            chars = []
            for ch in svc[1]:
                if len(ch) < 2 or len(ch) > 3:
                    raise ValueError("invalid characteristic tuple")
                if not isinstance(ch[0], UUID):
                    raise ValueError("invalid characteristic UUID")
                descs = []
                if len(ch) == 3:
                    for d in ch[2]:
                        if len(d) != 2:
                            raise ValueError(
                                "requested length 2 but object has length %d" % len(d))
                        if not isinstance(d[0], UUID):
                            raise ValueError("invalid descriptor UUID")
                        descs.append([d[0]._b.hex(), int(d[1])])
                chars.append([ch[0]._b.hex(), int(ch[1]), descs])
            out.append([svc[0]._b.hex(), chars])
        handles = _world().call("ble_register", services=out)
        return tuple([tuple(h) for h in handles])

    def gatts_read(self, value_handle):
        w = self._written
        if w is not None and w[0] == value_handle:
            return w[1]
        return bytes.fromhex(_world().call("ble_read", h=int(value_handle)))

    def gatts_write(self, value_handle, data, send_update=False):
        return _world().call("ble_write", h=int(value_handle), data=_buf(data).hex(),
                            update=bool(send_update))

    def _send(self, conn_handle, value_handle, data, indicate):
        _world().call("ble_notify", conn=int(conn_handle), h=int(value_handle),
                     data=None if data is None else _buf(data).hex(), indicate=indicate)

    def gatts_notify(self, conn_handle, value_handle, data=None):
        self._send(conn_handle, value_handle, data, False)

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        self._send(conn_handle, value_handle, data, True)

    def gatts_set_buffer(self, value_handle, len, append=False):
        _world().call("ble_set_buffer", h=int(value_handle), len=int(len),
                     append=bool(append))
