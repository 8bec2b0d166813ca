"""``cabinlink flash``: write a board's MicroPython image with esptool, through its Python API.

Contract of :func:`flash_board` (the command is a thin wrapper, :func:`run`):

1. the board (``boards/<name>.json``) gives the chip, the MicroPython variant, the image's
   flash offset and the flash size;
2. the image is ``--image FILE`` or the newest ``<VARIANT>-<date>-v<version>.bin`` in the
   image cache (``--cache DIR``, else ``$CABINLINK_IMAGE_CACHE``, else
   ``~/.cache/cabinlink/images``); nothing is downloaded - a missing image is an error that
   says which file to fetch from https://micropython.org/download/<VARIANT>/ and where to
   put it. An image whose ESP header names another chip, or that does not fit the board's
   flash at the offset, is refused before the board is touched;
3. the port must exist and not be held by another program (the exclusive lock esptool
   takes, pyserial ``exclusive=True``);
4. esptool connects (``--before``), detects the chip and must find the board's chip
   ("board esp32-s3-devkitc-1 needs an ESP32-S3 but PORT has an ESP32"); it then runs its
   flasher stub (unless ``--no-stub``), switches to ``--baud``, erases the whole flash with
   ``--erase``, writes the image at the board's offset (esptool compares an MD5 of the
   written region with the image after writing, always) and, unless ``--no-verify``,
   verifies the image once more when everything is written (on a mismatch the bytes are read
   back and the first differing address is named);
5. the chip is reset (``--after``). ``soft-reset`` works on every chip here: esptool's stub
   cannot "run user code" on ESP32-family chips, so after a stub session the stub is left
   for the ROM loader (software reset, the chip stays in download mode), the ROM is synced
   again and told to run the app - the same request esptool's ``soft-reset`` sends with
   ``--no-stub``. It is protocol-only, so it also works where there are no DTR/RTS lines
   (a pty, a network bridge).

Every problem the user can fix raises :class:`FlashError` with one message saying what is
wrong and what to do; :func:`run` prints it and returns 1, without a traceback. esptool's
own output is captured (``--verbose`` shows it) and its progress drawn as one bar.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "FlashError", "FlashReport", "Target", "add_arguments", "find_image",
           "flash_board", "image_cache_dir", "load_target", "run", "verify_image"]

CACHE_ENV = "CABINLINK_IMAGE_CACHE"
DEFAULT_CACHE = Path("~/.cache/cabinlink/images")
DOWNLOAD_URL = "https://micropython.org/download/{variant}/"
ROM_BAUD = 115200
BEFORE_CHOICES = ("default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER_CHOICES = ("hard-reset", "soft-reset", "watchdog-reset", "no-reset", "no-reset-stub")
_BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
# IMAGE_CHIP_ID in the extended header of an ESP app/bootloader image (esptool's targets).
_IMAGE_CHIP_IDS = {0: "esp32", 2: "esp32s2", 5: "esp32c3", 9: "esp32s3", 12: "esp32c2",
                   13: "esp32c6", 16: "esp32h2", 18: "esp32p4", 23: "esp32c5"}


class FlashError(Exception):
    """A problem the user can fix: ``str()`` says what is wrong and what to do."""


def chip_display(chip: str) -> str:
    """``esp32s3`` -> ``ESP32-S3`` (esptool's spelling)."""
    if not chip.startswith("esp32"):
        return chip.upper()
    rest = chip[len("esp32"):]
    return "ESP32" + (f"-{rest.upper()}" if rest else "")


def _chip_key(esptool_name: str) -> str:
    """``ESP32-S3`` -> ``esp32s3``."""
    return esptool_name.lower().replace("-", "")


# ---------------------------------------------------------------------------------------
# board and image
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the flasher needs from a board file."""

    board: str
    chip: str  # "esp32", "esp32s3", ...
    variant: str  # MicroPython image variant, e.g. "ESP32_GENERIC_S3"
    offset: int  # where the image goes
    flash_size: int  # bytes


def _known_boards() -> list[str]:
    return sorted(p.stem for p in _BOARDS_DIR.glob("*.json") if "schema" not in p.stem)


def _read_board(name: str) -> dict[str, Any]:
    """The board file as a dict: ``cabinlink_tools.boards.load_board`` (schema-checked) when
    it exists, else the JSON file read directly. Raises FlashError for an unknown board."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name or "") or not (_BOARDS_DIR / f"{name}.json").is_file():
        raise FlashError(f"unknown board {name!r}. Known boards: {', '.join(_known_boards())} "
                         "(pass one of them to --board; see docs/boards.md)")
    try:
        from .boards import load_board
    except ImportError:
        try:
            return json.loads((_BOARDS_DIR / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FlashError(f"boards/{name}.json cannot be read: {e}") from None
    try:
        return load_board(name)
    except ValueError as e:  # boards.BoardError
        raise FlashError(f"board {name!r} cannot be used:\n{e}") from None


def load_target(board: str) -> Target:
    """The flashing facts of ``board``; FlashError when unknown or incomplete."""
    from .sim.rom_bootloader import flash_size_bytes

    b = _read_board(board)
    try:
        mp = b["micropython"]
        return Target(board, b["chip"], mp["variant"], int(str(mp["offset"]), 16),
                      flash_size_bytes(b["flash_size"]))
    except (KeyError, TypeError, ValueError) as e:
        raise FlashError(f"boards/{board}.json lacks what flashing needs (chip, micropython.variant, "
                         f"micropython.offset, flash_size): {e}") from None


def image_cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$CABINLINK_IMAGE_CACHE``, else ``~/.cache/cabinlink/images``."""
    raw = override or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(raw).expanduser()


def _image_sort_key(path: Path, variant: str) -> tuple[str, tuple[int, ...], str]:
    rest = path.name[len(variant) + 1: -len(".bin")]
    date = rest.split("-", 1)[0] if rest[:8].isdigit() else ""
    m = re.search(r"v(\d+(?:\.\d+)*)", rest)
    version = tuple(int(x) for x in m.group(1).split(".")) if m else ()
    return date, version, path.name


def find_image(variant: str, cache: Path) -> Path:
    """The newest ``<variant>-<date>-v<version>.bin`` in ``cache`` (by date, then version).

    Other variants that share the prefix (``ESP32_GENERIC-OTA-...`` for ``ESP32_GENERIC``)
    do not match: the part after the variant must start with a digit or ``v<digit>``.
    Raises FlashError saying exactly what to download, and where to put it."""
    pattern = re.compile(re.escape(variant) + r"-(?:\d|v\d)[^/]*\.bin")
    found = [p for p in cache.glob(f"{variant}-*.bin") if pattern.fullmatch(p.name) and p.is_file()]
    if found:
        return max(found, key=lambda p: _image_sort_key(p, variant))
    url = DOWNLOAD_URL.format(variant=variant)
    raise FlashError(
        f"no MicroPython image for {variant} in {cache}.\n"
        f"Download the latest firmware .bin from {url} (a file named "
        f"{variant}-<date>-v<version>.bin, e.g. {variant}-20250415-v1.25.0.bin) and save it in "
        f"{cache}/ (or point {CACHE_ENV} or --cache at the directory that holds it), "
        "or pass the file with --image FILE.")


def _load_image(path: Path, target: Target) -> bytes:
    if not path.exists():
        raise FlashError(f"image {path} does not exist: check the path given to --image")
    if not path.is_file():
        raise FlashError(f"image {path} is not a file: pass the firmware .bin to --image")
    data = path.read_bytes()
    if not data:
        raise FlashError(f"image {path} is empty: download it again from "
                         f"{DOWNLOAD_URL.format(variant=target.variant)}")
    end = target.offset + len(data)
    if end > target.flash_size:
        raise FlashError(f"image {path} ({len(data)} bytes) does not fit board {target.board}'s "
                         f"{target.flash_size // (1024 * 1024)} MB flash at {target.offset:#x}: "
                         f"is it the {target.variant} image?")
    if len(data) >= 24 and data[0] == 0xE9:
        chip_id = int.from_bytes(data[12:14], "little")
        image_chip = _IMAGE_CHIP_IDS.get(chip_id)
        if image_chip is not None and image_chip != target.chip:
            raise FlashError(
                f"image {path.name} is built for an {chip_display(image_chip)}, but board "
                f"{target.board} has an {chip_display(target.chip)}: use the {target.variant} image "
                f"from {DOWNLOAD_URL.format(variant=target.variant)}")
    return data


# ---------------------------------------------------------------------------------------
# the port
# ---------------------------------------------------------------------------------------


def check_port(port: str) -> bool:
    """FlashError unless ``port`` exists and can be opened exclusively right now; returns
    whether it has modem-control lines (DTR/RTS), which esptool's resets need.

    URLs (``rfc2217://``, ``socket://``) are left to esptool (True)."""
    if "://" in port:
        return True
    if not os.path.exists(port):
        raise FlashError(f"port {port} does not exist. Is the board plugged in (and powered)? "
                         "`cabinlink doctor` lists the serial ports it can see; pass one to --port.")
    import serial

    s = serial.Serial()
    s.port = port
    s.exclusive = True
    try:
        s.open()
    except (serial.SerialException, OSError) as e:
        code = e.errno if isinstance(e.errno, int) else None
        text = str(e)
        if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text or "busy" in text.lower():
            raise FlashError(f"port {port} is busy: another program holds it (a serial monitor, "
                             "mpremote, `cabinlink monitor`, an IDE...). Close it and run the command "
                             "again.") from None
        if code == errno.EACCES or "Permission denied" in text:
            raise FlashError(f"no permission to open {port}: add yourself to the group that owns it "
                             "(on most Linux systems `sudo usermod -aG dialout $USER`, then log in "
                             "again).") from None
        if code == errno.ENOENT:
            raise FlashError(f"port {port} does not exist (any more): is the board plugged in? "
                             "`cabinlink doctor` lists the serial ports.") from None
        raise FlashError(f"cannot open port {port}: {text}") from None
    try:
        import fcntl
        import termios

        fcntl.ioctl(s.fileno(), termios.TIOCMGET, b"\0\0\0\0")
        return True
    except (OSError, AttributeError, ImportError):
        return False  # a pty or a USB-CDC port without modem control
    finally:
        s.close()


# ---------------------------------------------------------------------------------------
# esptool's output: captured, progress drawn as one bar
# ---------------------------------------------------------------------------------------


class _Ui:
    """One progress bar (rich) on stderr for the whole job, plus esptool's log in memory."""

    def __init__(self, verbose: bool, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.verbose = verbose
        self.quiet = quiet
        self.log: list[str] = []
        self.warnings: list[str] = []
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Ui:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn)

            self._progress = Progress(TextColumn("{task.description:<28}"), BarColumn(),
                                      TaskProgressColumn(), TimeElapsedColumn(),
                                      console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("connecting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def phase(self, name: str, total: float | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=name, total=total, completed=0)

    def fraction(self, done: int, total: int) -> None:
        if self._progress is not None and total > 0:
            self._progress.update(self._task, total=total, completed=done)

    def line(self, text: str, warning: bool = False) -> None:
        text = text.rstrip()
        if not text:
            return
        self.log.append(text)
        if warning:
            self.warnings.append(text)
        if self.verbose:
            (self._progress.console if self._progress is not None else self.console).print(
                text, markup=False)


def _make_logger(ui: _Ui) -> Any:
    from esp_pylib.logger import EspLogBase

    def text(args: tuple[Any, ...]) -> str:
        return re.sub(r"\[/?[a-z][^\]]*\]", "", " ".join(str(a) for a in args))  # rich markup

    class EsptoolToUi(EspLogBase):
        """esptool's log -> :class:`_Ui` (lines kept, progress to the bar)."""

        def print(self, *args: Any, **kwargs: Any) -> None:
            ui.line(text(args))

        def note(self, *args: Any) -> None:
            ui.line("note: " + text(args))

        def hint(self, *args: Any) -> None:
            ui.line("hint: " + text(args))

        def debug(self, *args: Any) -> None:
            pass

        def warn(self, *args: Any, suggestion: str | None = None) -> None:
            ui.line("warning: " + text(args), warning=True)

        def err(self, *args: Any, suggestion: str | None = None) -> None:
            ui.line("error: " + text(args))

        warning = warn
        error = err

        def set_verbosity(self, mode: int | str) -> None:
            pass

        def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "",
                         bar_length: int = 30) -> None:
            ui.fraction(cur_iter, total_iters)

    return EsptoolToUi()


@contextlib.contextmanager
def _esptool_logging(ui: _Ui) -> Iterator[None]:
    """esptool's log goes to ``ui`` meanwhile. esptool's reset strategies warn through a
    once-per-process printer bound at import to its default logger: it is swapped for one
    bound to ours for the duration (and put back)."""
    from esp_pylib.logger import EspLog

    import esptool.logger  # noqa: F401  (installs esptool's logger before we replace it)
    import esptool.reset
    from esptool.util import PrintOnce

    previous = EspLog.instance
    logger = EspLog.instance = _make_logger(ui)
    strategy = getattr(esptool.reset, "ResetStrategy", None)
    saved_once = getattr(strategy, "print_once", None)
    if saved_once is not None:
        strategy.print_once = PrintOnce(logger.warn)  # type: ignore[union-attr]
    try:
        yield
    finally:
        EspLog.instance = previous
        if saved_once is not None:
            strategy.print_once = saved_once  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------
# flashing
# ---------------------------------------------------------------------------------------


@dataclass
class FlashReport:
    """What :func:`flash_board` did."""

    chip: str = ""  # esptool's description, e.g. "ESP32-D0WD-V3 (revision v3.1)"
    mac: str = ""
    image: str = ""
    size: int = 0
    offset: int = 0
    erased: bool = False
    verified: bool = False
    reset: str = ""  # what --after did, for the summary
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _connect_error(port: str, err: Exception, has_lines: bool, before: str) -> FlashError:
    msg = str(err)
    if "busy or doesn't exist" in msg or "Could not open" in msg:
        return FlashError(f"esptool could not open {port}: it is busy (another program holds it) "
                          "or gone. Close other serial programs, check the cable, and retry.")
    why = ""
    if before in ("default-reset", "usb-reset") and not has_lines:
        why = (f" {port} has no DTR/RTS lines (a USB-CDC port, a pty or a bridge), so it could not "
               "be reset into the bootloader automatically.")
    return FlashError(
        f"no ESP bootloader answered on {port}.{why} Put the board in download mode by hand: hold "
        "BOOT (IO0), press and release RESET (EN), release BOOT, then run the command again "
        "(add --before no-reset). If it still fails, check that --port is the board "
        f"(`cabinlink doctor` lists the ports) and try a data-capable USB cable. (esptool: "
        f"{msg.splitlines()[0] if msg else type(err).__name__})")


def _write_error(err: Exception, target: Target, port: str) -> FlashError:
    msg = str(err)
    first = msg.splitlines()[0] if msg else type(err).__name__
    if "MD5 of file does not match" in msg or "written flash region is empty" in msg \
            or "Flash write error" in msg or "Verification failed" in msg:
        return FlashError(
            f"verification failed: the flash at {target.offset:#x} does not read back as the image "
            f"({first}). The flash may be worn or the link unreliable: run again with --erase and a "
            "lower --baud (e.g. 115200), try another USB cable; if it persists the module's flash "
            "is faulty.")
    if "will not fit" in msg:
        return FlashError(f"the image does not fit the flash of the board on {port} ({first}): "
                          f"is {target.board} the right --board?")
    if "is not an" in msg and "image" in msg:
        return FlashError(f"esptool refused the image: {first} Use the {target.variant} image "
                          f"from {DOWNLOAD_URL.format(variant=target.variant)}.")
    if "No serial data" in msg or "Packet content transfer stopped" in msg or "Serial data stream" in msg:
        return FlashError(f"the board on {port} stopped answering ({first}): check the cable and "
                          "power, lower --baud, and run the command again.")
    return FlashError(f"esptool failed: {first} (run again with --verbose to see esptool's log)")


def verify_image(esp: Any, target: Target, data: bytes) -> None:
    """FlashError unless the flash of the connected ``esp`` holds ``data`` at the target's
    offset (esptool's MD5 comparison; on a mismatch, with the stub, the region is read back
    to name the first differing address)."""
    from esptool import cmds
    from esptool.util import FatalError

    try:
        cmds.verify_flash(esp, [(target.offset, data)])
    except FatalError:
        where = ""
        if esp.IS_STUB:  # the ROM reads 64 bytes per request: too slow to read an image back
            back = esp.read_flash(target.offset, len(data))
            bad = [i for i in range(len(data)) if back[i] != data[i]]
            if bad:
                where = f"; {len(bad)} byte(s) differ, the first at {target.offset + bad[0]:#x}"
        raise FlashError(
            f"verification failed: the flash at {target.offset:#x} does not hold the image{where}. "
            "Run again with --erase and a lower --baud (e.g. 115200); if it persists the "
            "module's flash is faulty.") from None


def _erase_all(esp: Any, cmds: Any, target: Target) -> None:
    if esp.IS_STUB:
        cmds.erase_flash(esp)
    else:  # the ROM has no erase command: it erases what a FLASH_BEGIN announces
        esp.flash_begin(target.flash_size, 0, logging=False)


def _reset(esp: Any, after: str, port: str, has_lines: bool, report: FlashReport) -> None:
    from esptool import cmds
    from esptool.targets import CHIP_DEFS

    if after in ("no-reset", "no-reset-stub"):
        if after == "no-reset" and esp.IS_STUB:
            cmds.reset_chip(esp, "no-reset")
        report.reset = "left in download mode"
        return
    if after == "soft-reset" and esp.IS_STUB:
        cmds.reset_chip(esp, "no-reset")  # stub -> ROM loader (software reset, still in download mode)
        rom = CHIP_DEFS[_chip_key(esp.CHIP_NAME)](esp._port, ROM_BAUD)
        rom.connect("no-reset", 3, warnings=False)
        cmds.reset_chip(rom, "soft-reset")  # the ROM runs the app
        report.reset = "app started (soft reset)"
        return
    cmds.reset_chip(esp, after)
    by_lines = after == "hard-reset" or not getattr(esp, "WATCHDOG_RESET_SUPPORTED", False)
    if by_lines and not has_lines:
        report.reset = "not reset"
        report.notes.append(f"{port} has no RTS line, so the board was not reset: press its RESET "
                            "(EN) button, or use --after soft-reset next time.")
    else:
        report.reset = f"reset ({after})"


def flash_board(target: Target, port: str, image: Path, *, erase: bool = False,
                baud: int = 460800, verify: bool = True, before: str = "default-reset",
                after: str = "hard-reset", no_stub: bool = False, connect_attempts: int = 7,
                verbose: bool = False, quiet: bool = False) -> FlashReport:
    """Flash ``image`` to the board ``target`` on ``port`` (steps in the module docstring).

    Raises FlashError for anything the user can fix; returns what was done."""
    if before not in BEFORE_CHOICES:
        raise FlashError(f"--before must be one of {', '.join(BEFORE_CHOICES)}")
    if after not in AFTER_CHOICES:
        raise FlashError(f"--after must be one of {', '.join(AFTER_CHOICES)}")
    data = _load_image(image, target)
    has_lines = check_port(port)
    t0 = time.monotonic()
    report = FlashReport(image=str(image), size=len(data), offset=target.offset, erased=erase)

    import serial
    from esptool import cmds
    from esptool.util import FatalError

    with _Ui(verbose, quiet) as ui, _esptool_logging(ui):
        try:
            esp = cmds.detect_chip(port, ROM_BAUD, before, connect_attempts=connect_attempts)
        except (FatalError, serial.SerialException, OSError) as e:
            raise _connect_error(port, e, has_lines, before) from None
        try:
            found = _chip_key(esp.CHIP_NAME)
            if found != target.chip:
                raise FlashError(f"board {target.board} needs an {chip_display(target.chip)} but {port} "
                                 f"has an {esp.CHIP_NAME}: check --board (and --port)")
            try:
                report.chip = esp.get_chip_description()
                report.mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            except (FatalError, TypeError, KeyError):
                report.chip = esp.CHIP_NAME
            if not no_stub:
                ui.phase("starting flasher stub")
                esp = cmds.run_stub(esp)
            if baud != ROM_BAUD:
                esp.change_baud(baud)
            cmds.attach_flash(esp)
            if erase:
                ui.phase("erasing flash")
                _erase_all(esp, cmds, target)
            ui.phase(f"writing {target.offset:#x}", total=len(data))
            try:
                cmds.write_flash(esp, [(target.offset, data)])
            except FatalError as e:
                raise _write_error(e, target, port) from None
            if verify:
                ui.phase("verifying")
                verify_image(esp, target, data)
                report.verified = True
            ui.phase("resetting")
            try:
                _reset(esp, after, port, has_lines, report)
            except (FatalError, serial.SerialException, OSError) as e:
                raise FlashError(f"the image is written{' and verified' if verify else ''}, but "
                                 f"resetting the board ({after}) failed: {str(e).splitlines()[0]}. "
                                 "Press its RESET (EN) button to start MicroPython.") from None
        except FlashError:
            raise
        except (FatalError, serial.SerialException, OSError) as e:
            raise _write_error(e, target, port) from None
        finally:
            with contextlib.suppress(Exception):
                esp._port.close()
    report.seconds = time.monotonic() - t0
    return report


# ---------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------

HELP = "write the board's MicroPython image with esptool (detect chip, erase, write, verify)"
DESCRIPTION = (
    "Writes the MicroPython image of --board to the chip on --port with esptool's Python API: "
    "checks the connected chip is the board's, optionally erases the whole flash, writes the "
    "image at the board's offset and verifies it, then resets the board. The image is --image "
    "FILE or the newest <VARIANT>-<date>-v<version>.bin in the image cache (--cache, "
    f"${CACHE_ENV}, default ~/.cache/cabinlink/images); when it is missing the command says "
    "which file to download from micropython.org and where to put it. See docs/tools/flash.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``cabinlink flash``."""
    p.add_argument("--board", required=True, help="board id, e.g. esp32-devkitc (see boards/)")
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--image", metavar="FILE", help="the MicroPython .bin to write (default: from the cache)")
    p.add_argument("--cache", metavar="DIR", help=f"image cache directory (default ${CACHE_ENV} or "
                                                  "~/.cache/cabinlink/images)")
    p.add_argument("--erase", action="store_true",
                   help="erase the whole flash first (also wipes the board's files and config)")
    p.add_argument("--baud", type=int, default=460800,
                   help="baud rate for the transfer (default 460800; connects at 115200)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the final verification pass (esptool still checks each write's MD5)")
    p.add_argument("--before", choices=BEFORE_CHOICES, default="default-reset",
                   help="how esptool gets the chip into its bootloader (default: default-reset, "
                        "via DTR/RTS)")
    p.add_argument("--after", choices=AFTER_CHOICES, default="hard-reset",
                   help="what happens after flashing (default: hard-reset via RTS; soft-reset "
                        "runs the app over the protocol alone)")
    p.add_argument("--no-stub", action="store_true",
                   help="talk to the ROM loader only (slower; for chips that refuse the stub)")
    p.add_argument("--connect-attempts", type=int, default=7, metavar="N",
                   help="connection attempts before giving up (default 7, as esptool)")
    p.add_argument("-v", "--verbose", action="store_true", help="show esptool's log")


def run(args: argparse.Namespace) -> int:
    """``cabinlink flash``: 0 on success, 1 with one message on stderr otherwise."""
    try:
        target = load_target(args.board)
        if args.image:
            image = Path(args.image).expanduser()
        else:
            image = find_image(target.variant, image_cache_dir(args.cache))
        report = flash_board(target, args.port, image, erase=args.erase, baud=args.baud,
                             verify=args.verify, before=args.before, after=args.after,
                             no_stub=args.no_stub, connect_attempts=args.connect_attempts,
                             verbose=args.verbose)
    except FlashError as e:
        print(f"cabinlink flash: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cabinlink flash: interrupted; the board may hold a partial image: run the command "
              "again", file=sys.stderr)
        return 130
    kb = report.size / 1024
    steps = ["erased, " if report.erased else "", "written", ", verified" if report.verified else ""]
    print(f"{report.chip}" + (f", MAC {report.mac}" if report.mac else ""))
    print(f"{Path(report.image).name} ({kb:.0f} KiB) {''.join(steps)} at {report.offset:#x} on "
          f"{args.port} in {report.seconds:.1f} s; board {report.reset}.")
    for note in report.notes:
        print(f"note: {note}")
    return 0
