"""`python -m decoding.bench harp [--limit N] [--device D] [--shape 8b]`: plain greedy decoding vs HARP.

Zoo (default): the held-out problems (`--limit` of them, spread over the levels, seeded) with `tiny-ar`, one
problem at a time (batch 1), greedy. Per setting: accuracy overall and by level, the share of generated tokens
that hesitated, the share of hesitations that flipped the token (the mixed pick differs from the vanilla one
under the same draw), forward passes per problem, and wall time as a ratio to greedy's (each run timed whole,
recording included, `torch.cuda.synchronize()` around it on a GPU; settings interleaved per problem, their order
rotated). Settings: greedy; HARP at the defaults
(θ = 1 bit, δ = 0.2, β = 0.5, seed 3); a θ sweep (θ = 0 reframes every token); and greedy / HARP with the KV
cache off (the reference's cache-free loop). Prints a markdown table, writes examples/bench/harp-<device>.json.

`--shape 8b` (a GPU): a random-weight Llama of Llama-3.1-8B's shape (bf16, sdpa), built on the device as the
overhead benchmark does, a `--prompt`-token prompt and `--new` generated tokens (no EOS). A random model's
entropies sit near log2(vocab) bits, so θ is set at a percentile of the entropies plain decoding saw, for a chosen
share of hesitating tokens (0 = θ above all, the zoo's share, 10%, 100%); each is timed against plain greedy
(median of `--repeats`, interleaved).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from decoding import autoregressive as ar
from decoding import harp
from decoding.bench import TASK, pick_problems, write_json
from decoding.bench_overhead import device_name, device_slug

OUT_DIR = Path(__file__).resolve().parent.parent / "examples" / "bench"
THETAS = (0.0, 0.5, 2.0)  # the sweep beside the default θ = 1.0


@dataclass
class Setting:
    name: str
    params: harp.HarpParams
    plain: bool = False  # plain autoregressive decoding (no HARP)


def settings(max_new: int) -> list[Setting]:
    base = harp.HarpParams(max_new_tokens=max_new, compare=False)
    out = [Setting("greedy", base, plain=True), Setting("HARP θ=1 (defaults)", base)]
    out += [Setting(f"HARP θ={t:g}", base.replace(theta=t)) for t in THETAS]
    out += [Setting("greedy, no cache", base.replace(use_cache=False), plain=True),
            Setting("HARP θ=1, no cache", base.replace(use_cache=False))]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(adapter, ids: list[int], s: Setting, seed: int = 3) -> tuple[ar.Generated, float]:
    """One decode, its events consumed (and so built) as the app would; (result, seconds)."""
    _sync(adapter.device)
    t0 = time.perf_counter()
    if s.plain:
        gen = ar.generate(adapter, [ids], s.params.config(), seed=seed, record_k=s.params.alternatives,
                          use_cache=s.params.use_cache, task=TASK)
    else:
        gen = harp.harp_generate(adapter, [ids], s.params, seed=seed, task=TASK)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            done = stop.value
            break
    _sync(adapter.device)
    return done, time.perf_counter() - t0


def bench_zoo(adapter, problems, chosen: list[Setting]) -> list[dict]:
    rows: dict[str, dict] = {s.name: {"levels": {}, "tokens": 0, "hes": 0, "flips": 0, "nfe": 0, "seconds": 0.0}
                             for s in chosen}
    run_one(adapter, adapter.encode_prompt(TASK.format_prompt(problems[0].question)), chosen[0])  # warm-up
    for i, p in enumerate(problems):
        ids = adapter.encode_prompt(TASK.format_prompt(p.question))
        # interleaved, and the order rotated per problem: load drift and a problem's first run hit every setting alike
        for s in chosen[i % len(chosen):] + chosen[:i % len(chosen)]:
            done, seconds = run_one(adapter, ids, s)
            r = rows[s.name]
            ok = TASK.is_correct(done.answers[0], str(p.answer))
            r["levels"].setdefault(str(p.level), []).append(bool(ok))
            r["tokens"] += len(done.tokens[0])
            r["hes"] += done.extra.get("hesitations", [0])[0]
            r["flips"] += done.extra.get("flips", [0])[0]
            r["nfe"] += done.nfe
            r["seconds"] += seconds
    n = len(problems)
    greedy = rows[chosen[0].name]["seconds"]
    out = []
    for s in chosen:
        r = rows[s.name]
        correct = sum(sum(v) for v in r["levels"].values())
        out.append({"setting": s.name, "theta": None if s.plain else s.params.theta, "use_cache": s.params.use_cache,
                    "accuracy": correct / n, "n": n,
                    "by_level": {lv: sum(v) / len(v) for lv, v in sorted(r["levels"].items())},
                    "hesitated_share": r["hes"] / max(r["tokens"], 1), "flipped_share": r["flips"] / r["hes"]
                    if r["hes"] else None, "hesitations": r["hes"], "flips": r["flips"], "nfe": r["nfe"] / n,
                    "seconds": r["seconds"] / n, "time_ratio": r["seconds"] / greedy})
    return out


def table(results: list[dict]) -> str:
    levels = sorted({lv for r in results for lv in r["by_level"]}, key=int)
    head = ["setting", "accuracy", *[f"L{lv}" for lv in levels], "hesitated", "flipped", "passes / problem",
            "s / problem", "time vs greedy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        flipped = "—" if r["flipped_share"] is None else f"{r['flipped_share']:.0%} ({r['flips']}/{r['hesitations']})"
        cells = [r["setting"], f"{r['accuracy']:.1%}", *[f"{r['by_level'].get(lv, 0):.0%}" for lv in levels],
                 f"{r['hesitated_share']:.1%}", flipped, f"{r['nfe']:.1f}", f"{r['seconds']:.3f}",
                 f"{r['time_ratio']:.2f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the 8B shape on a GPU


class _Tokenizer:
    """The least a causal Adapter needs for timing: characters onto ids, ids shown as <id>."""

    pad_token_id, bos_token_id, eos_token_id, chat_template = 0, 1, 2, None

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:  # noqa: ARG002 -- tokenizer API
        return [4 + ord(c) % (self.vocab - 8) for c in text]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:  # noqa: ARG002 -- tokenizer API
        return "".join(f"<{int(i)}>" for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))


def build_llama(device: torch.device, hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8,
                vocab=128256, max_len=1024):
    """A random-weight LlamaForCausalLM (Llama-3.1-8B's shape by default) built on the device, in an Adapter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from decoding.models import Adapter

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, intermediate_size=intermediate,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_len,
                         attn_implementation="sdpa", pad_token_id=0, bos_token_id=1, eos_token_id=2)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    before = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    model = model.to(device=device, dtype=dtype).eval()
    # no EOS: every run generates exactly `new` tokens
    return Adapter("random-llama", "causal", model, _Tokenizer(vocab), device, {"prompt_format": "bos"}, None, [],
                   max_len)


