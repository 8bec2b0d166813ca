# The accessory data model (spec section 3): an accessory is a list of
# capabilities; each has attributes, commands and events defined by the
# registry. The list index is the capability's slot on the wire.
from cabinlink import registry as reg
from cabinlink import msg


class Capability:
    # values: {attr_id: initial value}; the keys are the supported attributes.
    # on_write(cap, attr, value) -> status (msg.OK to accept; the node then stores it)
    # on_invoke(cap, cmd, args) -> status or (status, result)
    def __init__(self, cap_id, instance=0, values=None, commands=(), events=(),
                 ranges=None, label=None, on_write=None, on_invoke=None):
        self.id = cap_id
        self.instance = instance
        self.values = values if values is not None else {}
        self.commands = tuple(commands)
        self.events = tuple(events)
        self.ranges = ranges  # {attr: (min, max)} narrower than the registry's
        self.label = label
        self.on_write = on_write
        self.on_invoke = on_invoke
        self.slot = -1
        self.node = None

    def get(self, attr):
        return self.values.get(attr)

    def set(self, attr, value):
        # Local update by the app; subscriptions see it on the node's next poll.
        self.values[attr] = value

    def emit(self, ev, data=None):
        # Raise an event; returns False when there is no node or its queue is full.
        if self.node is None:
            return False
        return self.node.emit(self.slot, ev, data)

    def attr_spec(self, attr):
        # (type, access, min, max) or None for a vendor capability the registry lacks.
        t = reg.ATTRS.get(self.id)
        if t is None:
            return None
        s = t.get(attr)
        if s is not None and self.ranges and attr in self.ranges:
            r = self.ranges[attr]
            s = (s[0], s[1], r[0], r[1])
        return s

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
