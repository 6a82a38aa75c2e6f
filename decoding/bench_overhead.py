"""`python -m decoding.bench overhead`: what recording costs, measured against a bare LLaDA loop.

A random-weight bidirectional model (ModernBertForMaskedLM, every layer global) is built directly on the
device and wrapped in a `decoding.models.Adapter`. Per denoising step, three numbers:

- forward: `adapter.logits(x)` alone (the model's forward plus the float32 cast every decoder pays);
- bare loop: LLaDA generate.py's low-confidence loop written out below (argmax at T = 0, softmax confidence,
  -inf beyond the current block, per-row top-k of get_num_transfer_tokens' count); nothing recorded;
- engine: `decoding.diffusion.denoise` with full recording (propose / commit deltas with confidence, entropy
  and top-3 per masked position, Vocab names) and every event serialised to JSON (`model_dump_json`) as a
  consumer would while the run goes on.

Each run is timed whole (`torch.cuda.synchronize()` before and after), ms/step = run time / steps; the
median over `--repeats` runs is reported, bare and engine interleaved. The engine's canvas is checked
against the bare loop's (same tokens at T = 0).

GPU default: LLaDA-8B's shape (hidden 4096, 32 layers, intermediate 12288, 32 heads, vocab 126464) in
bf16, prompt 64 tokens, gen 256, blocks of 32, steps 256 (one token per step, as LLaDA) and 32, batches
1, 5 and 8. CPU default: a small fp32 shape (hidden 64, 2 layers, vocab 512, gen 64, block 16, batches 1
and 5) that finishes in well under a minute. Prints a markdown table per step count and writes
examples/bench/overhead-<device>.json.

The targets (issue): engine within 3% of the bare loop at every batch size, and the engine's
batch-5 / batch-1 ratio within 5% of the bare loop's.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from decoding.bench import write_json
from decoding.diffusion import DiffusionParams, denoise
from decoding.models import Adapter

OUT_DIR = Path(__file__).resolve().parent.parent / "examples" / "bench"


@dataclass
class Shape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    vocab: int
    prompt: int  # prompt tokens, [BOS] included
    gen: int
    block: int
    steps: list[int]
    batches: list[int]
    dtype: str


GPU_SHAPE = Shape(hidden=4096, layers=32, intermediate=12288, heads=32, vocab=126464, prompt=64, gen=256, block=32,
                  steps=[256, 32], batches=[1, 5, 8], dtype="bfloat16")
CPU_SHAPE = Shape(hidden=64, layers=2, intermediate=128, heads=2, vocab=512, prompt=16, gen=64, block=16,
                  steps=[64], batches=[1, 5], dtype="float32")
QUICK_SHAPE = Shape(hidden=32, layers=1, intermediate=64, heads=2, vocab=128, prompt=8, gen=16, block=8,
                    steps=[16], batches=[1, 2], dtype="float32")


# ---------------------------------------------------------------- a random model behind the real Adapter


class SyntheticTokenizer:
    """The least a masked-diffusion Adapter needs: ids 0-3 are [PAD] [BOS] [EOS] [MASK]-like specials, every
    other id is one printable token. encode maps characters onto ids (stable, no vocabulary file)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    chat_template = None

    def __init__(self, vocab: int, mask_id: int):
        self.vocab, self.mask_token_id = vocab, mask_id
        self.specials = {0: "[PAD]", 1: "[BOS]", 2: "[EOS]", mask_id: "[MASK]"}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:  # noqa: ARG002 -- tokenizer API
        return [4 + ord(c) % (self.vocab - 8) for c in text]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join("" if i in self.specials and skip_special_tokens else self.specials.get(i, f"<{i}>")
                       for i in ids)