def bench_shape(adapter, prompt_tokens: int, new: int, shares: list[float], repeats: int) -> list[dict]:
    ids = [1] + [4 + (7 * i) % 1000 for i in range(prompt_tokens - 1)]
    plain = Setting("greedy", harp.HarpParams(max_new_tokens=new, compare=False), plain=True)
    run_one(adapter, ids, plain)  # warm-up
    # the entropies plain decoding sees (bits): θ at a percentile gives a chosen share of hesitating tokens
    probe = harp.HarpParams(max_new_tokens=new, compare=False, theta=1e6)  # along the plain path
    events = list(harp.harp_generate(adapter, [ids], probe, seed=3))
    nats = [e.entropy[0] for e in events if getattr(e, "kind", "") == "tokens" and e.seq == harp.OUT
            and e.action == "propose"]
    ent = sorted(torch.tensor(nats, dtype=torch.float64).div(torch.log(torch.tensor(2.0))).tolist())
    out = []
    for share in shares:
        theta = 1e6 if share <= 0 else 0.0 if share >= 1 else ent[min(len(ent) - 1, int((1 - share) * len(ent)))]
        s = Setting(f"HARP, {share:.0%} target", probe.replace(theta=theta))
        run_one(adapter, ids, s)  # warm-up
        t_plain, t_harp, hes = [], [], 0
        for _ in range(repeats):
            t_plain.append(run_one(adapter, ids, plain)[1])
            done, seconds = run_one(adapter, ids, s)
            t_harp.append(seconds)
            hes = done.extra["hesitations"][0]
        p, h = statistics.median(t_plain), statistics.median(t_harp)
        row = {"target_share": share, "theta_bits": round(theta, 4), "hesitated_share": hes / new,
               "plain_ms_per_token": 1000 * p / new, "harp_ms_per_token": 1000 * h / new, "time_ratio": h / p,
               "plain_runs_s": [round(x, 4) for x in t_plain], "harp_runs_s": [round(x, 4) for x in t_harp]}
        print(f"share {share:.0%}: θ {theta:.4g} bits, hesitated {row['hesitated_share']:.1%}, plain "
              f"{row['plain_ms_per_token']:.2f} ms/token, HARP {row['harp_ms_per_token']:.2f} ms/token, "
              f"{row['time_ratio']:.3f}×", flush=True)
        out.append(row)
    return out


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-ar", help="zoo name, local path or hub id (a causal LM)")
    parser.add_argument("--limit", type=int, default=60, help="held-out problems, spread over the 6 levels")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--max-new", type=int, default=80, help="tokens at most per problem")
    parser.add_argument("--settings", default="", help="comma-separated substrings of setting names to keep")
    parser.add_argument("--seed", type=int, default=0, help="which problems are sampled")
    parser.add_argument("--shape", choices=("zoo", "8b"), default="zoo", help="8b: a random Llama-3.1-8B-shaped "
                        "model's time ratio (a GPU)")
    parser.add_argument("--prompt", type=int, default=128, help="8b: prompt tokens")
    parser.add_argument("--new", type=int, default=128, help="8b: generated tokens")
    parser.add_argument("--shares", default="0,0.02,0.1,1", help="8b: target shares of hesitating tokens")
    parser.add_argument("--repeats", type=int, default=3, help="8b: timed runs each")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default examples/bench/harp[-8b]-<device>.json)")


