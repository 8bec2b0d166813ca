# An in-memory CAN bus whose controllers have MicroPython's machine.CAN surface
# (send/recv/state/restart/set_filters/irq), for dual-runtime link tests. Frames
# are delivered to every other controller in send order; a controller can be
# forced bus-off. An IRQ handler runs at once, as a scheduled soft IRQ would
# before the next poll.
STATE_ACTIVE = 1
STATE_BUS_OFF = 4
FLAG_EXT_ID = 2
IRQ_TX = 1
IRQ_RX = 2


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
                c.fire(IRQ_RX)


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
        self.handler = None
        self.trigger = 0
        self.flags_due = 0  # IRQ flags not yet read by irq().flags()
        self.irqs = 0  # handler calls

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
        self.fire(IRQ_TX)  # sent at once: TX done
        return 0

    def irq(self, handler=None, trigger=0, hard=False):
        if handler is not None or trigger:
            self.handler = handler
            self.trigger = trigger
        return self

    def flags(self):  # irq().flags(): one call reads and clears them
        f = self.flags_due
        self.flags_due = 0
        return f

    def fire(self, flag):
        if self.trigger & flag and self.handler is not None:
            self.flags_due |= flag
            self.irqs += 1
            self.handler(self)

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
