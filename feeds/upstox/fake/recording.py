"""Recorded Upstox feed sessions for the fake: the exact protobuf frames a connection received,
each with its time offset, so a session can be played back byte for byte (at any speed).

File format: a sequence of records `>QI` (milliseconds since the first frame, frame length)
followed by the frame's bytes. No Django imports.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct(">QI")


class FrameRecorder:
    """Appends frames with their offset from the first one. Thread-safe; close() when done."""

    def __init__(self, path: str | Path):
        self._file = open(path, "wb")  # held open for the recorder's life
        self._lock = threading.Lock()
        self._start: float | None = None
        self.frames = 0

    def write(self, frame: bytes) -> None:
        with self._lock:
            now = time.monotonic()
            if self._start is None:
                self._start = now
            self._file.write(_HEADER.pack(int((now - self._start) * 1000), len(frame)))
            self._file.write(frame)
            self.frames += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_frames(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(offset ms, frame bytes) for each recorded frame, in order."""
    with open(path, "rb") as f:
        while header := f.read(_HEADER.size):
            if len(header) < _HEADER.size:
                raise ValueError(f"{path}: truncated record header")
            offset_ms, length = _HEADER.unpack(header)
            frame = f.read(length)
            if len(frame) < length:
                raise ValueError(f"{path}: truncated frame")
            yield offset_ms, frame
