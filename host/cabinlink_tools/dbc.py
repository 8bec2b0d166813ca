"""``cabinlink dbc``: the CAN side of CabinLink (spec section 7) as a DBC file, built with cantools.

A DBC describes fixed bit fields at fixed positions of frames with known identifiers.
CabinLink frames are J1939-style 29-bit identifiers (spec 7.2) whose low bytes carry the
target and source addresses, and whose payloads are ISO-TP frames carrying CBOR messages.
What a DBC can say about them, and what this export says:

* **Address Claimed / Cannot Claim** (PGN 0xEE00, ``0x18EEFF<SA>``): fully; the 8-byte
  NAME of spec 7.3 is a set of little-endian bit fields.
* **Request** (PGN 0xEA00, ``0x18EA<DA><SA>``): fully; 3 bytes, the requested PGN.
* **HEARTBEAT** (``0x18DBFF<SA>``): fully for v0.1. The ISO-TP single-frame PCI byte is
  the SF_DL (5, 6 or 7), and because the CBOR encoding of ``[1, uptime, health, mode]``
  uses the shortest form, the SF_DL alone fixes where each field sits (uptime 0..23 is
  one byte, 24..255 two, 256..65535 three; health and mode are 0..3, one byte each). The
  PCI byte is therefore the multiplexer.
* **ISO-TP physical frames** (``0x18DA<TA><SA>``) and **event-priority frames**
  (``0x0CDA<TA><SA>``): the PCI (frame type, SF_DL, FF_DL, sequence number, flow status,
  BS, STmin), multiplexed by frame type, and the bytes whose position CBOR fixes: the array
  header and the message type of a single frame or of a first frame. On the event channel
  every message is an EVENT, so its single frames also show the slot and event id (valid
  when below 24, the CBOR one-byte range). What a DBC cannot express: messages longer than
  one frame (reassembly), CBOR items of variable length (tids, values, strings), and the
  meaning of a REPORT's value, which depends on the slot's capability learnt from DESCRIBE.
  A CabinLink-aware decoder (``cabinlink sim``'s monitor) is needed for those.

Identifiers. A DBC message has one identifier, CabinLink uses one identifier *pattern* per
kind of frame, with the addresses in the low 16 bits. Two exports:

* default (*patterns*): one message per pattern, with placeholder addresses. Tools must
  match on the identifier without its address bytes: ``python -m cantools decode -m
  0x1FFF0000`` (``FRAME_ID_MASK``: priority, EDP, DP and PF), cantools'
  ``load_file(..., frame_id_mask=0x1FFF0000)``; tools that match J1939 parameter groups by
  PGN (SavvyCAN with the ``isj1939dbc`` attribute set here, Vector tools through
  ``ProtocolType`` J1939 / ``VFrameFormat`` J1939PG) do the same by themselves, except that
  they cannot tell priority 3 from priority 6, so event frames decode as the ISO-TP message
  (the layout is the same).
* ``addresses``: concrete identifiers for the given accessory addresses and the car's, for
  tools that only match identifiers exactly.

Public API: :func:`build_database`, :func:`dbc_text`, :func:`run` (the CLI handler).
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from cantools.database import conversion
from cantools.database.can import Bus, Database, Message, Node, Signal
from cantools.database.can.formats.dbc.dbc_attribute import DbcAttribute
from cantools.database.can.formats.dbc.dbc_attribute_definition import DbcAttributeDefinition
from cantools.database.can.formats.dbc.dbc_loader import ATTRIBUTE_DEFINITION_VFRAMEFORMAT
from cantools.database.can.formats.dbc.dbc_specifics import DbcSpecifics

BITRATE = 500_000
CAR_ADDRESS = 0x00
FRAME_ID_MASK = 0x1FFF0000  # priority, EDP, DP, PF: what identifies a pattern
GLOBAL = 0xFF
NULL = 0xFE
ACC_FIRST, ACC_LAST = 0x80, 0xF7

PF_ISOTP_PHYS = 0xDA
PF_ISOTP_FUNC = 0xDB
PF_REQUEST = 0xEA
PF_CLAIM = 0xEE
PRIO_NORMAL = 6
PRIO_EVENT = 3

# Value tables (spec sections 5, 7.4, 7.3, registry device classes).
MESSAGE_TYPES = {1: "HEARTBEAT", 2: "HELLO", 3: "DESCRIBE", 4: "READ", 5: "WRITE", 6: "SUBSCRIBE",
                 7: "UNSUBSCRIBE", 8: "INVOKE", 9: "RESULT", 10: "REPORT", 11: "EVENT"}
PCI_TYPES = {0: "single_frame", 1: "first_frame", 2: "consecutive_frame", 3: "flow_control"}
FLOW_STATUS = {0: "CTS", 1: "WAIT", 2: "OVFLW"}
HEALTH = {0: "nominal", 1: "advisory", 2: "caution", 3: "warning"}
MODE = {0: "operational", 1: "initializing", 2: "safe", 3: "update"}
FUNCTIONS = {0xC0: "accessory_other", 0xC1: "accessory_phone_mount", 0xC2: "accessory_ambient",
             0xC3: "accessory_controller"}
PGNS = {0xEE00: "AddressClaimed"}


def can_id(prio: int, pf: int, ps: int, sa: int) -> int:
    """The 29-bit identifier of spec 7.2 (EDP = DP = 0)."""
    return (prio << 26) | (pf << 16) | (ps << 8) | sa


def _sig(name: str, start: int, length: int, *, big_endian: bool = False,
         choices: dict[int, str] | None = None, comment: str | None = None, unit: str | None = None,
         mux_ids: Sequence[int] | None = None, mux_signal: str | None = None,
         is_multiplexer: bool = False) -> Signal:
    """One unsigned integer signal. ``start`` is the DBC start bit: the least significant
    bit for little-endian signals, the most significant (sawtooth numbering) for big-endian."""
    return Signal(name, start, length, byte_order="big_endian" if big_endian else "little_endian",
                  conversion=conversion.BaseConversion.factory(choices=choices) if choices else None,
                  minimum=0, maximum=(1 << length) - 1, unit=unit, comment=comment,
                  is_multiplexer=is_multiplexer,
                  multiplexer_ids=list(mux_ids) if mux_ids is not None else None,
                  multiplexer_signal=mux_signal)


def _byte(name: str, index: int, **kw: object) -> Signal:
    return _sig(name, 8 * index, 8, **kw)  # type: ignore[arg-type]


# ---- message layouts --------------------------------------------------------------------

def _claim_signals() -> list[Signal]:
    # The NAME is 64 bits little-endian: NAME bit n is DBC bit n.
    return [
        _sig("IdentityNumber", 0, 21, comment="NAME bits 0-20: from the unit's unique hardware id"),
        _sig("ManufacturerCode", 21, 11, comment="NAME bits 21-31: SAE J1939 manufacturer code, 0 if none"),
        _sig("EcuInstance", 32, 3, comment="NAME bits 32-34: 0 in CabinLink"),
        _sig("FunctionInstance", 35, 5, comment="NAME bits 35-39: 0 in CabinLink"),
        _sig("Function", 40, 8, choices=FUNCTIONS,
             comment="NAME bits 40-47: accessory 0xC0 + device class; a car uses its maker's function"),
        _sig("Reserved", 48, 1, comment="NAME bit 48: 0"),
        _sig("VehicleSystem", 49, 7, comment="NAME bits 49-55: 0x7F in CabinLink"),
        _sig("VehicleSystemInstance", 56, 4, comment="NAME bits 56-59: 0"),
        _sig("IndustryGroup", 60, 3, comment="NAME bits 60-62: 0"),
        _sig("ArbitraryAddressCapable", 63, 1, choices={0: "no_car", 1: "yes_accessory"},
             comment="NAME bit 63: 1 for an accessory, 0 for a car"),
    ]


def _request_signals() -> list[Signal]:
    return [_sig("RequestedPGN", 0, 24, choices=PGNS,
                 comment="little-endian PGN; CabinLink requests only Address Claimed (00 EE 00)")]


def _heartbeat_signals() -> list[Signal]:
    mux = "PCI"
    sigs = [
        _byte(mux, 0, is_multiplexer=True, choices={5: "SF_DL_5", 6: "SF_DL_6", 7: "SF_DL_7"},
              comment="ISO-TP single frame PCI = SF_DL, the CBOR length (5..7); it fixes where the "
                      "fields below sit"),
        _byte("CborArrayHeader", 1, comment="0x84: CBOR array of 4 items"),
        _byte("MessageType", 2, choices=MESSAGE_TYPES, comment="1 = HEARTBEAT"),
    ]
    for dl, (up_start, up_len, up_big, h) in {5: (24, 8, False, 4), 6: (32, 8, False, 5),
                                              7: (39, 16, True, 6)}.items():
        if dl > 5:
            sigs.append(_byte(f"UptimeCborHead_{dl}", 3, mux_ids=[dl], mux_signal=mux,
                              comment="0x18: uint8 follows" if dl == 6 else "0x19: uint16 (big-endian) follows"))
        sigs += [
            _sig(f"Uptime_{dl}", up_start, up_len, big_endian=up_big, unit="s", mux_ids=[dl], mux_signal=mux,
                 comment="whole seconds since start, modulo 65536 "
                         + {5: "(0..23: CBOR puts it in the head byte)", 6: "(24..255)", 7: "(256..65535)"}[dl]),
            _byte(f"Health_{dl}", h, choices=HEALTH, mux_ids=[dl], mux_signal=mux),
            _byte(f"Mode_{dl}", h + 1, choices=MODE, mux_ids=[dl], mux_signal=mux),
        ]
    return sigs


def _isotp_signals(event_channel: bool) -> list[Signal]:
    mux = "PciType"
    sigs = [
        _sig(mux, 4, 4, is_multiplexer=True, choices=PCI_TYPES,
             comment="high nibble of byte 0: ISO-TP frame type (spec 7.4)"),
        # single frame
        _sig("SF_DL", 0, 4, mux_ids=[0], mux_signal=mux, unit="B", comment="message length, 1..7"),
        _sig("SF_CborItems", 8, 5, mux_ids=[0], mux_signal=mux,
             comment="low 5 bits of the CBOR array header 0x8n: number of elements"),
        _sig("SF_CborMajor", 13, 3, mux_ids=[0], mux_signal=mux, choices={4: "array"},
             comment="CBOR major type of the message: 4 (array)"),
        _byte("SF_MessageType", 2, mux_ids=[0], mux_signal=mux, choices=MESSAGE_TYPES,
              comment="element 0 of the message"),
        # first frame
        _sig("FF_DL", 3, 12, big_endian=True, mux_ids=[1], mux_signal=mux, unit="B",
             comment="message length, 8..4095 (12 bits)"),
        _sig("FF_CborItems", 16, 5, mux_ids=[1], mux_signal=mux,
             comment="low 5 bits of the CBOR array header"),
        _sig("FF_CborMajor", 21, 3, mux_ids=[1], mux_signal=mux, choices={4: "array"}),
        _byte("FF_MessageType", 3, mux_ids=[1], mux_signal=mux, choices=MESSAGE_TYPES,
              comment="element 0 of the message"),
        # consecutive frame
        _sig("CF_SN", 0, 4, mux_ids=[2], mux_signal=mux,
             comment="sequence number: 1 for the first CF, 15 wraps to 0"),
        # flow control
        _sig("FC_FlowStatus", 0, 4, mux_ids=[3], mux_signal=mux, choices=FLOW_STATUS),
        _byte("FC_BlockSize", 1, mux_ids=[3], mux_signal=mux, comment="0: no further FC"),
        _byte("FC_STmin", 2, mux_ids=[3], mux_signal=mux,
              comment="0x00-0x7F: ms; 0xF1-0xF9: 100-900 us; other values: treat as 127 ms"),
    ]
    if event_channel:
        sigs += [
            _byte("SF_Slot", 3, mux_ids=[0], mux_signal=mux,
                  comment="EVENT slot (valid when < 24: CBOR keeps 0..23 in one byte)"),
            _byte("SF_Event", 4, mux_ids=[0], mux_signal=mux,
                  comment="EVENT id within the capability (valid when < 24)"),
            _byte("SF_DataHead", 5, mux_ids=[0], mux_signal=mux,
                  comment="first CBOR byte of the event data when SF_DL > 4: 0x00-0x17 is the "
                          "value 0..23, 0x20-0x37 is -1..-24, anything else needs a CBOR decoder"),
        ]
    return sigs


# ---- database ---------------------------------------------------------------------------

_COMMENT_PATTERN = ("Pattern message: matches {what} whatever the addresses. Load with frame id "
                    "mask 0x1FFF0000 (python -m cantools decode -m 0x1FFF0000), or in a tool that "
                    "matches J1939 PGNs. ")


def _message(prio_pf: str, frame_id: int, name: str, comment: str, *, senders: list[str],
              length: int = 8, cycle_ms: int | None = None, j1939: bool) -> Message:
    return Message(frame_id=frame_id, name=name, length=length, signals=_LAYOUTS[prio_pf](),
                   comment=comment, senders=senders, cycle_time=cycle_ms, is_extended_frame=True,
                   protocol="j1939" if j1939 else None, strict=True)


_LAYOUTS = {
    "claim": _claim_signals,
    "request": _request_signals,
    "heartbeat": _heartbeat_signals,
    "isotp": lambda: _isotp_signals(False),
    "event": lambda: _isotp_signals(True),
}


def _check_address(a: int, what: str) -> None:
    if not 0 <= a <= 0xFD:
        raise ValueError(f"{what} 0x{a:02X} is not a node address (0x00-0xFD)")


def build_database(addresses: Sequence[int] = (), car: int = CAR_ADDRESS) -> Database:
    """The CabinLink DBC as a cantools Database.

    With no ``addresses``: one *pattern* message per identifier pattern (placeholder
    addresses; match with :data:`FRAME_ID_MASK` or by J1939 PGN). With ``addresses``
    (accessory addresses, usually 0x80-0xF7): concrete messages for each accessory talking
    to the car at ``car``, plus the car's own frames. Raises ValueError for an address that
    is not a node address."""
    _check_address(car, "car address")
    for a in addresses:
        _check_address(a, "address")
        if a == car:
            raise ValueError(f"address 0x{a:02X} is the car's address")
    msgs: list[Message] = []
    pattern = not addresses
    if pattern:
        c = car
        msgs += [
            _message("claim", can_id(PRIO_NORMAL, PF_CLAIM, GLOBAL, c), "CL_AddressClaim",
                      _COMMENT_PATTERN.format(what="0x18EEFFxx") + "Address Claimed (PGN 0xEE00) from "
                      "source address xx (0x80-0xF7 accessories, 0x00-0x0F cars), or Cannot Claim from "
                      "0xFE; data: the sender's J1939 NAME (spec 7.3).", senders=["Car", "Accessory"],
                      j1939=True),
            _message("request", can_id(PRIO_NORMAL, PF_REQUEST, GLOBAL, c), "CL_Request",
                      _COMMENT_PATTERN.format(what="0x18EAddss") + "Request (PGN 0xEA00) to dd "
                      "(0xFF: all) from ss; 3 bytes (spec 7.3).", senders=["Car", "Accessory"],
                      length=3, j1939=True),
            _message("heartbeat", can_id(PRIO_NORMAL, PF_ISOTP_FUNC, GLOBAL, c), "CL_Heartbeat",
                      _COMMENT_PATTERN.format(what="0x18DBFFxx") + "HEARTBEAT of node xx, once a "
                      "second: an ISO-TP single frame on the functional id with the CBOR "
                      "[1, uptime, health, mode], padded with 0xCC (spec 5.10, 7.6).",
                      senders=["Car", "Accessory"], cycle_ms=1000, j1939=True),
            _message("isotp", can_id(PRIO_NORMAL, PF_ISOTP_PHYS, c, c), "CL_IsoTp",
                      _COMMENT_PATTERN.format(what="0x18DAttss") + "ISO-TP frame from ss to tt "
                      "carrying one CBOR message (any type but EVENT); FC frames travel the other "
                      "way on 0x18DAsstt. Multi-frame messages need reassembly, which a DBC "
                      "cannot describe (spec 7.4).", senders=["Car", "Accessory"], j1939=True),
            _message("event", can_id(PRIO_EVENT, PF_ISOTP_PHYS, c, c), "CL_IsoTpEvent",
                      _COMMENT_PATTERN.format(what="0x0CDAttss") + "Priority-3 ISO-TP frame: EVENT "
                      "messages from accessory ss to car tt, and the car's FC frames for them on "
                      "0x0CDAsstt (spec 7.5). Tools that match by PGN only cannot tell it from "
                      "CL_IsoTp (same PGN 0xDA00, same layout).", senders=["Car", "Accessory"],
                      j1939=True),
        ]
    else:
        c = car
        msgs += [
            _message("claim", can_id(PRIO_NORMAL, PF_CLAIM, GLOBAL, c), f"CL_Claim_{c:02X}",
                      f"Address Claimed by the car at 0x{c:02X}.", senders=["Car"], j1939=False),
            _message("claim", can_id(PRIO_NORMAL, PF_CLAIM, GLOBAL, NULL), "CL_CannotClaim",
                      "Cannot Claim (source address 0xFE): a node that found no free address.",
                      senders=["Car", "Accessory"], j1939=False),
            _message("heartbeat", can_id(PRIO_NORMAL, PF_ISOTP_FUNC, GLOBAL, c), f"CL_Heartbeat_{c:02X}",
                      f"HEARTBEAT of the car at 0x{c:02X}.", senders=["Car"], cycle_ms=1000, j1939=False),
            _message("request", can_id(PRIO_NORMAL, PF_REQUEST, GLOBAL, c), f"CL_Request_{c:02X}_FF",
                      f"Request for Address Claimed from the car at 0x{c:02X} to all nodes.",
                      senders=["Car"], length=3, j1939=False),
        ]
        for a in sorted(set(addresses)):
            msgs += [
                _message("claim", can_id(PRIO_NORMAL, PF_CLAIM, GLOBAL, a), f"CL_Claim_{a:02X}",
                          f"Address Claimed by the node at 0x{a:02X}.", senders=["Accessory"], j1939=False),
                _message("heartbeat", can_id(PRIO_NORMAL, PF_ISOTP_FUNC, GLOBAL, a), f"CL_Heartbeat_{a:02X}",
                          f"HEARTBEAT of the node at 0x{a:02X}.", senders=["Accessory"], cycle_ms=1000,
                          j1939=False),
                _message("request", can_id(PRIO_NORMAL, PF_REQUEST, a, c), f"CL_Request_{c:02X}_{a:02X}",
                          f"Request for Address Claimed from the car to 0x{a:02X}.", senders=["Car"],
                          length=3, j1939=False),
                _message("isotp", can_id(PRIO_NORMAL, PF_ISOTP_PHYS, c, a), f"CL_IsoTp_{a:02X}_to_{c:02X}",
                          f"ISO-TP frames from 0x{a:02X} to the car (RESULTs, REPORTs; the FCs of "
                          "the car's multi-frame requests).", senders=["Accessory"], j1939=False),
                _message("isotp", can_id(PRIO_NORMAL, PF_ISOTP_PHYS, a, c), f"CL_IsoTp_{c:02X}_to_{a:02X}",
                          f"ISO-TP frames from the car to 0x{a:02X} (requests; the FCs of the "
                          "accessory's multi-frame RESULTs).", senders=["Car"], j1939=False),
                _message("event", can_id(PRIO_EVENT, PF_ISOTP_PHYS, c, a), f"CL_Event_{a:02X}_to_{c:02X}",
                          f"Priority-3 ISO-TP frames from 0x{a:02X} to the car: EVENT messages.",
                          senders=["Accessory"], j1939=False),
                _message("isotp", can_id(PRIO_EVENT, PF_ISOTP_PHYS, a, c), f"CL_EventFc_{c:02X}_to_{a:02X}",
                          f"Priority-3 frames from the car to 0x{a:02X}: FCs of multi-frame EVENTs.",
                          senders=["Car"], j1939=False),
            ]
    attr_defs: OrderedDict[str, DbcAttributeDefinition] = OrderedDict()  # type: ignore[type-arg]
    attrs: OrderedDict[str, DbcAttribute] = OrderedDict()  # type: ignore[type-arg]
    proto = DbcAttributeDefinition("ProtocolType", default_value="", type_name="STRING")
    attr_defs["ProtocolType"] = proto
    attrs["ProtocolType"] = DbcAttribute("J1939" if pattern else "", proto)
    if pattern:
        attr_defs["VFrameFormat"] = ATTRIBUTE_DEFINITION_VFRAMEFORMAT
        # SavvyCAN matches PGNs (ignoring addresses and priority) when this defaults to 1.
        attr_defs["isj1939dbc"] = DbcAttributeDefinition("isj1939dbc", default_value=1, kind="BO_",
                                                        type_name="INT", minimum=0, maximum=1)
    note = ("CabinLink v0.1 CAN transport (docs/spec.md section 7), 500 kbit/s, 29-bit ids, "
            "J1939 layout prio|EDP|DP|PF|PS|SA. Generated by cabinlink dbc. "
            + ("Pattern messages: ids carry placeholder addresses; match on mask 0x1FFF0000 or by "
               "J1939 PGN." if pattern else
               f"Concrete ids for the car at 0x{car:02X} and accessories "
               + ", ".join(f"0x{a:02X}" for a in sorted(set(addresses))) + "; exact id match."))
    return Database(messages=msgs,
                    nodes=[Node("Car", comment="the car (addresses 0x00-0x0F)"),
                           Node("Accessory", comment="a cabin accessory (addresses 0x80-0xF7)")],
                    buses=[Bus("CabinLink", comment=note, baudrate=BITRATE)],
                    version="CabinLink 0.1",
                    dbc_specifics=DbcSpecifics(attributes=attrs, attribute_definitions=attr_defs),
                    frame_id_mask=FRAME_ID_MASK if pattern else None)


def dbc_text(addresses: Sequence[int] = (), car: int = CAR_ADDRESS) -> str:
    """The DBC file's text (see :func:`build_database` for the arguments)."""
    return build_database(addresses, car).as_dbc_string()


