# Files that survive a power cut: every write goes to "<name>.tmp" first and
# is then renamed over the old file, so a cut leaves the old or the new file,
# never half of one (rename replaces atomically on the ESP32's littlefs/FAT
# and on POSIX).
import json
import os


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT cannot rename over an existing file: remove, then rename. A cut
        # between the two leaves the .tmp, which read_json() recovers.
        os.remove(path)
        os.rename(tmp, path)


def read_json(path, default=None):
    # The file's JSON, else a complete .tmp left by a cut mid-replace, else default.
    for p in (path, path + ".tmp"):
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    return default


def write_json(path, obj):
    write_atomic(path, json.dumps(obj))


class Settings:
    # Values the car wrote to persistent attributes, kept in one JSON file.
    def __init__(self, path="settings.json"):
        self.path = path
        self.values = read_json(path, {})
        if not isinstance(self.values, dict):
            self.values = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        if self.values.get(key) == value:
            return
        self.values[key] = value
        write_json(self.path, self.values)
