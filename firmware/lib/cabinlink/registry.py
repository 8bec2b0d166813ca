# GENERATED from spec/registry.json by host/cabinlink_tools/registry_gen.py: do not edit.
# Regenerate with `make registry`, i.e.
#   PYTHONPATH=host:firmware/lib python -m cabinlink_tools.registry_gen --write
# CabinLink capability registry: constants, and the specs the node checks WRITE
# and INVOKE against, packed in one bytes object to save RAM: a spec becomes a
# tuple only when asked for (find, attr_spec, arg_specs).
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

VERSION = "0.1"

# Value types
T_BOOL = const(0)
T_UINT = const(1)
T_INT = const(2)
T_STR = const(3)
T_BYTES = const(4)
T_ENUM = const(5)
T_BITMAP = const(6)
T_LIST = const(7)

# Attribute access flags (bit set)
A_READ = const(1)
A_WRITE = const(2)
A_REPORT = const(4)
A_PERSIST = const(8)

# Device classes (HELLO result, DESCRIBE)
CLASS_OTHER = const(0)
CLASS_PHONE_MOUNT = const(1)
CLASS_AMBIENT = const(2)
CLASS_CONTROLLER = const(3)

# Capabilities
CAP_DEVICE_INFO = const(0x0001)
CAP_POWER = const(0x0002)
CAP_TEMPERATURE = const(0x0100)
CAP_HUMIDITY = const(0x0101)
CAP_CO2 = const(0x0102)
CAP_ILLUMINANCE = const(0x0103)
CAP_PM25 = const(0x0104)
CAP_VOC_INDEX = const(0x0105)
CAP_CLAMP = const(0x0200)
CAP_ROTATION = const(0x0201)
CAP_PHONE_PRESENCE = const(0x0202)
CAP_WIRELESS_CHARGER = const(0x0203)
CAP_BUTTONS = const(0x0300)
CAP_ROTARY_ENCODER = const(0x0301)
CAP_LEDS = const(0x0400)
CAP_HAPTIC = const(0x0401)
CAP_FIRMWARE_UPDATE = const(0x0500)

# device_info (0x0001)
ATTR_DEVICE_INFO_VENDOR = const(0)
ATTR_DEVICE_INFO_PRODUCT = const(1)
ATTR_DEVICE_INFO_SERIAL = const(2)
ATTR_DEVICE_INFO_FIRMWARE_VERSION = const(3)
ATTR_DEVICE_INFO_HARDWARE_VERSION = const(4)
ATTR_DEVICE_INFO_UPTIME_S = const(5)
ATTR_DEVICE_INFO_BOOT_COUNT = const(6)
ATTR_DEVICE_INFO_RESET_CAUSE = const(7)
ATTR_DEVICE_INFO_HEALTH = const(8)
ATTR_DEVICE_INFO_MODE = const(9)
ATTR_DEVICE_INFO_RX_MALFORMED = const(10)
ATTR_DEVICE_INFO_RX_DROPPED = const(11)
ATTR_DEVICE_INFO_EVENTS_DROPPED = const(12)
ATTR_DEVICE_INFO_MEM_FREE = const(13)
DEVICE_INFO_RESET_CAUSE_UNKNOWN = const(0)
DEVICE_INFO_RESET_CAUSE_POWER_ON = const(1)
DEVICE_INFO_RESET_CAUSE_HARD = const(2)
DEVICE_INFO_RESET_CAUSE_WATCHDOG = const(3)
DEVICE_INFO_RESET_CAUSE_DEEPSLEEP = const(4)
DEVICE_INFO_RESET_CAUSE_SOFT = const(5)
DEVICE_INFO_HEALTH_NOMINAL = const(0)
DEVICE_INFO_HEALTH_ADVISORY = const(1)
DEVICE_INFO_HEALTH_CAUTION = const(2)
DEVICE_INFO_HEALTH_WARNING = const(3)
DEVICE_INFO_MODE_OPERATIONAL = const(0)
DEVICE_INFO_MODE_INITIALIZING = const(1)
DEVICE_INFO_MODE_SAFE = const(2)
DEVICE_INFO_MODE_UPDATE = const(3)
CMD_DEVICE_INFO_IDENTIFY = const(0)
CMD_DEVICE_INFO_REBOOT = const(1)
CMD_DEVICE_INFO_READ_LOG = const(2)