def build_adapter(shape: Shape, device: torch.device, seed: int = 0) -> Adapter:
    """ModernBertForMaskedLM of `shape` with random weights, initialised on `device` in `shape.dtype`."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    mask_id = shape.vocab - 1
    max_len = shape.prompt + shape.gen
    config = ModernBertConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        intermediate_size=shape.intermediate, num_attention_heads=shape.heads,
        global_attn_every_n_layers=1, local_attention=2 * max_len + 2, max_position_embeddings=max(1024, max_len),
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
        attn_implementation="sdpa", reference_compile=False,
    )
    dtype = getattr(torch, shape.dtype)
    before = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = ModernBertForMaskedLM(config)
    finally:
        torch.set_default_dtype(before)
    model = model.to(device=device, dtype=dtype).eval()
    tok = SyntheticTokenizer(shape.vocab, mask_id)
    return Adapter("random-modernbert", "masked_diffusion", model, tok, device, {"prompt_format": "bos"}, mask_id,
                   [tok.eos_token_id], max_len + 16)


def prompt_text(shape: Shape) -> str:
    """shape.prompt - 1 characters ([BOS] makes the rest)."""
    text = "What is 12+7-5*3? Explain every step and write the final answer. " * 8
    return text[: shape.prompt - 1]


# ---------------------------------------------------------------- the bare loop (LLaDA generate.py)


def get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA: the block's masks split evenly over its steps, the remainder to the first steps."""
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = torch.zeros(mask_num.size(0), steps, device=mask_index.device, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, : remainder[i]] += 1
    return num_transfer_tokens


@torch.inference_mode()
def bare_loop(adapter: Adapter, prompt_ids: list[int], batch: int, gen_length: int, block_length: int,
              steps: int) -> torch.Tensor:
    """LLaDA's generate() at temperature 0, low-confidence remasking, cfg 0, over `adapter.logits` (the same
    forward as the engine). One change: [MASK] is never the argmax (as the engine; LLaDA's released loop can
    pick it), taken out after the softmax so the confidence is LLaDA's."""
    mask_id = adapter.mask_id
    x = torch.full((batch, len(prompt_ids) + gen_length), mask_id, dtype=torch.long, device=adapter.device)
    x[:, : len(prompt_ids)] = torch.tensor(prompt_ids, device=adapter.device)
    P = len(prompt_ids)
    num_blocks = gen_length // block_length
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        block_mask_index = x[:, P + num_block * block_length: P + (num_block + 1) * block_length] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = adapter.logits(x)
            p = F.softmax(logits, dim=-1)
            logits[..., mask_id] = -torch.inf
            x0 = torch.argmax(logits, dim=-1)  # temperature 0: no Gumbel noise
            x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            x0_p[:, P + (num_block + 1) * block_length:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=num_transfer_tokens[j, i])
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]
    return x[:, P:]


# ---------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(adapter: Adapter, prompt_ids: list[int], batch: int, gen: int, n: int) -> float:
    """ms per `adapter.logits` call on a [batch, prompt + gen] canvas (median of n)."""
    x = torch.full((batch, len(prompt_ids) + gen), adapter.mask_id, dtype=torch.long, device=adapter.device)
    x[:, : len(prompt_ids)] = torch.tensor(prompt_ids, device=adapter.device)
    times = []
    with torch.inference_mode():
        adapter.logits(x)
        for _ in range(n):
            _sync(adapter.device)
            t0 = time.perf_counter()
            adapter.logits(x)
            _sync(adapter.device)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def time_bare(adapter: Adapter, prompt_ids: list[int], batch: int, shape: Shape, steps: int) -> tuple[float, list]:
    _sync(adapter.device)
    t0 = time.perf_counter()
    out = bare_loop(adapter, prompt_ids, batch, shape.gen, shape.block, steps)
    _sync(adapter.device)
    return time.perf_counter() - t0, out.tolist()


def time_engine(adapter: Adapter, prompt: str, batch: int, shape: Shape, steps: int) -> tuple[float, list, dict]:
    """One `denoise` run, every event serialised as it arrives; returns (seconds, canvas, stats)."""
    params = DiffusionParams(strategy="low_confidence", steps=steps, gen_length=shape.gen,
                             block_length=shape.block, temperature=0.0, batch=batch, top_k=3)
    n_events = n_bytes = 0
    _sync(adapter.device)
    t0 = time.perf_counter()
    gen = denoise(adapter, prompt, params, seed=0)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            decoded = stop.value
            break
        n_bytes += len(event.model_dump_json(exclude_defaults=True))
        n_events += 1
    _sync(adapter.device)
    return time.perf_counter() - t0, decoded.canvas, {"events": n_events, "json_bytes": n_bytes}