def main(args: argparse.Namespace) -> list[dict]:
    from decoding.models import load

    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    result: dict = {"command": "python -m decoding.bench harp " + " ".join(a for a in sys.argv[1:] if a != "harp"),
                    "device": device_name(device), "torch": torch.__version__}
    if args.shape == "8b":
        adapter = build_llama(device)
        n = sum(p.numel() for p in adapter.model.parameters())
        print(f"device {result['device']}; random Llama {n / 1e9:.2f}B params, built in {time.perf_counter() - t0:.1f} s",
              flush=True)
        rows = bench_shape(adapter, args.prompt, args.new, [float(x) for x in args.shares.split(",")], args.repeats)
        result |= {"params": n, "prompt": args.prompt, "new": args.new, "rows": rows}
        name = f"harp-8b-{device_slug(device)}.json"
    else:
        adapter = load(args.model, device)
        keep = [k.strip() for k in args.settings.split(",") if k.strip()]
        chosen = [s for s in settings(args.max_new) if not keep or any(k in s.name for k in keep)]
        problems = pick_problems(args.limit, args.seed)
        rows = bench_zoo(adapter, problems, chosen)
        print(table(rows))
        result |= {"model": args.model, "n": len(problems), "rows": rows}
        name = f"harp-{device_slug(device)}.json"
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out or OUT_DIR / name, result)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
