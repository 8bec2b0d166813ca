# Crash-loop guard (after ESPHome's safe mode): every boot counts as failed
# until it has run STABLE_MS; SAFE_AFTER failed boots in a row -> safe mode.
from runtime.store import read_json, write_json

SAFE_AFTER = 5
STABLE_MS = 60000


class BootGuard:
    def __init__(self, path="boot.json"):
        self.path = path
        st = read_json(path, {})
        self.failed = st.get("failed_boots", 0) if isinstance(st, dict) else 0
        self.boots = st.get("boots", 0) if isinstance(st, dict) else 0

    def start(self):
        # Count this boot as failed until proven otherwise; -> True for safe mode.
        self.failed += 1
        self.boots += 1
        write_json(self.path, {"failed_boots": self.failed, "boots": self.boots})
        return self.failed >= SAFE_AFTER

    def stable(self):
        # The boot ran long enough: the crash loop, if any, is over.
        if self.failed:
            self.failed = 0
            write_json(self.path, {"failed_boots": 0, "boots": self.boots})
