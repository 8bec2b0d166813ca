# The accessory runtime: boots the unit from /config.json and /board.json,
# runs its app and links, guards against crash loops (see docs/firmware.md).


def option(src, where, key, default, lo=None, hi=None):
    # One app_config or calibration value: a bool when lo is None, else an
    # integer lo..hi. A bad one raises ValueError("where.key: reason"), which
    # stops the app; the runtime's safe mode logs the reason.
    v = src.get(key, default)
    if lo is None:
        if v is not True and v is not False:
            raise ValueError("%s.%s: must be true or false" % (where, key))
    elif not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError("%s.%s: must be an integer %d..%d" % (where, key, lo, hi))
    return v


class Context:
    # What an app receives (docs/firmware.md "The app contract").
    def __init__(self, board, settings, config, calibration, log, clock):
        self.board = board
        self.settings = settings
        self.config = config
        self.calibration = calibration
        self.log = log
        self.clock = clock
        self.node = None

    def saved(self, key, spec, default):
        # A value the car wrote earlier (settings key), if it still fits the
        # attribute's spec (type, access, min, max); else default, logged.
        from cabinlink.model import check_value

        v = self.settings.get(key, default)
        if not check_value(spec[0], spec[2], spec[3], v):
            self.log.warn("settings %s: %r is invalid, using %r" % (key, v, default))
            v = default
        return v
