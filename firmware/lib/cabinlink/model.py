# The accessory data model (spec section 3): an accessory is a list of
# capabilities; each has attributes, commands and events defined by the
# registry. The list index is the capability's slot on the wire.
from cabinlink import registry as reg
from cabinlink import msg


class Capability:
    # values: {attr_id: initial value}; the keys are the supported attributes.
    # on_write(cap, attr, value) -> status (msg.OK to accept; the node then stores it)
    # on_invoke(cap, cmd, args) -> status or (status, result)
    # A vendor capability (id 0xF000-0xFFFE, not in the registry) brings its own
    # specs: {attr: (type, access, min, max)} and cmd_specs: {cmd: ((type, min,
    # max, optional), ...)}, checked exactly like registry ones (spec 3.6).
    def __init__(self, cap_id, instance=0, values=None, commands=(), events=(),
                 ranges=None, label=None, on_write=None, on_invoke=None,
                 specs=None, cmd_specs=None):
        self.id = cap_id
        self.instance = instance
        self.values = values if values is not None else {}
        self.commands = tuple(commands)
        self.events = tuple(events)
        self.ranges = ranges  # {attr: (min, max)} narrower than the registry's
        self.label = label
        self.on_write = on_write
        self.on_invoke = on_invoke
        self.specs = specs
        self.cmd_specs = cmd_specs
        # A registry capability's specs stay packed in the registry (RAM):
        # _at says where, None if cap_id is not in the registry.
        self._at = reg.find(cap_id)
        self.slot = -1
        self.node = None

    def get(self, attr):
        return self.values.get(attr)

    def set(self, attr, value):
        # Local update by the app; subscriptions see it on the node's next poll.
        # A value outside the attribute's type or range is an app bug (spec 3.3).
        s = self.attr_spec(attr)
        if s is None or not check_value(s[0], s[2], s[3], value):
            raise ValueError("bad value for attribute %d of 0x%04x" % (attr, self.id))
        self.values[attr] = value

    def emit(self, ev, data=None):
        # Raise an event; returns False when there is no node or its queue is full.
        if self.node is None:
            return False
        return self.node.emit(self.slot, ev, data)

    def _spec(self, attr):
        # (type, access, min, max) as defined; None if unknown.
        if self.specs is not None:
            return self.specs.get(attr)
        return reg.attr_spec(self._at, attr) if self._at is not None else None

    def attr_spec(self, attr):
        # (type, access, min, max), the range narrowed by `ranges`; None if unknown.
        s = self._spec(attr)
        if s is not None and self.ranges and attr in self.ranges:
            r = self.ranges[attr]
            s = (s[0], s[1], r[0], r[1])
        return s

    def arg_specs(self, cmd):
        if self.cmd_specs is not None:
            return self.cmd_specs.get(cmd)
        return reg.arg_specs(self._at, cmd) if self._at is not None else None

    def check(self):
        # Raise ValueError when this capability contradicts its specs; the node
        # runs it once at start, so a bad app fails on the bench, not in a car.
        if self.specs is None and self._at is None:
            raise ValueError("capability 0x%04x: not in the registry and no specs" % self.id)
        for a in self.values:
            s = self._spec(a)
            if s is None:
                raise ValueError("0x%04x: unknown attribute %d" % (self.id, a))
            if self.ranges and a in self.ranges:
                lo, hi = self.ranges[a]
                if (s[2] is not None and lo < s[2]) or (s[3] is not None and hi > s[3]) or lo > hi:
                    raise ValueError("0x%04x: range of %d outside the registry" % (self.id, a))
            r = self.attr_spec(a)
            if not check_value(r[0], r[2], r[3], self.values[a]):
                raise ValueError("0x%04x: bad value for %d" % (self.id, a))
        for c in self.commands:
            if self.arg_specs(c) is None:
                raise ValueError("0x%04x: unknown command %d" % (self.id, c))
        if self.commands and self.on_invoke is None:
            raise ValueError("0x%04x: commands listed without a handler" % self.id)

    def entry(self):
        # This capability's entry in the DESCRIBE map (spec 5.4).
        e = {msg.C_ID: self.id, msg.C_INSTANCE: self.instance,
             msg.C_ATTRS: sorted(self.values)}
        if self.commands:
            e[msg.C_COMMANDS] = list(self.commands)
        if self.events:
            e[msg.C_EVENTS] = list(self.events)
        if self.ranges:
            e[msg.C_RANGES] = dict((a, list(r)) for a, r in self.ranges.items())
        if self.label:
            e[msg.C_LABEL] = self.label
        return e


def device_info(vendor, product, serial, firmware, hardware, on_invoke,
                boot_count=0, reset_cause=0):
    # The device_info capability every accessory has (spec 3.1), with all its
    # mandatory attributes; the node keeps uptime, health, mode and counters.
    return Capability(reg.CAP_DEVICE_INFO, values={
        reg.ATTR_DEVICE_INFO_VENDOR: vendor,
        reg.ATTR_DEVICE_INFO_PRODUCT: product,
        reg.ATTR_DEVICE_INFO_SERIAL: serial,
        reg.ATTR_DEVICE_INFO_FIRMWARE_VERSION: firmware,
        reg.ATTR_DEVICE_INFO_HARDWARE_VERSION: hardware,
        reg.ATTR_DEVICE_INFO_UPTIME_S: 0,
        reg.ATTR_DEVICE_INFO_BOOT_COUNT: boot_count,
        reg.ATTR_DEVICE_INFO_RESET_CAUSE: reset_cause,
        reg.ATTR_DEVICE_INFO_HEALTH: msg.HEALTH_NOMINAL,
        reg.ATTR_DEVICE_INFO_MODE: msg.MODE_OPERATIONAL,
        reg.ATTR_DEVICE_INFO_RX_MALFORMED: 0,
        reg.ATTR_DEVICE_INFO_RX_DROPPED: 0,
        reg.ATTR_DEVICE_INFO_EVENTS_DROPPED: 0,
    }, commands=(reg.CMD_DEVICE_INFO_IDENTIFY, reg.CMD_DEVICE_INFO_REBOOT,
                 reg.CMD_DEVICE_INFO_READ_LOG), on_invoke=on_invoke)


def check_value(t, lo, hi, v):
    # True if v is a valid value of registry type t within lo..hi (None = open;
    # for str/bytes/list hi is the maximum length, for a bitmap the valid bits).
    if t == reg.T_BOOL:
        return v is True or v is False
    if t == reg.T_STR or t == reg.T_BYTES:
        if t == reg.T_STR:
            if not isinstance(v, str):
                return False
            n = len(v.encode())
        else:
            if not isinstance(v, bytes):
                return False
            n = len(v)
        return hi is None or n <= hi
    if t == reg.T_LIST:
        return isinstance(v, list) and (hi is None or len(v) <= hi)
    if not isinstance(v, int) or isinstance(v, bool):
        return False
    if t == reg.T_BITMAP:
        return v >= 0 and (hi is None or v & ~hi == 0)
    if lo is not None and v < lo:
        return False
    return hi is None or v <= hi
