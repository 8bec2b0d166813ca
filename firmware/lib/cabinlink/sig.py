# Bluetooth SIG characteristics for attributes (spec 8.6; docs/registry.md,
# "Bluetooth SIG mapping", which records what was verified and against what).
# An encoder takes the CabinLink value, or None while it is not valid (its
# status is not ok), and returns the characteristic's bytes, little-endian,
# clamped to the characteristic's range, the SIG "unknown" value for None.
# Only mappings the registry marks verified are here: no PM2.5 (format not
# confirmed) and no Battery service (0x180F not confirmed).
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

from cabinlink import registry as reg

DEVICE_INFORMATION = const(0x180A)
MANUFACTURER_NAME = const(0x2A29)
MODEL_NUMBER = const(0x2A24)
SERIAL_NUMBER = const(0x2A25)
FIRMWARE_REVISION = const(0x2A26)
HARDWARE_REVISION = const(0x2A27)

ENVIRONMENTAL_SENSING = const(0x181A)
TEMPERATURE = const(0x2A6E)  # sint16, 0.01 degC
HUMIDITY = const(0x2A6F)  # uint16, 0.01 %
ILLUMINANCE = const(0x2AFB)  # uint24, 0.01 lux
CO2_CONCENTRATION = const(0x2B8C)  # uint16, ppm

# Every registry status enum has ok = 0.
STATUS_OK = const(0)


def _le(v, n):
    # v (two's complement for negatives) as n bytes, little-endian.
    b = bytearray(n)
    for i in range(n):
        b[i] = (v >> (8 * i)) & 0xFF
    return bytes(b)


def _int(v, mul, lo, hi, unknown, n):
    if not isinstance(v, int) or isinstance(v, bool):
        return _le(unknown, n)
    v *= mul
    return _le(lo if v < lo else hi if v > hi else v, n)


def temperature(v):
    # centi-degC -> sint16 0.01 degC, -27315..32767, unknown -32768
    return _int(v, 1, -27315, 32767, -32768, 2)


def humidity(v):
    # centi-% -> uint16 0.01 %, 0..10000, unknown 65535
    return _int(v, 1, 0, 10000, 65535, 2)


def co2(v):
    # ppm -> uint16 ppm, 0..65533, unknown 65535
    return _int(v, 1, 0, 65533, 65535, 2)


def illuminance(v):
    # lux -> uint24 0.01 lux, 0..16777214 (saturates above 167772 lux), unknown 16777215
    return _int(v, 100, 0, 16777214, 16777215, 3)


def utf8(v):
    return v.encode() if isinstance(v, str) else bytes(v or b"")


# (capability id, value attribute, status attribute, characteristic, encoder)
_ESS = (
    (reg.CAP_TEMPERATURE, reg.ATTR_TEMPERATURE_VALUE, reg.ATTR_TEMPERATURE_STATUS,
     TEMPERATURE, temperature),
    (reg.CAP_HUMIDITY, reg.ATTR_HUMIDITY_VALUE, reg.ATTR_HUMIDITY_STATUS, HUMIDITY, humidity),
    (reg.CAP_CO2, reg.ATTR_CO2_VALUE, reg.ATTR_CO2_STATUS, CO2_CONCENTRATION, co2),
    (reg.CAP_ILLUMINANCE, reg.ATTR_ILLUMINANCE_VALUE, reg.ATTR_ILLUMINANCE_STATUS,
     ILLUMINANCE, illuminance),
)


def environmental_sensing(caps):
    # The Environmental Sensing service for the capabilities that have a
    # mapping, as a BleLink sig_services entry: (0x181A, [(char, cap, attr,
    # encoder, status attr), ...]); None when no capability maps.
    chars = []
    for c in caps:
        for cap_id, attr, status, char, enc in _ESS:
            if c.id == cap_id and attr in c.values:
                chars.append((char, c, attr, enc, status if status in c.values else None))
    return (ENVIRONMENTAL_SENSING, chars) if chars else None
