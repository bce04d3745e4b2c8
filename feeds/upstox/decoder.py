"""Decoding and normalising Upstox feed frames in a process of their own.

Why: in the feed process the SDK's socket thread, the asyncio loop (Redis Streams, snapshots,
dispatch) and the normaliser all run Python under one GIL. Normalising a full-mode frame (five
depth levels an instrument, read off protobuf objects) is the biggest per-tick cost of the feed:
at 50,000 ticks/s it alone needed about half a core, and the loop starved
(bench/bench_upstox_feed.py). With `UpstoxSource(decode="process")` the SDK still owns the socket
and the framing; its message handler hands each frame's raw bytes to this process, which decodes
and normalises it with the C decoder `feeds.upstox._fastfeed` when it is built (the rows
`feeds.upstox.normalise.rows_from_response` gives, tested; UPSTOX_FAST_DECODE=0 turns it off), else
with the SDK's generated `FeedResponse` and `feeds.upstox.normalise` (the same code as in-process:
identical ticks, tested), and sends back each tick packed
(`feeds.ticks.pack_tick`'s bytes) with its instrument key and exchange time, and the frame's ticks
as `persistence.records` for the history writer. The pipeline streams the packed ticks and stores
the records as they are (`FeedPipeline.put_packed`): no Tick is built, here or in the feed process
(except for the instruments it watches).

`FrameDecoder` is the feed side. `send` is called on the SDK's socket thread (a blocking pipe write:
backpressure, as the socket itself would give); records come back on the event loop through a read
pipe and go to the `on_record` callback:

    ("ticks", generation, (keys, ts, payloads, records))  # parallel lists, in the frame's order
    ("session", generation, state)               # a market_info frame (PRE_OPEN/OPEN/CLOSED)
    ("error", generation, DecodeError(message))  # an undecodable frame, counted by the source

`generation` is the connection the frame came from (the source drops stale events, keeps ticks).
A decoder that dies is started again at once; frames sent meanwhile are reported as errors.
The child ignores SIGINT/SIGTERM (the feed stops it after its last frame) and exits when its stdin
closes, which is also what happens when the feed process dies.

Wire format: feed → child, per frame an 8-byte header (generation, length; uint32 little-endian)
and the frame; child → feed, one msgpack array per record, back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import msgpack
from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
TICKS, SESSION, ERROR = 0, 1, 2
PIPE_BYTES = 1 << 20  # room for ~a second of frames at the benchmark's rate
F_SETPIPE_SZ = 1031  # Linux fcntl
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

Record = tuple[str, int, object]


class FrameDecoder:
    """The feed side of the decoder process (see the module doc)."""

    def __init__(self, on_record: Callable[[Record], None], depth_every_ms: int = 0):
        self.on_record = on_record
        self.depth_every_ms = depth_every_ms
        self.restarts = 0
        self.frames_lost = 0
        self._proc: subprocess.Popen | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._send_lock = threading.Lock()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def _spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "feeds.upstox.decoder", str(self.depth_every_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=PROJECT_ROOT,
        )
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):  # Linux only; the default 64 KiB works, slower
                fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        transport, _ = await self._loop.connect_read_pipe(lambda: _Records(self, proc), proc.stdout)
        with self._send_lock:
            self._proc, self._transport = proc, transport

    def send(self, generation: int, frame: bytes) -> None:
        """From the SDK's socket thread: hand one raw frame to the decoder."""
        with self._send_lock:
            proc = self._proc
            try:
                proc.stdin.write(_HEADER.pack(generation, len(frame)))
                proc.stdin.write(frame)
                proc.stdin.flush()
                return
            except (AttributeError, OSError, ValueError) as exc:  # no decoder, or it just died
                self.frames_lost += 1
                error = exc
        self._post(("error", generation, DecodeError(f"frame lost: decoder process unavailable ({error})")))

    def _post(self, record: Record) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.on_record, record)

    def _lost(self, proc: subprocess.Popen) -> None:
        """On the loop: the child's stdout closed."""
        if self._closing or proc is not self._proc:
            return
        code = proc.poll()
        log.error("Upstox frame decoder process %s ended (exit %s): starting another", proc.pid, code)
        self.restarts += 1
        with contextlib.suppress(OSError):
            proc.stdin.close()
        asyncio.ensure_future(self._spawn())

    async def close(self) -> None:
        self._closing = True
        with self._send_lock:
            proc, transport = self._proc, self._transport
            self._proc = None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the child exits at EOF, after answering what it was sent
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        if transport is not None:
            transport.close()