# power (0x0002)
ATTR_POWER_SUPPLY_MV = const(0)
ATTR_POWER_SOURCE = const(1)
ATTR_POWER_BATTERY_PERCENT = const(2)
ATTR_POWER_LOW_VOLTAGE_MV = const(3)
POWER_SOURCE_VEHICLE = const(0)
POWER_SOURCE_USB = const(1)
POWER_SOURCE_BATTERY = const(2)
EV_POWER_LOW_VOLTAGE = const(0)

# temperature (0x0100)
ATTR_TEMPERATURE_VALUE = const(0)
ATTR_TEMPERATURE_STATUS = const(1)
ATTR_TEMPERATURE_OFFSET = const(2)
ATTR_TEMPERATURE_SAMPLE_PERIOD_MS = const(3)
TEMPERATURE_STATUS_OK = const(0)
TEMPERATURE_STATUS_WARMING_UP = const(1)
TEMPERATURE_STATUS_FAULT = const(2)
TEMPERATURE_STATUS_NOT_PRESENT = const(3)

# humidity (0x0101)
ATTR_HUMIDITY_VALUE = const(0)
ATTR_HUMIDITY_STATUS = const(1)
ATTR_HUMIDITY_OFFSET = const(2)
ATTR_HUMIDITY_SAMPLE_PERIOD_MS = const(3)
HUMIDITY_STATUS_OK = const(0)
HUMIDITY_STATUS_WARMING_UP = const(1)
HUMIDITY_STATUS_FAULT = const(2)
HUMIDITY_STATUS_NOT_PRESENT = const(3)

# co2 (0x0102)
ATTR_CO2_VALUE = const(0)
ATTR_CO2_STATUS = const(1)
ATTR_CO2_OFFSET = const(2)
ATTR_CO2_SAMPLE_PERIOD_MS = const(3)
ATTR_CO2_AUTO_CALIBRATION = const(4)
ATTR_CO2_HIGH_PPM = const(5)
ATTR_CO2_HYSTERESIS_PPM = const(6)
ATTR_CO2_LEVEL = const(7)
CO2_STATUS_OK = const(0)
CO2_STATUS_WARMING_UP = const(1)
CO2_STATUS_FAULT = const(2)
CO2_STATUS_NOT_PRESENT = const(3)
CO2_LEVEL_GOOD = const(0)
CO2_LEVEL_POOR = const(1)
CMD_CO2_FORCE_RECALIBRATION = const(0)
EV_CO2_AIR_QUALITY = const(0)

# illuminance (0x0103)
ATTR_ILLUMINANCE_VALUE = const(0)
ATTR_ILLUMINANCE_STATUS = const(1)
ATTR_ILLUMINANCE_SAMPLE_PERIOD_MS = const(3)
ILLUMINANCE_STATUS_OK = const(0)
ILLUMINANCE_STATUS_WARMING_UP = const(1)
ILLUMINANCE_STATUS_FAULT = const(2)
ILLUMINANCE_STATUS_NOT_PRESENT = const(3)

# pm25 (0x0104)
ATTR_PM25_VALUE = const(0)
ATTR_PM25_STATUS = const(1)
ATTR_PM25_SAMPLE_PERIOD_MS = const(3)
PM25_STATUS_OK = const(0)
PM25_STATUS_WARMING_UP = const(1)
PM25_STATUS_FAULT = const(2)
PM25_STATUS_NOT_PRESENT = const(3)

