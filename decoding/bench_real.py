"""Full-size check of the real LLaDA / Dream modeling code on a GPU: `python -m decoding.bench real --code DIR`.

No weights can be downloaded here, so each model is the real architecture at its real shape (LLaDA-8B-Instruct,
Dream-v0-Instruct-7B) with random bf16 weights: built from the hub's own modeling files (DIR/llada/, DIR/dream/,
as for the opt-in test tests/test_real_code.py), saved as a snapshot, then loaded the way the app loads a local
snapshot (decoding.models.load: the registry's settings by model_type, the transformers-5 repairs of
decoding/repairs.py), and decoded once through the app's engine: 256 tokens, one forward pass per step. The
tokenizer is the zoo's (the real ones cannot be downloaded either): ids beyond it are left out of the choice, so
the text is meaningless, but every step still runs the full model and the full-vocabulary softmax / entropy /
top-k of the recorder. Prints a markdown table and writes examples/bench/real-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from decoding.bench import write_json

# The hub configs' shapes (LLaDA-8B-Instruct config.json; Dream-v0-Instruct-7B = Qwen2.5-7B's shape).
CONFIGS = {
    "llada": ("LLaDAModelLM", "modeling_llada", "configuration_llada.LLaDAConfig", {
        "d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "mlp_hidden_size": 12288, "mlp_ratio": 4,
        "vocab_size": 126464, "embedding_size": 126464, "mask_token_id": 126336, "eos_token_id": 126081,
        "pad_token_id": 126081, "max_sequence_length": 4096, "rope_theta": 500000.0, "block_type": "llama",
        "activation_type": "silu", "rope": True, "alibi": False, "weight_tying": False, "include_bias": False,
        "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "attention_layer_norm": False, "flash_attention": False,
        "init_device": "meta", "model_type": "llada"}),
    "dream": ("DreamModel", "modeling_dream", "configuration_dream.DreamConfig", {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 131072,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "mask_token_id": 151666, "pad_token_id": 151643,
        "bos_token_id": 151643, "eos_token_id": 151643, "tie_word_embeddings": False, "model_type": "Dream"}),
}
STRATEGY = {"llada": ("low_confidence", 32), "dream": ("maskgit_plus", 256)}  # (strategy, block_length)
OUT_DIR = Path(__file__).resolve().parent.parent / "examples" / "bench"


def build_snapshot(code: Path, name: str, folder: Path, device: torch.device) -> tuple[float, list[str]]:
    """The real class at the real shape, random bf16 weights, saved with its code and the zoo tokenizer."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from decoding import repairs
    from decoding.zoo.tokenizer import build_tokenizer

    arch, module, config_ref, config = CONFIGS[name]
    shutil.copytree(code / name, folder, dirs_exist_ok=True)
    config = {**config, "architectures": [arch], "auto_map": {"AutoConfig": config_ref, "AutoModel": f"{module}.{arch}"}}
    (folder / "config.json").write_text(json.dumps(config))
    t0 = time.perf_counter()
    cls = get_class_from_dynamic_module(f"{module}.{arch}", str(folder), local_files_only=True)
    class_repairs = repairs.repair_class(cls)  # the same class object that decoding.models.load uses next
    # Build on the meta device and fill the weights ourselves: the classes' own initialisers took 366 s for
    # LLaDA-8B on an H100, and random weights are all this check needs (the snapshot is re-loaded below).
    cfg = get_class_from_dynamic_module(config_ref, str(folder), local_files_only=True)(**config)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():  # random weights: norms at 1, matrices N(0, 0.02)
        for p in model.parameters():
            p.fill_(1.0) if p.dim() == 1 else p.normal_(0.0, 0.02)
    _log(f"{name}: built with random weights in {time.perf_counter() - t0:.1f} s; saving")
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="5GB")
    (folder / "config.json").write_text(json.dumps(config))  # the hub's config as written, not save_pretrained's
    build_tokenizer().save_pretrained(folder)
    del model
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return time.perf_counter() - t0, class_repairs


def _log(message: str) -> None:
    print(message, flush=True)  # stage by stage: a run cut short by a time limit still shows how far it got


def run_one(code: Path, name: str, gen_length: int, device: torch.device, log=_log) -> dict:
    from decoding import models
    from decoding.diffusion import DiffusionParams, denoise

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        folder = Path(tmp) / name
        build_s, class_repairs = build_snapshot(code, name, folder, device)
        log(f"{name}: built and saved in {build_s:.1f} s")
        models.allow_remote_code(folder)
        t0 = time.perf_counter()
        adapter = models.load(str(folder))
        load_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in adapter.model.parameters())
        log(f"{name}: loaded in {load_s:.1f} s ({n_params / 1e9:.2f}B params, repairs {adapter.settings.get('repairs')})")
        strategy, block = STRATEGY[name]
        block = min(block, gen_length)
        params = DiffusionParams(strategy=strategy, steps=gen_length, gen_length=gen_length, block_length=block)
        prompt = "12+7-5*3=?\n" * 5  # 56 characters of the zoo's task: ~57 prompt tokens with [BOS]
        warm = DiffusionParams(strategy=strategy, steps=8, gen_length=block, block_length=block)
        for _ in denoise(adapter, prompt, warm):
            pass
        torch.cuda.synchronize() if device.type == "cuda" else None
        t0 = time.perf_counter()
        events = sum(1 for _ in denoise(adapter, prompt, params))
        torch.cuda.synchronize() if device.type == "cuda" else None
        seconds = time.perf_counter() - t0
        row = {"model": name, "registry": adapter.settings.get("registry"), "params_b": round(n_params / 1e9, 2),
               "dtype": str(next(adapter.model.parameters()).dtype), "repairs": sorted({*class_repairs, *adapter.settings.get("repairs", [])}),
               "schedule": adapter.settings.get("schedule") or "llada", "strategy": strategy, "block": block,
               "gen_length": gen_length, "steps": gen_length, "events": events, "build_s": round(build_s, 1),
               "load_s": round(load_s, 1), "decode_s": round(seconds, 2),
               "ms_per_step": round(1000 * seconds / gen_length, 1),
               "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None}
        log(json.dumps(row))
        del adapter
        models.clear_cache()
        torch.cuda.empty_cache() if device.type == "cuda" else None
        return row


def table(rows: list[dict], device: str) -> str:
    lines = [f"Device: {device}", "",
             "| model (random weights, real code) | params | dtype | repairs applied (class + instance) | strategy | "
             "load s | ms / step (256 tokens, 256 steps) | peak GPU GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['registry']} | {r['params_b']}B | {r['dtype'].replace('torch.', '')} | "
                     f"{', '.join(r['repairs']) or '—'} | {r['strategy']} ({r['schedule']} schedule, block {r['block']}) "
                     f"| {r['load_s']} | {r['ms_per_step']} | {r['peak_gb']} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--code", required=True, help="folder with llada/ and dream/ modeling files (see module doc)")
    parser.add_argument("--models", default="llada,dream")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [run_one(Path(args.code), m, args.gen_length, device) for m in args.models.split(",")]
    print(table(rows, name))
    slug = "h100" if "H100" in name else "h200" if "H200" in name else device.type
    write_json(OUT_DIR / f"real-{slug}.json", {"device": name, "rows": rows})
    return rows
