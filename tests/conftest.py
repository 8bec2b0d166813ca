import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The dual-runtime tests import their helpers as top-level modules, exactly as
# the MicroPython runner does; vectors are read relative to the repository root.
sys.path.insert(0, str(ROOT / "tests" / "mp"))
sys.path.insert(0, str(ROOT / "tests"))
os.chdir(ROOT)
