# CabinLink accessory firmware: the composition root (runs at boot on the board).
# Status: protocol core only. The runtime that validates /config.json, builds
# the board's buses and runs an app with its links lands with the firmware
# issue; until then boot reports what it found and returns to the REPL.
import json


def _load_config(path="/config.json"):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return None
    except ValueError:
        return "invalid"


def main():
    import cabinlink

    cfg = _load_config()
    if cfg is None:
        state = "no /config.json"
    elif cfg == "invalid":
        state = "/config.json is not valid JSON"
    else:
        state = "config for app %r" % cfg.get("app")
    print("CabinLink core %s: %s; accessory runtime not installed yet" % (cabinlink.__version__, state))


main()
