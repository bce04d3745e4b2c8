"""Build the C frame decoder (`feeds/upstox/_fastfeed.c`) next to its source, for this interpreter.

    python -m feeds.upstox.build_fastfeed

`make install` and `make install-dev` run it. It needs a C compiler and the Python headers (both on
the machines this project targets); without them the decoder process keeps using the SDK's
generated protobuf classes (`feeds.upstox.normalise.rows_from_response`), the same ticks, slower.
Exits non-zero when the build fails.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "_fastfeed.c"


def target() -> Path:
    return HERE / ("_fastfeed" + sysconfig.get_config_var("EXT_SUFFIX"))


def build() -> Path:
    out = target()
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = [
        *compiler,
        "-O2",
        "-Wall",
        "-shared",
        "-fPIC",
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(tmp),
    ]
    try:
        subprocess.run(command, check=True)
        os.replace(tmp, out)  # atomic: a running decoder never loads half a file
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main() -> int:
    try:
        path = build()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(
            f"feeds/upstox/_fastfeed.c not built ({exc}): the decoder uses protobuf objects", file=sys.stderr
        )
        return 1
    print(f"built {path.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
