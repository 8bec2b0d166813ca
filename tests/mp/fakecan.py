# An in-memory CAN bus whose controllers have MicroPython's machine.CAN surface
# (send/recv/state/restart), for dual-runtime link tests. Frames are delivered
# to every other controller in send order; a controller can be forced bus-off.
STATE_ACTIVE = 1
STATE_BUS_OFF = 4
FLAG_EXT_ID = 2


class FakeBus:
    def __init__(self):
        self.ctls = []
        self.log = []  # (sender index, id, bytes)

    def controller(self):
        c = FakeCAN(self, len(self.ctls))
        self.ctls.append(c)
        return c

    def deliver(self, src, can_id, data, flags):
        self.log.append((src, can_id, bytes(data)))
        for c in self.ctls:
            if c.index != src and c.st != STATE_BUS_OFF and c.accepts(can_id, flags):
                c.rxq.append((can_id, bytes(data), flags))


class FakeCAN:
    FILTERS_MAX = 6  # as an MCP2515; set_filters(None) accepts everything

    def __init__(self, bus, index):
        self.bus = bus
        self.index = index
        self.rxq = []
        self.st = STATE_ACTIVE
        self.tx_full = False
        self.restarts = 0
        self.filters = None
        self.filtered = 0  # frames the filters kept out

    def set_filters(self, filters):
        if filters is not None and len(filters) > self.FILTERS_MAX:
            raise ValueError("too many filters")
        self.filters = None if filters is None else list(filters)

    def accepts(self, can_id, flags):
        if self.filters is None:
            return True
        for fid, mask, fflags in self.filters:
            if (can_id & mask) == (fid & mask) and (fflags & FLAG_EXT_ID) == (flags & FLAG_EXT_ID):
                return True
        self.filtered += 1
        return False

    def send(self, can_id, data, flags=0):
        if len(data) > 8:
            raise OverflowError("data too long")
        if self.st == STATE_BUS_OFF:
            raise OSError(5)
        if self.tx_full:
            return None
        self.bus.deliver(self.index, can_id, data, flags)
        return 0

    def recv(self, lst=None):
        if not self.rxq:
            return None
        can_id, data, flags = self.rxq.pop(0)
        if lst is None:
            lst = [0, memoryview(bytearray(8)), 0, 0]
        buf = bytearray(8)
        buf[: len(data)] = data
        lst[0] = can_id
        lst[1] = memoryview(buf)[: len(data)]
        lst[2] = flags
        lst[3] = 0
        return lst

    def state(self):
        return self.st

    def restart(self):
        self.restarts += 1
        self.st = STATE_ACTIVE

    def inject(self, can_id, data, flags=FLAG_EXT_ID):
        self.rxq.append((can_id, bytes(data), flags))
