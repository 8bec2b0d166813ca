# Simulated `esp32` module (subset: Partition, NVS) for MicroPython's ESP32 port.
# Valid MicroPython: firmware processes import it under the unix port and under
# CPython alike. The flash lives in the world (sim/flash.py, `esp32_*` operations):
# it survives resets and power cuts, and the world runs the ESP-IDF bootloader's
# OTA selection and rollback at every boot.
#
# Errors are the port's: an ESP-IDF error code becomes OSError(-code, name) (e.g.
# OSError(-4354, 'ESP_ERR_NVS_NOT_FOUND'), OSError(-261, 'ESP_ERR_NOT_FOUND')),
# a missing partition OSError(ENOENT=2), a bad Partition id ValueError.
from _world import world

_NATIVE = 4096  # flash sector: the erase unit
_EINVAL = 22


def _part(info, block_size):
    p = object.__new__(Partition)
    p._setup(info, block_size)
    return p


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if isinstance(id, int):
            if id not in (Partition.BOOT, Partition.RUNNING):
                raise ValueError()
            info = world().call("esp32_partition", which=id)
        elif isinstance(id, str):
            info = world().call("esp32_partition", label=id)
        else:
            raise TypeError("can't convert to str implicitly")
        self._setup(info, block_size)

    def _setup(self, info, block_size):
        if block_size <= 0:
            raise ValueError("invalid block size")
        self._info = info
        self._label = info["label"]
        self._size = info["size"]
        self.block_size = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=4096):
        found = world().call("esp32_find", type=type, subtype=subtype, label=label)
        return [_part(i, block_size) for i in found]

    def info(self):
        i = self._info
        return (i["type"], i["subtype"], i["addr"], i["size"], i["label"], bool(i["encrypted"]))

    def __repr__(self):
        i = self._info
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % (
            i["type"], i["subtype"], i["addr"], i["size"], i["label"], 1 if i["encrypted"] else 0)

    def __eq__(self, other):
        return isinstance(other, Partition) and other._label == self._label

    def __hash__(self):
        return hash(self._label)

    def readblocks(self, block_num, buf, offset=0):
        data = world().call("esp32_read", label=self._label,
                            off=block_num * self.block_size + offset, n=len(buf))
        buf[:] = bytes.fromhex(data)
        return None

    def writeblocks(self, block_num, buf, offset=None):
        # Without offset the blocks are erased first; with one nothing is erased, so
        # the write can only clear bits (erase with ioctl(6, block) beforehand).
        off = block_num * self.block_size + (offset or 0)
        world().call("esp32_write", label=self._label, off=off, data=bytes(buf).hex(),
                     erase=offset is None, block_size=self.block_size)
        return None

    def ioctl(self, op, arg):
        if op in (1, 2, 3):  # INIT, DEINIT, SYNC
            return 0
        if op == 4:  # BLOCK_COUNT
            return self._size // self.block_size
        if op == 5:  # BLOCK_SIZE
            return self.block_size
        if op == 6:  # BLOCK_ERASE: one native 4096-byte block
            if self.block_size != _NATIVE:
                return -_EINVAL
            world().call("esp32_erase", label=self._label, off=arg * _NATIVE, n=_NATIVE)
            return 0
        return None

    def set_boot(self):
        world().call("esp32_set_boot", label=self._label)

    def get_next_update(self):
        return _part(world().call("esp32_next_update", label=self._label), 4096)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        world().call("esp32_mark_valid")


def _key(key):
    if not isinstance(key, str):
        raise TypeError("can't convert to str implicitly")
    return key


class NVS:
    def __init__(self, namespace):
        self._ns = _key(namespace)
        world().call("esp32_nvs_open", ns=self._ns)

    def __repr__(self):
        return "<NVS namespace>"

    def set_i32(self, key, value):
        v = int(value) & 0xFFFFFFFF  # stored as int32_t, as the C cast does
        if v & 0x80000000:
            v -= 0x100000000
        world().call("esp32_nvs_set", ns=self._ns, key=_key(key), kind="i32", value=v)

    def get_i32(self, key):
        return world().call("esp32_nvs_get", ns=self._ns, key=_key(key), kind="i32")

    def set_blob(self, key, value):
        world().call("esp32_nvs_set", ns=self._ns, key=_key(key), kind="blob",
                     value=bytes(value).hex())

    def get_blob(self, key, buffer):
        data = bytes.fromhex(world().call("esp32_nvs_get", ns=self._ns, key=_key(key), kind="blob"))
        n = len(data)
        if n > len(buffer):
            raise OSError(-0x110C, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[:n] = data
        return n

    def erase_key(self, key):
        world().call("esp32_nvs_erase", ns=self._ns, key=_key(key))

    def commit(self):
        world().call("esp32_nvs_commit", ns=self._ns)