@dataclass
class Row:
    steps: int
    batch: int
    forward_ms: float
    bare_ms: float
    engine_ms: float
    bare_runs_ms: list[float] = field(default_factory=list)
    engine_runs_ms: list[float] = field(default_factory=list)
    same_tokens: bool = True
    events: int = 0
    json_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.engine_ms / self.bare_ms


def measure(adapter: Adapter, shape: Shape, repeats: int, forward_n: int, log=print) -> list[Row]:
    prompt = prompt_text(shape)
    prompt_ids = adapter.encode_prompt(prompt)
    assert len(prompt_ids) == shape.prompt, (len(prompt_ids), shape.prompt)
    rows = []
    # Warm the device up (clocks, cuBLAS heuristics) before the first timing.
    time_forward(adapter, prompt_ids, max(shape.batches), shape.gen, 3 * forward_n)
    warm_steps = min(shape.steps)
    for steps in shape.steps:
        for batch in shape.batches:
            # Warm-up: one short run of each (allocator, kernels' first launches, pinned host buffers).
            time_bare(adapter, prompt_ids, batch, shape, warm_steps)
            time_engine(adapter, prompt, batch, shape, warm_steps)
            fwd = time_forward(adapter, prompt_ids, batch, shape.gen, forward_n)
            bare, engine, same, stats = [], [], True, {}
            for _ in range(repeats):
                s, bare_canvas = time_bare(adapter, prompt_ids, batch, shape, steps)
                bare.append(1000 * s / steps)
                s, engine_canvas, stats = time_engine(adapter, prompt, batch, shape, steps)
                engine.append(1000 * s / steps)
                same = same and bare_canvas == engine_canvas
            row = Row(steps, batch, round(fwd, 3), round(statistics.median(bare), 3),
                      round(statistics.median(engine), 3), [round(v, 3) for v in bare],
                      [round(v, 3) for v in engine], same, stats.get("events", 0), stats.get("json_bytes", 0))
            log(f"steps {steps} batch {batch}: forward {row.forward_ms:.2f} bare {row.bare_ms:.2f} engine "
                f"{row.engine_ms:.2f} ms/step ({row.ratio:.3f}x) runs bare {row.bare_runs_ms} engine "
                f"{row.engine_runs_ms} same tokens: {same}")
            rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    out = []
    for steps in dict.fromkeys(r.steps for r in rows):
        group = [r for r in rows if r.steps == steps]
        out += [f"steps {steps}:", "",
                "| batch | forward ms/step | bare loop ms/step | engine ms/step | engine/bare |",
                "|---|---|---|---|---|"]
        out += [f"| {r.batch} | {r.forward_ms:.2f} | {r.bare_ms:.2f} | {r.engine_ms:.2f} | {r.ratio:.3f} |"
                for r in group]
        base = group[0]
        for r in group[1:]:
            b, e = r.bare_ms / base.bare_ms, r.engine_ms / base.engine_ms
            out.append(f"\nbatch {r.batch} / batch {base.batch}: bare {b:.3f}, engine {e:.3f} "
                       f"(engine's ratio / bare's {e / b:.3f})")
        out.append("")
    return "\n".join(out)