# ---- CLI --------------------------------------------------------------------------------

def parse_address(text: str | int) -> int:
    """``"0x85"``, ``"133"`` or an int -> a node address; ValueError naming the text otherwise."""
    if isinstance(text, int):
        v = text
    else:
        try:
            v = int(text, 0)
        except ValueError:
            raise ValueError(f"address {text!r} is not a number (e.g. 0x85)") from None
    _check_address(v, "address")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``cabinlink dbc`` (cli.py declares the same ones without importing us)."""
    p.add_argument("-o", "--output", metavar="FILE", help="write the DBC here (default: standard output)")
    p.add_argument("--address", action="append", default=[], metavar="ADDR",
                   help="concrete ids for the accessory at ADDR (e.g. 0x85), repeatable; default: one "
                        "pattern message per id kind (match with frame id mask 0x1FFF0000)")
    p.add_argument("--car", default="0x00", metavar="ADDR", help="the car's address (default 0x00)")


DESCRIPTION = ("Writes a DBC describing CabinLink's CAN frames: address claim (J1939 NAME fields), "
               "requests, the HEARTBEAT single frame, ISO-TP frames (PCI fields, multiplexed by "
               "frame type) and the priority-3 event channel. Decode a candump log with "
               "`python -m cantools decode -m 0x1FFF0000 cabinlink.dbc < log` "
               "(or --address for exact ids). See docs/tools/dbc.md.")


def run(args: argparse.Namespace) -> int:
    """CLI handler (``output``, ``address`` list, ``car``): writes the DBC to the file or to
    standard output. Exit 0; 1 with one message for a bad address or an unwritable file."""
    try:
        addresses = [parse_address(a) for a in args.address]
        car = parse_address(args.car)
        db = build_database(addresses, car)
    except ValueError as e:
        print(f"cabinlink dbc: {e}", file=sys.stderr)
        return 1
    text = db.as_dbc_string()
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="ascii", newline="")
    except OSError as e:
        print(f"cabinlink dbc: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    how = ("pattern ids: decode with frame id mask 0x1FFF0000, e.g. "
           f"python -m cantools decode -m 0x1FFF0000 {args.output} < candump.log") if not addresses \
        else "concrete ids: exact match"
    print(f"wrote {args.output}: {len(db.messages)} messages ({how})", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cabinlink dbc", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
