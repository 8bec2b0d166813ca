# The log ring: the last lines in RAM, mirrored to the console, with its tail
# persisted (atomically) on warnings and errors and by flush(), so the car can
# read why an accessory rebooted or entered safe mode (device_info.read_log).
from runtime.store import read_json, write_json

_KEEP = 64  # lines in RAM
_PERSIST = 32  # lines written to log.json
_LINE = 120  # characters per line (the registry's read_log limit)


class LogRing:
    def __init__(self, clock, path="log.json"):
        self.clock = clock
        self.path = path
        old = read_json(path, {})
        self.lines = list(old.get("lines", []))[-_KEEP:] if isinstance(old, dict) else []
        self.first = old.get("next", 0) - len(self.lines) if isinstance(old, dict) else 0
        if self.first < 0:
            self.first = 0
        self.dirty = False

    @property
    def next(self):
        # Offset of the line the next call to _add() will write.
        return self.first + len(self.lines)

    def _add(self, level, text):
        line = ("%s %s" % (level, text))[:_LINE]
        print(line)
        self.lines.append(line)
        if len(self.lines) > _KEEP:
            self.lines.pop(0)
            self.first += 1
        self.dirty = True
        return line

    def info(self, text):
        self._add("I", text)

    def warn(self, text):
        self._add("W", text)
        self.flush()

    def error(self, text):
        self._add("E", text)
        self.flush()

    def flush(self):
        if self.dirty:
            try:
                write_json(self.path, {"next": self.next, "lines": self.lines[-_PERSIST:]})
                self.dirty = False
            except OSError as e:
                print("log: cannot persist (%s)" % e)

    def read(self, offset, max_lines=16):
        # -> [next_offset, lines]: lines from `offset` on (older ones are gone).
        start = max(offset, self.first)
        i = start - self.first
        out = self.lines[i:i + max_lines]
        return [start + len(out), out]
