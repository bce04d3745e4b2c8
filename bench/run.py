"""Run every benchmark in bench/ and print one JSON object: {bench name: its JSON result}.

Each `bench/bench_<area>.py` does real work and prints one JSON object. Usage:
    python bench/run.py [--quick] [AREA ...]
Results also go to var/bench/<timestamp>.json so runs can be compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    wanted = [a for a in argv if not a.startswith("--")]
    results: dict[str, object] = {}
    for script in sorted(BENCH_DIR.glob("bench_*.py")):
        area = script.stem.removeprefix("bench_")
        if wanted and area not in wanted:
            continue
        cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = round(time.monotonic() - started, 2)
        try:
            results[area] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
        except json.JSONDecodeError:
            results[area] = None
        if proc.returncode != 0 or results[area] is None:
            results[area] = {
                "error": (proc.stderr.strip().splitlines() or ["no output"])[-1],
                "rc": proc.returncode,
            }
        print(f"bench {area}: {wall}s", file=sys.stderr)
    out = json.dumps(results, indent=2, sort_keys=True)
    print(out)
    dest = ROOT / "var" / "bench"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
