# The accessory runtime: boots the unit from /config.json and /board.json,
# runs its app and links, guards against crash loops (see docs/firmware.md).


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