# voc_index (0x0105)
ATTR_VOC_INDEX_VALUE = const(0)
ATTR_VOC_INDEX_STATUS = const(1)
ATTR_VOC_INDEX_SAMPLE_PERIOD_MS = const(3)
VOC_INDEX_STATUS_OK = const(0)
VOC_INDEX_STATUS_WARMING_UP = const(1)
VOC_INDEX_STATUS_FAULT = const(2)
VOC_INDEX_STATUS_NOT_PRESENT = const(3)

# clamp (0x0200)
ATTR_CLAMP_STATE = const(0)
ATTR_CLAMP_FAULT = const(1)
ATTR_CLAMP_FORCE_LIMIT_MA = const(2)
ATTR_CLAMP_VEHICLE_MOVING = const(3)
ATTR_CLAMP_MOTOR_CURRENT_MA = const(4)
CLAMP_STATE_OPEN = const(0)
CLAMP_STATE_CLOSING = const(1)
CLAMP_STATE_CLAMPED = const(2)
CLAMP_STATE_RELEASING = const(3)
CLAMP_STATE_FAULT = const(4)
CLAMP_FAULT_NONE = const(0)
CLAMP_FAULT_STALL = const(1)
CLAMP_FAULT_TIMEOUT = const(2)
CLAMP_FAULT_OVERCURRENT = const(3)
CLAMP_FAULT_LIMIT_SWITCH = const(4)
CMD_CLAMP_CLAMP = const(0)
CMD_CLAMP_RELEASE = const(1)
EV_CLAMP_STATE_CHANGED = const(0)
EV_CLAMP_FAULT = const(1)

# rotation (0x0201)
ATTR_ROTATION_ORIENTATION = const(0)
ATTR_ROTATION_ANGLE_DEG = const(1)
ROTATION_ORIENTATION_PORTRAIT = const(0)
ROTATION_ORIENTATION_LANDSCAPE = const(1)
CMD_ROTATION_ROTATE = const(0)
EV_ROTATION_ROTATED = const(0)

# phone_presence (0x0202)
ATTR_PHONE_PRESENCE_PRESENT = const(0)
EV_PHONE_PRESENCE_CHANGED = const(0)

# wireless_charger (0x0203)
ATTR_WIRELESS_CHARGER_STATE = const(0)
ATTR_WIRELESS_CHARGER_POWER_MW = const(1)
ATTR_WIRELESS_CHARGER_TEMPERATURE = const(2)
ATTR_WIRELESS_CHARGER_CUTOFF_TEMPERATURE = const(3)
ATTR_WIRELESS_CHARGER_ENABLED = const(4)
WIRELESS_CHARGER_STATE_OFF = const(0)
WIRELESS_CHARGER_STATE_IDLE = const(1)
WIRELESS_CHARGER_STATE_CHARGING = const(2)
WIRELESS_CHARGER_STATE_FULL = const(3)
WIRELESS_CHARGER_STATE_FAULT = const(4)
WIRELESS_CHARGER_STATE_OVER_TEMPERATURE = const(5)
EV_WIRELESS_CHARGER_STATE_CHANGED = const(0)

# buttons (0x0300)
ATTR_BUTTONS_COUNT = const(0)
ATTR_BUTTONS_PRESSED = const(1)
ATTR_BUTTONS_LONG_PRESS_MS = const(2)
ATTR_BUTTONS_DOUBLE_PRESS_MS = const(3)
EV_BUTTONS_PRESS = const(0)
EV_BUTTONS_RELEASE = const(1)
EV_BUTTONS_LONG_PRESS = const(2)
EV_BUTTONS_DOUBLE_PRESS = const(3)

# rotary_encoder (0x0301)
ATTR_ROTARY_ENCODER_POSITION = const(0)
ATTR_ROTARY_ENCODER_DETENTS_PER_REV = const(1)
ATTR_ROTARY_ENCODER_ACCELERATION = const(2)
EV_ROTARY_ENCODER_DELTA = const(0)

