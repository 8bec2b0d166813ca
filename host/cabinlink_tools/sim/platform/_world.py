# Connection from a firmware process to the simulated world (MicroPython
# subset: this file runs under the MicroPython unix port and under CPython).
#
# Wire: JSON lines over TCP on 127.0.0.1 (address in $CABINLINK_WORLD,
# "host:port"; the board's name in $CABINLINK_BOARD).
#   request   {"id": n, "op": "...", ...}     firmware -> world
#   reply     {"id": n, "r": value}  or  {"id": n, "err": [errno, "text"]}
#   event     {"ev": "...", ...}               world -> firmware, any time
# Requests are synchronous. Events arriving meanwhile are queued and handed
# to the registered handlers by pump(), which every simulated call runs, and
# which an asyncio task runs whenever the socket is readable, so pin IRQs
# reach the firmware promptly even while it only awaits.
import json
import os
import select
import socket
import sys

_conn = None


class World:
    def __init__(self, addr, board):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(host, int(port))[0][-1])
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.buf = b""
        self.next_id = 1
        self.events = []
        self.handlers = {}  # event name -> fn(event dict)
        self.pumping = False
        self.task = None
        self.call("hello", board=board)

    def _send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = self.sock.send(data)
            data = data[n:]

    def _read_line(self, block):
        # One complete line, or None when not blocking and none is there yet.
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.buf[:i]
                self.buf = self.buf[i + 1:]
                return line
            if not block and not self.poller.poll(0):
                return None
            chunk = self.sock.recv(4096)
            if not chunk:
                # The world is gone: this board has no hardware and no power.
                # End the process, as a board without power stops.
                print("simulated world closed the connection: stopping")
                raise SystemExit(0)
            self.buf += chunk

    def call(self, op, **args):
        # Synchronous request; raises OSError(errno) when the world says so.
        rid = self.next_id
        self.next_id += 1
        args["id"] = rid
        args["op"] = op
        self._send(args)
        while True:
            msg = json.loads(self._read_line(True))
            if "ev" in msg:
                self.events.append(msg)
                continue
            if msg.get("id") != rid:
                continue
            if "err" in msg:
                e = msg["err"]
                raise OSError(e[0], e[1])
            result = msg.get("r")
            if self.handlers:
                self.pump()
            return result

    def notify(self, op, **args):
        # Fire-and-forget message (no reply expected).
        args["op"] = op
        self._send(args)

    def pump(self):
        # Hand queued and newly arrived events to their handlers (never nested).
        if self.pumping:
            return
        self.pumping = True
        try:
            while True:
                # A handler's own calls may have buffered more events: go round
                # until both the buffer and the queue are empty.
                while True:
                    line = self._read_line(False)
                    if line is None:
                        break
                    self.events.append(json.loads(line))
                if not self.events:
                    break
                while self.events:
                    ev = self.events.pop(0)
                    h = self.handlers.get(ev["ev"])
                    if h is not None:
                        h(ev)
        finally:
            self.pumping = False

    def on(self, name, handler):
        self.handlers[name] = handler
        if self.task is None:
            self.task = watch(self.sock, self.pump)


def watch(sock, fn):
    # Call fn() whenever sock turns readable, without polling: on MicroPython
    # a task parked in asyncio's IO queue (a task may be created before the
    # loop runs); on CPython the running loop's add_reader, deferred until a
    # loop runs if none does yet. Returns a truthy handle.
    import asyncio

    if sys.implementation.name == "micropython":
        return asyncio.create_task(_watch_task(sock, fn))
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _pending.append((sock, fn))  # installed when a loop starts (cpython_boot)
        return "pending"
    loop.add_reader(sock.fileno(), fn)
    return loop


_pending = []


def start_pending():
    # CPython: called inside a freshly started event loop.
    import asyncio

    loop = asyncio.get_running_loop()
    while _pending:
        sock, fn = _pending.pop(0)
        loop.add_reader(sock.fileno(), fn)


def _watch_task(sock, fn):
    # A MicroPython coroutine is a generator that yields to the IO queue.
    from asyncio import core

    while True:
        yield core._io_queue.queue_read(sock)
        fn()


def world():
    global _conn
    if _conn is None:
        addr = os.getenv("CABINLINK_WORLD")
        if not addr:
            raise OSError(19, "no simulated world: CABINLINK_WORLD is not set")
        _conn = World(addr, os.getenv("CABINLINK_BOARD") or "board")
    return _conn
