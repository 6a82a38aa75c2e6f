"""Data-parallel benchmarks (issue 15): 2 gloo processes on the CPU give the single-process records."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from decoding.bench import cli
from decoding.parallel import map_items

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          str(Path(__file__).with_name("parallel_both.py"))]
BENCHES = {"search": ["search", "--n", "2", "--budgets", "2"],
           "voting": ["voting", "--n", "2", "--k", "2", "--methods", "majority@2"]}


def test_map_items_keeps_order_one_process():
    assert map_items(lambda i, x: [(i, x), x * 2], [5, 6, 7]) == [(0, 5), 10, (1, 6), 12, (2, 7), 14]


def _records(name: str, out) -> list:
    data = json.loads(out.read_text())
    if name == "search":
        return [{k: v for k, v in r.items() if k != "seconds"} for r in data["rows"]]
    return [(r["method"], r["accuracy"], r["nfe"], {lv: (s["accuracy"], s["nfe"]) for lv, s in r["by_level"].items()})
            for r in data]


def test_two_processes_equal_one(tmp_path):
    """Both benchmarks sharded over 2 launched processes (one launch) against the same runs in this process."""
    joined = [a for argv in BENCHES.values() for a in (*argv, "--next")][:-1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # the script imports decoding
    with socket.socket() as free:  # a free port for the processes' rendezvous (the default 29500 may be taken)
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    done = subprocess.run([*LAUNCH[:-1], "--main_process_port", port, LAUNCH[-1], str(tmp_path), *joined],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 proc" in done.stdout and "2 process" in done.stdout, done.stdout[-2000:]  # voting's, search's line
    for name, argv in BENCHES.items():
        one = tmp_path / f"{name}1.json"
        cli([*argv, "--out", str(one)])
        assert _records(name, one) == _records(name, tmp_path / f"{name}2.json")