# leds (0x0400)
ATTR_LEDS_COUNT = const(0)
ATTR_LEDS_BRIGHTNESS = const(1)
CMD_LEDS_SET = const(0)
CMD_LEDS_FILL = const(1)
CMD_LEDS_OFF = const(2)

# haptic (0x0401)
ATTR_HAPTIC_ENABLED = const(0)
CMD_HAPTIC_PULSE = const(0)

# _SPECS: per capability, ids ascending:
#   cap id (2 bytes, big-endian), attribute count, command bytes, event count,
#   per attribute: attr, type, access, min, max                     (5 bytes)
#   per command:   cmd, arg count, per argument: type | 0x80 if optional, min, max
#   per event:     event
# min/max are indices into _VALS (0 = None: unbounded); str/bytes: max = length
# in bytes; list: max = items; enum: 0..largest value; bitmap: 0..mask of all
# defined bits.
_VALS = (
    None, -2147483648, -4000, -1000, -500, -180, 0, 1,
    2, 3, 4, 5, 32, 100, 180, 200,
    255, 256, 400, 500, 600, 1000, 1024, 2000,
    3000, 5000, 8000, 10000, 12500, 30000, 40000, 50000,
    200000, 600000, 16777215, 2147483647, 4294967295,
)

_SPECS = (
    # device_info
    b"\x00\x01\x0e\x0c\x00\x00\x03\x01\x00\x0c\x01\x03\x01\x00\x0c\x02\x03\x01\x00\x0c\x03\x03\x01\x00\x0c\x04\x03\x01\x00\x0c\x05\x01\x01\x06\x24\x06\x01\x01\x06\x24\x07\x05\x01\x06\x0b\x08\x05\x05\x06\x09\x09\x05\x05\x06\x09\x0a\x01\x01\x06\x24\x0b\x01\x01\x06\x24\x0c\x01\x01\x06\x24\x0d\x01\x01\x06\x24\x00\x01\x01\x06\x14\x01\x00\x02\x01\x01\x06\x24"
    # power
    b"\x00\x02\x04\x00\x01\x00\x01\x05\x06\x1d\x01\x05\x05\x06\x08\x02\x01\x05\x06\x0d\x03\x01\x0b\x06\x1d\x00"
    # temperature
    b"\x01\x00\x04\x00\x00\x00\x02\x05\x02\x1c\x01\x05\x05\x06\x09\x02\x02\x0b\x03\x15\x03\x01\x0b\x0d\x21"
    # humidity
    b"\x01\x01\x04\x00\x00\x00\x01\x05\x06\x1b\x01\x05\x05\x06\x09\x02\x02\x0b\x03\x15\x03\x01\x0b\x0d\x21"
    # co2
    b"\x01\x02\x08\x05\x01\x00\x01\x05\x06\x1e\x01\x05\x05\x06\x09\x02\x02\x0b\x04\x13\x03\x01\x0b\x15\x21\x04\x00\x0b\x00\x00\x05\x01\x0b\x12\x1b\x06\x01\x0b\x06\x15\x07\x05\x05\x06\x07\x00\x01\x01\x12\x17\x00"
    # illuminance
    b"\x01\x03\x03\x00\x00\x00\x01\x05\x06\x20\x01\x05\x05\x06\x09\x03\x01\x0b\x0d\x21"
    # pm25
    b"\x01\x04\x03\x00\x00\x00\x01\x05\x06\x15\x01\x05\x05\x06\x09\x03\x01\x0b\x15\x21"
    # voc_index
    b"\x01\x05\x03\x00\x00\x00\x01\x05\x07\x13\x01\x05\x05\x06\x09\x03\x01\x0b\x15\x1b"
    # clamp
    b"\x02\x00\x05\x07\x02\x00\x05\x05\x06\x0a\x01\x05\x05\x06\x0a\x02\x01\x0b\x0d\x17\x03\x00\x03\x00\x00\x04\x01\x01\x06\x19\x00\x00\x01\x01\x80\x00\x00\x00\x01"
    # rotation
    b"\x02\x01\x02\x05\x01\x00\x05\x05\x06\x07\x01\x02\x05\x05\x0e\x00\x01\x05\x06\x07\x00"
    # phone_presence
    b"\x02\x02\x01\x00\x01\x00\x00\x05\x00\x00\x00"
    # wireless_charger
    b"\x02\x03\x05\x00\x01\x00\x05\x05\x06\x0b\x01\x01\x05\x06\x1f\x02\x02\x05\x02\x1c\x03\x02\x0b\x18\x1a\x04\x00\x0b\x00\x00\x00"
    # buttons
    b"\x03\x00\x04\x00\x04\x00\x01\x01\x07\x0c\x01\x06\x05\x06\x24\x02\x01\x0b\x0f\x19\x03\x01\x0b\x06\x15\x00\x01\x02\x03"
    # rotary_encoder
    b"\x03\x01\x03\x00\x01\x00\x02\x05\x01\x23\x01\x01\x01\x07\x16\x02\x00\x0b\x00\x00\x00"
    # leds
    b"\x04\x00\x02\x0f\x00\x00\x01\x01\x07\x11\x01\x01\x0b\x06\x0d\x00\x02\x01\x06\x10\x01\x06\x22\x01\x01\x01\x06\x22\x02\x00"
    # haptic
    b"\x04\x01\x01\x08\x00\x00\x00\x0b\x00\x00\x00\x02\x01\x07\x15\x81\x06\x0d"
    # firmware_update
    b"\x05\x00\x00\x00\x00"
)


