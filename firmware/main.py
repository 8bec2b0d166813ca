# CabinLink accessory firmware: runs at boot (docs/firmware.md).
from runtime import boot

boot.run()
