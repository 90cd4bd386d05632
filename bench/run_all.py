"""Run every benchmark and write bench/RESULTS.md (`make bench`).

Each benchmark measures whisperft against a peer in the same run and prints ratios; this
script only runs them one after another (never in parallel: they would time each other) and
collects what they print, with the machine they ran on.

    python bench/run_all.py [--quick] [--only features prepare train cache transcribe packing memory]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script args, quick args)
BENCHES = {
    "features": (["bench_features.py"], ["bench_features.py", "--windows", "8"]),
    "prepare": (["bench_prepare.py"], ["bench_prepare.py", "--scale", "0.25"]),
    "train": (["bench_train.py"], ["bench_train.py", "--batch-size", "4", "--steps", "2"]),
    "cache": (["bench_train.py", "--only", "frozen encoder", "frozen encoder, cached"],
              ["bench_train.py", "--batch-size", "4", "--steps", "2", "--only", "frozen encoder",
               "frozen encoder, cached"]),
    "transcribe": (["bench_transcribe.py"], ["bench_transcribe.py", "--sets", "synthetic"]),
    "packing": (["bench_packing.py"], ["bench_packing.py", "--clips", "40", "--steps", "6"]),
    "memory": (["bench_memory.py"], ["bench_memory.py", "--hours", "0.5", "--minutes", "5"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller runs (minutes instead of an hour)")
    p.add_argument("--only", nargs="*", choices=list(BENCHES), default=None)
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = p.parse_args()
    names = args.only or list(BENCHES)
    sections = []
    for name in names:
        cmd = [sys.executable, str(HERE / BENCHES[name][1 if args.quick else 0][0]),
               *BENCHES[name][1 if args.quick else 0][1:]]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.time()
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        took = time.time() - start
        body = run.stdout.strip() or "(no output)"
        if run.returncode != 0:
            body += f"\n\nFAILED (exit {run.returncode}):\n" + run.stderr.strip()[-2000:]
        print(body, flush=True)
        sections.append(f"## {name}\n\n`python bench/{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd[1:]))}`"
                        f" ({took:.0f} s)\n\n```\n{body}\n```\n")
    header = (f"# Benchmark results\n\nRegenerate with `make bench` (or `python bench/run_all.py`).\n\n"
              f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPU cores, Python {platform.python_version()}"
              f"{'; quick mode' if args.quick else ''}.\n\n")
    Path(args.out).write_text(header + "\n".join(sections), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