class _Records(asyncio.Protocol):
    """Reads the child's records off its stdout, on the event loop."""

    def __init__(self, decoder: FrameDecoder, proc: subprocess.Popen):
        self.decoder = decoder
        self.proc = proc
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * PIPE_BYTES)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        deliver = self.decoder.on_record
        for kind, generation, *rest in self.unpacker:
            if kind == TICKS:
                keys, ts, payloads, heads, counts, levels = rest
                deliver(("ticks", generation, (keys, ts, payloads, (heads, counts, levels))))
            elif kind == SESSION:
                deliver(("session", generation, rest[0]))
            else:
                deliver(("error", generation, DecodeError(rest[0])))

    def connection_lost(self, exc: Exception | None) -> None:
        self.decoder._lost(self.proc)


# --- the child ----------------------------------------------------------------------------------


def serve(inp, out, depth_every_ms: int = 0) -> int:
    """Decode frames from `inp` until EOF, writing records to `out` (full depth at most every
    `depth_every_ms` per instrument: `feeds.upstox.normalise.rows_from_response`)."""
    import operator

    from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

    from feeds.upstox.normalise import market_status_from_response, rows_from_response
    from persistence.records import encode_rows

    parse = pb.FeedResponse.FromString
    fast_rows = _fast_rows()
    gc.freeze()  # what start-up built lives as long as the process: no collection need walk it
    pack = msgpack.Packer(use_bin_type=True).pack
    ts_of = operator.itemgetter(1)
    depth_due: dict[str, int] = {}
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return 0
        generation, size = _HEADER.unpack(head)
        frame = inp.read(size)
        if len(frame) < size:
            return 0
        # The C decoder when it was built (the same rows, tested); protobuf objects for whatever
        # it leaves to them (None: a frame it cannot decode exactly as protobuf would) and for a
        # frame without ticks (market_info).
        rows = fast_rows(frame, depth_every_ms, depth_due) if fast_rows is not None else None
        response = None
        if not rows:
            try:
                response = parse(frame)
            except DecodeError as exc:
                out.write(pack([ERROR, generation, str(exc) or "undecodable frame"]))
                out.flush()
                continue
            if rows is None:
                rows = rows_from_response(response, depth_every_ms, depth_due)
        if rows:
            keys, heads, counts, levels = encode_rows(rows)
            record = [
                TICKS,
                generation,
                keys,
                list(map(ts_of, rows)),
                list(map(pack, rows)),
                heads,
                counts,
                levels,
            ]
            out.write(pack(record))
        else:
            state = market_status_from_response(response)
            if state is None:
                continue
            out.write(pack([SESSION, generation, state]))
        out.flush()


def _fast_rows():
    """`feeds.upstox._fastfeed.rows` when built (`python -m feeds.upstox.build_fastfeed`) and not
    turned off with UPSTOX_FAST_DECODE=0, else None."""
    if os.environ.get("UPSTOX_FAST_DECODE", "1") == "0":
        return None
    try:
        from feeds.upstox._fastfeed import rows
    except ImportError:
        log.warning("feeds/upstox/_fastfeed.c is not built: decoding frames with protobuf objects")
        return None
    return rows


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the records
    inp = os.fdopen(0, "rb", buffering=PIPE_BYTES)
    try:
        return serve(inp, out, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    except BrokenPipeError:  # the feed went away
        return 0
    finally:
        gc.unfreeze()


if __name__ == "__main__":
    sys.exit(main())
