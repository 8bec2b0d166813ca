# /config.json: load and validate (docs/firmware.md "config.json"). Every
# problem is reported as "field: reason"; unknown keys are ignored.
from runtime.store import read_json

APPS = ("ambient", "mount", "controller")
BITRATES = (125000, 250000, 500000, 1000000)


class ConfigError(ValueError):
    pass


def _str(errs, obj, key, path, lo=1, hi=32):
    v = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(v, str):
        errs.append("%s: must be a string" % path)
    elif not lo <= len(v.encode()) <= hi:
        errs.append("%s: must be %d..%d bytes" % (path, lo, hi))
    return v


def _bool(errs, obj, key, path, default=None):
    v = obj.get(key, default)
    if v is not True and v is not False:
        errs.append("%s: must be true or false" % path)
    return v


def _obj(errs, obj, key, path, required=True):
    v = obj.get(key) if isinstance(obj, dict) else None
    if v is None and not required and not (isinstance(obj, dict) and key in obj):
        return {}  # absent (null is not absent: it is not an object)
    if not isinstance(v, dict):
        errs.append("%s: must be an object" % path)
        return {}
    return v


def validate(cfg, board_name=None):
    # -> the list of problems (empty when cfg is usable).
    errs = []
    if not isinstance(cfg, dict):
        return ["(top level): must be a JSON object"]
    if cfg.get("version") != 1 or cfg.get("version") is True:  # True == 1 in Python
        errs.append("version: must be 1")
    app = cfg.get("app")
    if app not in APPS:
        errs.append("app: must be one of %s" % ", ".join(APPS))
    board = cfg.get("board")
    if not isinstance(board, str):
        errs.append("board: must be a string")
    elif board_name is not None and board != board_name:
        errs.append("board: is %r but this is a %r board" % (board, board_name))
    ident = _obj(errs, cfg, "identity", "identity")
    for k in ("vendor", "product", "serial", "hardware"):
        _str(errs, ident, k, "identity." + k)
    links = _obj(errs, cfg, "links", "links")
    can = _obj(errs, links, "can", "links.can", False)
    ble = _obj(errs, links, "ble", "links.ble", False)
    can_on = _bool(errs, can, "enabled", "links.can.enabled", False) if can else False
    ble_on = _bool(errs, ble, "enabled", "links.ble.enabled", False) if ble else False
    if can_on is not True and ble_on is not True:
        errs.append("links: enable at least one of can, ble")
    if can_on is True:
        if can.get("bitrate", 500000) not in BITRATES:
            errs.append("links.can.bitrate: must be one of %s" % ", ".join(str(b) for b in BITRATES))
        pa = can.get("preferred_address")
        if pa is not None and (not isinstance(pa, int) or isinstance(pa, bool) or not 0x80 <= pa <= 0xF7):
            errs.append("links.can.preferred_address: must be 128..247 (0x80..0xF7)")
    if ble_on is True:
        _str(errs, ble, "name", "links.ble.name", 1, 20)
        _bool(errs, ble, "bond", "links.ble.bond", False)
    for k in ("keys", "calibration", "app_config"):
        _obj(errs, cfg, k, k, False)
    return errs


def load(path="config.json", board_name=None):
    # -> the validated config; raises ConfigError listing every problem.
    cfg = read_json(path)
    if cfg is None:
        raise ConfigError("%s: missing or not valid JSON" % path)
    errs = validate(cfg, board_name)
    if errs:
        raise ConfigError("; ".join(errs))
    return cfg
