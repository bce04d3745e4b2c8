"""The feed's history writer in a process of its own.

Why: the feed process runs the Upstox SDK's socket thread (framing, protobuf decode, normalising),
the asyncio loop (Redis Streams, snapshots) and the history writer. All three are Python under one
GIL; at 50,000 ticks/s the writer's per-tick work (dedupe marks, candles, Arrow columns) was a
quarter of a core the other two needed (bench/bench_upstox_feed.py). Here the writer runs with its
own interpreter, fed the ticks as `persistence.records` (built by the Upstox decoder process, or by
the pipeline for other sources), so the feed process only joins bytes and writes them to a pipe.

`HistoryWriterProcess` has the pipeline's writer interface (`write_records`, `write_ticks`, `flush`,
`close`) and runs `persistence.writer.HistoryWriter` in a child (`python -m
persistence.writer_process ROOT`), which holds the store's lock; the store's rules (one writer,
readers never blocked, what a crash loses) are unchanged. Call it from one thread, as the
pipeline does (its writer thread); each call waits for the child's answer.

Lifetimes: the child ignores SIGINT/SIGTERM (a signal to the process group must not cut it off
before the feed's final flush); it ends when told to close, or when its stdin reaches EOF because
the feed died, in which case it publishes what it holds and releases the store at once
(`HistoryWriter.detach`). A child that died is started again on the next call, and the call that
met the death raises `WriterProcessDied`: the pipeline keeps that batch and sends it again, and the
writer's dedupe drops whatever of it was already stored.

Wire format (stdin → child): one byte op, 8-byte little-endian length, payload. Answers (child
stdout → feed): 4-byte little-endian length, msgpack map {"ok": bool, ...}.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import msgpack

from persistence import records
from persistence.store import StoreLocked

log = logging.getLogger(__name__)

OP_WRITE = b"W"  # payload: msgpack [keys, heads, counts, levels] (persistence.records); answer {"ok", "rows"}
OP_WRITE_FLUSH = b"X"  # the same, then flush
OP_FLUSH = b"F"
OP_CLOSE = b"C"
_REQUEST = struct.Struct("<cQ")
_ANSWER = struct.Struct("<I")
START_TIMEOUT_S = 120.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WriterProcessDied(RuntimeError):
    """The writer process ended while a call was in flight (the call's ticks were not stored)."""


class HistoryWriterProcess:
    """`HistoryWriter` in a child process (see the module doc)."""

    def __init__(
        self,
        root: Path | str,
        *,
        compact_after: int | None = None,
        merge_levels_after: int | None = None,
        grace_s: float | None = None,
        lock_wait_s: float = 10.0,
    ) -> None:
        """Start the child and wait until it holds the store. A store still locked by a writer
        that is finishing (the child of a feed that was just killed publishes and lets go within
        a second or two) is waited for up to `lock_wait_s`, then `StoreLocked` is raised."""
        self.root = Path(root)
        self._options = {
            k: v
            for k, v in (
                ("compact_after", compact_after),
                ("merge_levels_after", merge_levels_after),
                ("grace_s", grace_s),
            )
            if v is not None
        }
        self._proc: subprocess.Popen | None = None
        self._closed = False
        self.restarts = 0
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._start(lock_wait_s=lock_wait_s)

    # --- the writer interface --------------------------------------------------------------------
    def write_records(
        self, keys: list[str], heads: bytes, counts: bytes, levels: bytes, *, flush: bool = False
    ) -> int:
        """Ticks as `persistence.records` (what the feed sends): the bytes go to the child as they are."""
        payload = self._pack([keys, heads, counts, levels])
        return self._call(OP_WRITE_FLUSH if flush else OP_WRITE, payload)["rows"]

    def write_ticks(self, ticks: Iterable) -> int:
        from feeds.ticks import tick_fields

        return self.write_records(*records.encode_rows(list(map(tick_fields, ticks))))

    def flush(self) -> None:
        self._call(OP_FLUSH, b"")

    def close(self) -> None:
        """Seal, publish and merge (HistoryWriter.close) in the child, then wait for it to exit."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self._request(OP_CLOSE, b"")
        finally:
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                log.error("history writer process %s did not exit after close: killing it", proc.pid)
                proc.kill()
                proc.wait()
            self._close_pipes(proc)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- the child -----------------------------------------------------------------------------
    def _start(self, lock_wait_s: float = 0.0) -> None:
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                return self._start_child()
            except StoreLocked:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)

    def _start_child(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
        args = [sys.executable, "-m", "persistence.writer_process", str(self.root)]
        if self._options:
            args.append(msgpack.packb(self._options).hex())
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=PROJECT_ROOT
        )
        # The child answers once it holds the store (or could not open it).
        timer = threading.Timer(START_TIMEOUT_S, self._proc.kill)
        timer.start()
        try:
            answer = self._read_answer(self._proc)
        finally:
            timer.cancel()
        if not answer.get("ok"):
            self._proc.wait()
            self._close_pipes(self._proc)
            self._proc = None
            if answer.get("kind") == "StoreLocked":
                raise StoreLocked(answer.get("error", "the history store is locked"))
            raise RuntimeError(f"history writer process could not start: {answer.get('error')}")

    def _call(self, op: bytes, payload: bytes) -> dict:
        if self._closed:
            raise RuntimeError("HistoryWriter is closed")
        if self._proc is None or self._proc.poll() is not None:
            code = self._proc.returncode if self._proc is not None else None
            if self._proc is not None:
                self._close_pipes(self._proc)
            log.warning("history writer process gone (exit %s): starting another", code)
            self.restarts += 1
            self._start(lock_wait_s=10.0)
        answer = self._request(op, payload)
        if not answer.get("ok"):
            raise RuntimeError(f"history writer: {answer.get('error')}")
        return answer

    def _request(self, op: bytes, payload: bytes) -> dict:
        proc = self._proc
        try:
            proc.stdin.write(_REQUEST.pack(op, len(payload)))
            if payload:
                proc.stdin.write(payload)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WriterProcessDied(f"history writer process {proc.pid} gone: {exc}") from None
        return self._read_answer(proc)

    @staticmethod
    def _read_answer(proc: subprocess.Popen) -> dict:
        head = proc.stdout.read(_ANSWER.size)
        if len(head) < _ANSWER.size:
            proc.wait()
            raise WriterProcessDied(f"history writer process {proc.pid} exited ({proc.returncode})")
        (size,) = _ANSWER.unpack(head)
        body = proc.stdout.read(size)
        if len(body) < size:
            proc.wait()
            raise WriterProcessDied(f"history writer process {proc.pid} exited ({proc.returncode})")
        return msgpack.unpackb(body, raw=False)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _serve(root: str, options: dict) -> int:
    """The child: open the store, answer requests until close or EOF."""
    from persistence.writer import HistoryWriter

    # Answers go to the real stdout; anything else that prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = os.fdopen(0, "rb", buffering=1 << 20)

    def answer(**fields: object) -> None:
        body = msgpack.packb(fields, use_bin_type=True)
        out.write(_ANSWER.pack(len(body)) + body)
        out.flush()

    try:
        writer = HistoryWriter(root, flush_interval=None, **options)
    except StoreLocked as exc:
        answer(ok=False, kind="StoreLocked", error=str(exc))
        return 1
    except Exception as exc:
        answer(ok=False, kind=type(exc).__name__, error=str(exc))
        return 1
    answer(ok=True, pid=os.getpid())
    gc.freeze()  # what start-up built lives as long as the process: no collection need walk it
    while True:
        head = inp.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            # The feed died (or closed the pipe without a close request): keep what it sent.
            writer.detach()
            return 0
        op, size = _REQUEST.unpack(head)
        payload = inp.read(size) if size else b""
        if len(payload) < size:
            writer.detach()
            return 0
        closing = op == OP_CLOSE
        try:
            if op in (OP_WRITE, OP_WRITE_FLUSH):
                keys, heads, counts, levels = msgpack.unpackb(payload, raw=False)
                del payload
                rows = writer.write_records(keys, heads, counts, levels, flush=op == OP_WRITE_FLUSH)
                answer(ok=True, rows=rows)
            elif op == OP_FLUSH:
                writer.flush()
                answer(ok=True)
            elif closing:
                writer.close()
                answer(ok=True)
            else:
                answer(ok=False, error=f"unknown op {op!r}")
        except Exception as exc:  # reported to the feed, which keeps the batch and retries
            log.exception("history writer process: request failed")
            answer(ok=False, error=f"{type(exc).__name__}: {exc}")
        if closing:
            return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s history-writer[%(process)d] %(name)s: %(message)s",
    )
    options = msgpack.unpackb(bytes.fromhex(argv[1])) if len(argv) > 1 else {}
    try:
        return _serve(argv[0], options)
    finally:
        gc.unfreeze()  # let interpreter shutdown free what start-up built (DuckDB checks for leaks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
