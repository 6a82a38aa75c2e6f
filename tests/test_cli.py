"""`python -m decoding run ...` (decoding/cli.py) and `python -m decoding.bench overhead --quick`."""

from __future__ import annotations

import importlib
import json
import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from decoding import cli
from decoding.trace import Node, RunEnd, RunStart, Tokens, Trace

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(zoo_dir: Path, out: Path, method: str, *sets: str, seed: int | None = None,
         prompt: str = "12+7-5*3=?") -> int:
    argv = ["run", method, "--model", str(zoo_dir / "tiny-dllm"), "--prompt", prompt, "--task", "zoo",
            "--threads", "1", "--quiet", "--out", str(out)]
    argv += [a for s in sets for a in ("--set", s)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return cli.main(argv)


def test_records_a_diffusion_trace_that_loads(zoo_dir, tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "diffusion.json"
    assert _run(zoo_dir, out, "diffusion", "gen_length=16", "steps=8", "block_length=8", "batch=2") == 0
    trace = Trace.load(out)
    assert trace.meta.method == "diffusion" and trace.meta.task == "zoo" and trace.meta.expected == "42"
    assert trace.meta.params["steps"] == 8 and trace.meta.params["batch"] == 2
    kinds = [type(e) for e in trace.events]
    assert kinds[0] is RunStart and kinds[-1] is RunEnd
    assert trace.events[0].prompt == "12+7-5*3=?\n"  # formatted by the zoo task
    assert max(e.step for e in trace.events if isinstance(e, Tokens)) == 8
    assert sorted(e.seq for e in trace.events if isinstance(e, Node)) == [0, 1]
    end = trace.events[-1]
    assert end.nfe == 8
    printed = capsys.readouterr().out
    assert f"answer: {end.answer}" in printed and str(out) in printed


def test_records_a_voting_trace_that_loads(zoo_dir, tmp_path, capsys) -> None:
    out = tmp_path / "voting.json"
    assert _run(zoo_dir, out, "voting", "method=majority", "k=3", "gen_length=32", "steps=8") == 0
    trace = Trace.load(out)
    assert trace.meta.method == "voting" and trace.meta.seed == 42  # the method's own default seed
    assert trace.meta.params["method"] == "majority" and trace.meta.params["k"] == 3
    end = trace.events[-1]
    assert isinstance(end, RunEnd) and end.nfe == 3 * 8
    assert "answer:" in capsys.readouterr().out


def test_same_seed_same_bytes_apart_from_seconds(zoo_dir, tmp_path) -> None:
    sets = ("gen_length=16", "steps=16", "block_length=8", "batch=2", "temperature=0.8")
    paths = [tmp_path / f"{i}.json" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6)):
        assert _run(zoo_dir, path, "diffusion", *sets, seed=seed) == 0

    def canonical(path: Path) -> str:
        data = json.loads(path.read_text())
        data["meta"]["versions"] = {}
        return re.sub(r'"seconds":[-+0-9.eE]+', '"seconds":0', json.dumps(data, separators=(",", ":")))

    first, again, other = map(canonical, paths)
    assert first == again
    assert first != other  # the seed matters (rows sample at temperature 0.8)
    raw = [re.sub(r'"seconds":[-+0-9.eE]+', '"seconds":0', p.read_text()) for p in paths[:2]]
    assert raw[0] == raw[1]  # same process: same versions, so the files themselves match


def test_help_lists_every_method_and_parameter(capsys) -> None:
    from decoding import methods

    with pytest.raises(SystemExit) as done:
        cli.main(["run", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name, method in methods.all_methods().items():
        assert f"{name}: {method.title}" in out
        for field, default, _ in method.params.controls():
            assert f"{field}={default}" in out


def test_bad_parameter_is_one_line_and_exit_code_2(capsys) -> None:
    assert cli.main(["run", "diffusion", "--model", "tiny-dllm", "--prompt", "1+2=?", "--set", "steps=0"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "steps" in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("argv, words", [
    (["run", "diffusion", "--set", "stepz=3"], ["stepz"]),
    (["run", "diffusion", "--set", "temperature=hot"], ["temperature"]),
    (["run", "nope"], ["unknown method", "nope"]),
    (["run", "diffusion", "--model", "no/such/folder"], ["no/such/folder"]),
])
def test_usage_errors_name_the_problem(argv, words, capsys) -> None:
    argv = [*argv[:2], "--model", "tiny-dllm", "--prompt", "1+2=?", "--quiet", *argv[2:]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_method_on_the_wrong_kind_of_model(zoo_dir, capsys) -> None:
    code = cli.main(["run", "diffusion", "--model", str(zoo_dir / "tiny-ar"), "--prompt", "1+2=?", "--quiet"])
    assert code == 2 and "causal" in capsys.readouterr().err


def test_bench_overhead_quick_prints_the_table(tmp_path, monkeypatch, capsys) -> None:
    """`python -m decoding.bench overhead --quick`, its `__main__` block run in this process (no second torch
    import: the CLI's own process is tested below)."""
    out = tmp_path / "overhead.json"
    monkeypatch.setattr(sys, "argv", ["decoding.bench", "overhead", "--quick", "--out", str(out)])
    importlib.import_module("decoding.bench")  # first: the `__main__` block then registers nothing of its own
    with warnings.catch_warnings():  # runpy: "'decoding.bench' found in sys.modules" (this process imported it)
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module("decoding.bench", run_name="__main__", alter_sys=True)
    assert "| batch | forward ms/step | bare loop ms/step | engine ms/step | engine/bare |" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    assert all(r["same_tokens"] for r in result["rows"])  # the engine decodes what LLaDA's loop decodes


def test_a_method_registered_only_in_a_test_module_runs_from_the_cli(zoo_dir, tmp_path) -> None:
    """tests/toy_method.py registers "toy" (DECODING_LENS_METHODS): the CLI lists it and records its trace."""
    env = {**ENV, "DECODING_LENS_METHODS": "toy_method", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    listed = subprocess.run([sys.executable, "-m", "decoding", "run", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0 and "toy: " in listed.stdout and "steps=6" in listed.stdout
    out = tmp_path / "toy.json"
    done = subprocess.run([sys.executable, "-m", "decoding", "run", "toy", "--model", str(zoo_dir / "tiny-dllm"),
                           "--prompt", "13-2=?", "--set", "steps=3", "--set", "delay=0", "--quiet", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    trace = Trace.load(out)
    assert trace.meta.method == "toy" and isinstance(trace.events[-1], RunEnd)
    assert sorted({e.step for e in trace.events if isinstance(e, Tokens)}) == [1, 2, 3]