def find(cap):
    # Offset of cap's records in _SPECS, the `at` of attr_spec and arg_specs;
    # None if cap is not in the registry.
    b = _SPECS
    i = 0
    while i < len(b):
        if b[i] << 8 | b[i + 1] == cap:
            return i
        i += 5 + 5 * b[i + 2] + b[i + 3] + b[i + 4]
    return None


def attr_spec(at, attr):
    # (type, access, min, max) of an attribute; None if the capability has none such.
    b = _SPECS
    for k in range(at + 5, at + 5 + 5 * b[at + 2], 5):
        if b[k] == attr:
            v = _VALS
            return b[k + 1], b[k + 2], v[b[k + 3]], v[b[k + 4]]
    return None


def arg_specs(at, cmd):
    # ((type, min, max, optional), ...) of a command's arguments in order; None if
    # the capability has no such command.
    b = _SPECS
    k = at + 5 + 5 * b[at + 2]
    end = k + b[at + 3]
    while k < end:
        n = k + 2 + 3 * b[k + 1]
        if b[k] == cmd:
            v = _VALS
            return tuple((b[j] & 0x7F, v[b[j + 1]], v[b[j + 2]], b[j] > 0x7F) for j in range(k + 2, n, 3))
        k = n
    return None


def attr_specs(cap):
    # {attr: (type, access, min, max)} of a capability; None if not in the registry.
    at = find(cap)
    if at is None:
        return None
    b = _SPECS
    return {b[k]: attr_spec(at, b[k]) for k in range(at + 5, at + 5 + 5 * b[at + 2], 5)}


def cmd_specs(cap):
    # {cmd: ((type, min, max, optional), ...)} of a capability; None if not in the registry.
    at = find(cap)
    if at is None:
        return None
    b = _SPECS
    d = {}
    k = at + 5 + 5 * b[at + 2]
    end = k + b[at + 3]
    while k < end:
        d[b[k]] = arg_specs(at, b[k])
        k += 2 + 3 * b[k + 1]
    return d


def events(cap):
    # (event, ...) of a capability; None if not in the registry.
    at = find(cap)
    if at is None:
        return None
    k = at + 5 + 5 * _SPECS[at + 2] + _SPECS[at + 3]
    return tuple(_SPECS[k:k + _SPECS[at + 4]])
