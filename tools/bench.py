"""Run the benchmarks under bench/ (each prints its own figures, measured side by side in one run).

    ./cadence bench            all of them
    ./cadence bench keyframes  only bench/bench_keyframes.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    if argv:
        wanted = {a.removeprefix("bench_").removesuffix(".py") for a in argv}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
        if not scripts:
            print(f"no benchmark named {', '.join(sorted(wanted))} in bench/", file=sys.stderr)
            return 2
    failed = 0
    for script in scripts:
        print(f"== {script.relative_to(ROOT)}", flush=True)
        failed += subprocess.run([sys.executable, str(script)], cwd=ROOT).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
