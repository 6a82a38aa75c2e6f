"""`python -m decoding run <method> --model M --prompt P [--seed S] [--task zoo|math] [--set key=value ...] --out F`
`python -m decoding diff A.json [B.json] [--seq-a N --seq-b M]`: where two sequences part, and why.
`python -m decoding replay A.json [--seq N] [--dtype D] [--device X]`: one sample decoded again, alone, from its seed
(in another precision or on another device, if asked), and where it departs from the trace, and why.

Runs any registered method headless and saves its trace. The methods and their parameters come from the
registry (`decoding.methods`): `--set` takes a parameter by name (`Params.from_strings`), `run --help` lists
every method with its parameters and defaults. The task formats the prompt and reads the answer; its expected
answer (when it knows one) goes into the trace's meta. A progress bar over forward passes goes to stderr; the
answer and the trace's path to stdout. A bad method, parameter or model is one `error:` line, exit code 2.
The first Ctrl-C asks the method to stop (the partial trace is saved, `stopped` set); a second one aborts.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

USAGE_EXIT = 2


class UsageError(Exception):
    """Something the user can fix: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message} (see --help)\n")


def _method_help() -> str:
    """Every registered method: title, the model kinds it runs on, each parameter with its default."""
    from decoding import methods

    lines = ["methods (python -m decoding run <method> ...; parameters with --set name=value):", ""]
    for name, m in methods.all_methods().items():
        lines.append(f"  {name}: {m.title} (models: {', '.join(m.kinds)})")
        controls = m.params.controls()
        width = max((len(f"{n}={d}") for n, d, _ in controls), default=0)
        for field, default, hints in controls:
            label = hints.get("label", field)
            lo, hi = hints.get("minimum"), hints.get("maximum")
            bounds = f" [{lo:g}..{hi:g}]" if lo is not None and hi is not None else ""
            lines.append(f"      {f'{field}={default}':<{width}}  {label}{bounds}")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from decoding.tasks import TASKS

    parser = _Parser(prog="python -m decoding", description="Decoding Lens, headless: record a method's trace.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a method on one prompt and save its trace",
                         description="Run a method on one prompt and save its trace. The task formats the prompt and reads "
                         "the answer; --set takes the method's parameters by name.", epilog=_method_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("method", help="a registered method (listed below)")
    run.add_argument("--model", required=True, help="zoo name (tiny-dllm), local folder or registry hub id")
    run.add_argument("--prompt", required=True, help="the question; the task formats it")
    run.add_argument("--seed", type=int, default=None, help="default: the method's own (diffusion 0, voting 42)")
    run.add_argument("--task", choices=sorted(TASKS), default=None,
                     help="how the prompt is formatted and the answer read (default: zoo for zoo models, else math)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="a method parameter, repeatable (e.g. --set steps=80 --set temperature=0.6)")
    run.add_argument("--out", type=Path, default=Path("trace.json"), help="trace file to write (default: trace.json)")
    run.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("schema", help="print the trace's JSON Schema (docs/trace.schema.json)")
    diff = sub.add_parser("diff", help="where two sequences of saved traces part, and why (decoding/divergence.py)",
                          description="Print the first split of two sequences and its cause (near-tie, sampling, "
                                      "different context, numerics) with the evidence. One file: two of its samples.")
    diff.add_argument("a", type=Path, help="trace file A")
    diff.add_argument("b", type=Path, nargs="?", default=None, help="trace file B (default: A again)")
    diff.add_argument("--seq-a", type=int, default=None, help="sequence of A (default: its first)")
    diff.add_argument("--seq-b", type=int, default=None,
                      help="sequence of B (default: B's first; with one file, A's second)")
    diff.add_argument("--threshold", type=float, default=None, help="top-2 margin of a near-tie (default 0.1)")
    replay = sub.add_parser("replay", help="decode one sample of a saved trace again, alone, from its seed, and say "
                                           "where it departs and why (decoding/replay.py)",
                            description="Decode one sample of a saved trace again, alone, from its recorded seed and "
                                        "parameters, and print where it departs from the trace and why. Another "
                                        "--dtype or --device asks whether the output survives a change of precision "
                                        "or hardware (a split there is *numerics* or a *near-tie*).")
    replay.add_argument("trace", type=Path, help="trace file (diffusion, voting, divergence, autoregressive, greedy "
                                                 "speculative)")
    replay.add_argument("--seq", type=int, default=None, help="the sample (default: the trace's first)")
    replay.add_argument("--model", default=None, help="default: the model the trace names (meta.model)")
    replay.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    replay.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="the model's precision (default: bfloat16 on a GPU, float32 on the CPU)")
    replay.add_argument("--out", type=Path, default=None, help="also save the replayed sample's trace here")
    replay.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


DTYPES = ("float32", "bfloat16", "float16")


def replay(args: argparse.Namespace) -> int:
    import torch

    from decoding.divergence import sequences
    from decoding.fold import Fold
    from decoding.models import load
    from decoding.replay import replay_sample
    from decoding.trace import Trace, TraceError

    try:
        trace = Trace.load(args.trace)
    except TraceError as e:
        raise UsageError(f"cannot read the trace: {e}") from None
    seqs = sequences(Fold(trace).latest())
    seq = args.seq if args.seq is not None else (seqs[0] if seqs else 0)
    if seq not in seqs:
        raise UsageError(f"the trace has no sequence {seq} (it has {', '.join(map(str, seqs)) or 'none'})")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        adapter = load(args.model or trace.meta.model, args.device, dtype=getattr(torch, args.dtype) if args.dtype
                       else None)
        replayed, d = replay_sample(adapter, trace, seq)
    except (ValueError, OSError) as e:  # ModelLoadError is a ValueError; so is a method replay does not know
        raise UsageError(str(e)) from None
    print(d.text())
    if args.out is not None:
        replayed.save(args.out)
        print(f"replayed trace: {args.out}")
    return 0


def diff(args: argparse.Namespace) -> int:
    from decoding.divergence import NEAR_TIE, diverge, sequences
    from decoding.fold import Fold
    from decoding.trace import Trace, TraceError

    try:
        trace_a = Trace.load(args.a)
        trace_b = Trace.load(args.b) if args.b is not None else trace_a
    except TraceError as e:
        raise UsageError(f"cannot read the trace: {e}") from None
    seqs_a, seqs_b = sequences(Fold(trace_a).latest()), sequences(Fold(trace_b).latest())
    seq_a = args.seq_a if args.seq_a is not None else (seqs_a[0] if seqs_a else 0)
    if args.seq_b is not None:
        seq_b = args.seq_b
    elif args.b is None:
        if len(seqs_a) < 2:
            raise UsageError("the trace holds one sequence: give a second trace file, or --seq-b")
        seq_b = next(s for s in seqs_a if s != seq_a)
    else:
        seq_b = seqs_b[0] if seqs_b else 0
    try:
        d = diverge(trace_a, seq_a, trace_b, seq_b, threshold=args.threshold if args.threshold is not None else
                    NEAR_TIE, labels=(str(args.a), str(args.b or args.a)))
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(d.text())
    return 0


def _default_seed(decode) -> int:
    default = inspect.signature(decode).parameters.get("seed")
    return default.default if default is not None and isinstance(default.default, int) else 0


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """First Ctrl-C: ask the decoder to stop (polled each step); second: abort. The old handler comes back after."""
    stop = threading.Event()

    def handler(_signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from decoding import methods, tasks
    from decoding.params import describe_error
    from decoding.trace import RunEnd, Trace

    try:
        method = methods.get(args.method)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        params = method.params.from_strings(args.sets)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise UsageError(f"bad parameter for {args.method}: {describe_error(e)}") from None
    task = tasks.get(args.task) if args.task else tasks.task_for(args.model)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from decoding.models import load  # transformers: imported once the arguments are known to be good

    try:
        adapter = load(args.model, args.device)
    except (ValueError, OSError) as e:  # ModelLoadError is a ValueError
        raise UsageError(str(e)) from None
    if adapter.kind not in method.kinds:
        raise UsageError(f"method {args.method!r} runs on {', '.join(method.kinds)} models; {args.model!r} is "
                         f"{adapter.kind}")
    prompt = task.format_prompt(args.prompt)
    expected = task.expected_answer(args.prompt)
    seed = args.seed if args.seed is not None else _default_seed(method.decode)
    trace = Trace.new(model=args.model, method=args.method, params=params.model_dump(mode="json"), seed=seed,
                      task=task.name, expected=expected, **adapter.numerics())
    if hasattr(params, "check"):
        try:
            params.check(adapter, prompt)
        except ValueError as e:
            raise UsageError(f"bad parameter for {args.method}: {e}") from None

    total = getattr(params, "steps", None) if getattr(params, "scheduled", False) else None
    bar = tqdm(total=total, desc=args.method, unit="pass", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    try:
        with _stop_on_ctrl_c() as stop:
            for event in method.decode(adapter, prompt, params, task=task, seed=seed, should_stop=stop.is_set):
                trace.add(event)
                step = getattr(event, "step", None)
                if isinstance(step, int) and step > bar.n:
                    bar.update(step - bar.n)
    except ValueError as e:
        if len(trace.events) > 1:  # the run had started: a bug, not a bad input
            raise
        raise UsageError(f"{args.method}: {e}") from None
    finally:
        bar.close()

    end = next((e for e in reversed(trace.events) if isinstance(e, RunEnd)), None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = trace.save(args.out)
    if end is not None:
        verdict = task.is_correct(end.answer, expected)
        judged = "" if verdict is None else f" (expected {expected}: {'correct' if verdict else 'wrong'})"
        print(f"answer: {end.answer}{judged}")
        print(f"cost: {end.nfe} forward passes, {end.seconds:.2f} s{' (stopped)' if end.stopped else ''}")
    print(f"trace: {path} ({path.stat().st_size:,} bytes, {len(trace.events)} events)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        import json

        from decoding.trace import json_schema

        print(json.dumps(json_schema(), indent=1))
        return 0
    try:
        return {"diff": diff, "replay": replay}.get(args.command, run)(args)
    except UsageError as e:
        print(f"python -m decoding {args.command}: error: {e}", file=sys.stderr)
        return USAGE_EXIT