def targets(rows: list[Row]) -> dict:
    """The issue's targets per step count: engine <= 1.03 x bare; engine's batch-5/batch-1 within 5% of bare's."""
    out = {}
    for steps in dict.fromkeys(r.steps for r in rows):
        group = {r.batch: r for r in rows if r.steps == steps}
        checks = {f"batch {b}: engine/bare <= 1.03": {"value": round(r.ratio, 4), "met": r.ratio <= 1.03}
                  for b, r in group.items()}
        if 1 in group and 5 in group:
            rel = (group[5].engine_ms / group[1].engine_ms) / (group[5].bare_ms / group[1].bare_ms)
            checks["batch5/batch1: engine's within 5% of bare's"] = {"value": round(rel, 4),
                                                                     "met": abs(rel - 1) <= 0.05}
        out[f"steps {steps}"] = checks
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    found = re.search(r"\b([ahlbv]\d{2,4}[a-z]?)\b", name)
    return found.group(1) if found else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def _flags(argv: list[str]) -> list[str]:
    """The command line's flags, without the subcommand's name and the output path."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not (i == 0 and arg == "overhead") and not arg.startswith("--out="):
            out.append(arg)
    return out


def profile(adapter: Adapter, shape: Shape, batch: int, steps: int) -> None:
    """torch.profiler over one bare and one engine run: the top kernels and CPU ops by device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    prompt = prompt_text(shape)
    ids = adapter.encode_prompt(prompt)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if adapter.device.type == "cuda" else [])
    for name, run in (("bare", lambda: time_bare(adapter, ids, batch, shape, steps)),
                      ("engine", lambda: time_engine(adapter, prompt, batch, shape, steps))):
        run()
        with torch_profile(activities=activities) as prof:
            run()
        sort = "self_cuda_time_total" if adapter.device.type == "cuda" else "self_cpu_time_total"
        print(f"\n## profile: {name}, batch {batch}, steps {steps}\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=22, max_name_column_width=60))


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--quick", action="store_true", help="a tiny CPU shape, one repeat (smoke test)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: the shape's)")
    parser.add_argument("--steps", default=None, help="comma-separated step counts (default: the shape's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs each (default: 3, quick: 1)")
    parser.add_argument("--forward-n", type=int, default=10, help="timed forward passes each")
    for name in ("hidden", "layers", "intermediate", "heads", "vocab", "prompt", "gen", "block"):
        parser.add_argument(f"--{name}", type=int, default=None, help=f"override the shape's {name}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table per loop "
                        "(the largest batch, the shape's last step count)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: "
                        "examples/bench/overhead-<device>.json)")


def main(args: argparse.Namespace) -> list[Row]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = QUICK_SHAPE if args.quick else GPU_SHAPE if device.type == "cuda" else CPU_SHAPE
    shape = Shape(**asdict(shape))
    if device.type != "cuda":
        shape.dtype = "float32"
    for name in ("hidden", "layers", "intermediate", "heads", "vocab", "prompt", "gen", "block"):
        if getattr(args, name) is not None:
            setattr(shape, name, getattr(args, name))
    if args.batches:
        shape.batches = [int(b) for b in args.batches.split(",")]
    if args.steps:
        shape.steps = [int(s) for s in args.steps.split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    t0 = time.perf_counter()
    adapter = build_adapter(shape, device)
    n_params = sum(p.numel() for p in adapter.model.parameters())
    print(f"device {device_name(device)}; model {n_params / 1e9:.2f}B params ({shape.dtype}), built in "
          f"{time.perf_counter() - t0:.1f} s; prompt {shape.prompt}, gen {shape.gen}, block {shape.block}, "
          f"steps {shape.steps}, batches {shape.batches}, {repeats} repeats", flush=True)
    rows = measure(adapter, shape, repeats, 3 if args.quick else args.forward_n,
                   log=lambda m: print(m, flush=True))
    print()
    print(table(rows))
    checks = targets(rows)
    for steps, group in checks.items():
        print(f"{steps}: " + ", ".join(f"{k} {'✓' if c['met'] else '✗'} ({c['value']})" for k, c in group.items()))
    if args.profile:
        profile(adapter, shape, shape.batches[-1], shape.steps[-1])
    out = args.out or OUT_DIR / f"overhead-{device_slug(device)}.json"
    result = {
        "command": " ".join(["python -m decoding.bench overhead", *_flags(sys.argv[1:])]),
        "device": device_name(device), "torch": torch.__version__, "params": n_params,
        "shape": asdict(shape), "repeats": repeats, "wall_seconds": round(time.perf_counter() - t0, 1),
        "rows": [asdict(r) | {"engine_over_bare": round(r.ratio, 4)} for r in rows], "targets": checks,
    }
    try:
        import transformers

        result["transformers"] = transformers.__version__
    except ImportError:
        pass
    write_json(out, result)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
