"""Run by tests/test_parallel.py under `accelerate launch`: both sharded benchmarks in one launch (process start
and imports dominate a CPU test). argv: OUT_DIR, then the benchmarks' arguments joined by '--next'."""

import sys
from pathlib import Path

from decoding.bench import cli

out, rest = Path(sys.argv[1]), sys.argv[2:]
while rest:
    cut = rest.index("--next") if "--next" in rest else len(rest)
    argv, rest = rest[:cut], rest[cut + 1:]
    cli([*argv, "--out", str(out / f"{argv[0]}2.json")])
