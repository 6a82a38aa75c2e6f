"""The one model-loading layer: `load(spec) -> Adapter` for zoo names, local folders and hub ids.

An Adapter knows its kind and exposes one forward call, `adapter.logits(input_ids, attention_mask)`,
returning float32 [B, T, V] with Dream-style shifting and left padding handled, so decoders never touch
model-specific details. Kinds:
- "masked_diffusion": LLaDA / Dream (remote code) and the zoo dLLM (ModernBertForMaskedLM);
- "native_diffusion": transformers' own block-diffusion models (`diffusion_gemma`);
- "causal": AutoModelForCausalLM (+ optional MTP heads, see decoding/mtp.py);
- "prm": process reward models (a causal LM read at step tags, or a 2-class token classifier).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from decoding.mtp import MTPHeads, has_mtp_heads, load_mtp_heads
from decoding.repairs import repair_class, repair_model

ZOO_DIR = Path(__file__).resolve().parent.parent / "examples" / "models"
ZOO_NAMES = ("tiny-dllm", "tiny-ar", "tiny-prm")
SETTINGS_FILE = "decoding_lens.json"
KINDS = ("masked_diffusion", "native_diffusion", "causal", "prm")


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says what was tried."""


@dataclass(frozen=True)
class ModelInfo:
    hub_id: str
    kind: str
    params_b: float  # total parameters in billions: decides device_map="auto" before downloading
    note: str
    mask_id: int | None = None
    shift_logits: bool = False
    trust_remote_code: bool = False
    prompt_format: str = "chat"  # "chat": the tokenizer's chat template; "bos": [BOS] + text
    eos_ids: tuple[int, ...] = ()  # empty: read from the tokenizer / config at load time
    gen_length: int = 256
    max_length: int | None = None  # empty: config.max_position_embeddings
    good_token: str | None = None  # PRM read as next-token probabilities
    bad_token: str | None = None
    step_tag: str | None = None
    prm_readout: str | None = None  # "next_token" (P(good) vs P(bad)) or "two_class" (softmax, class 1 = good)
    attention_mask_4d: bool = False  # forward() wants a [B, 1, T, T] bool mask for padding (Dream), not [B, T]
    schedule: str | None = None  # "dream": Dream's algs count commits on Dream's timesteps (decoding/diffusion.py)
    # A local snapshot is recognised by its config.json: model_type or one of these architectures.
    model_type: str | None = None
    architectures: tuple[str, ...] = ()


REGISTRY: dict[str, ModelInfo] = {
    info.hub_id: info
    for info in [
        # Sources: mask_id 126336 and eos_ids (EOS 126081, EoT 126348): LLaDA's generate.py / README
        # (shared/REFERENCES.md); trust_remote_code: the hub repo ships modeling_llada.py; max_length 4096: LLaDA's
        # hub config (max_sequence_length 4096); model_type "llada" / LLaDAModelLM: its configuration_llada.py and
        # modeling_llada.py; params_b 8.0: the model card (8B).
        ModelInfo(
            "GSAI-ML/LLaDA-8B-Instruct", "masked_diffusion", 8.0, mask_id=126336, eos_ids=(126081, 126348),
            trust_remote_code=True, max_length=4096, model_type="llada", architectures=("LLaDAModelLM",),
            note="LLaDA 8B instruct: masked diffusion, semi-autoregressive blocks (mask 126336); needs a GPU "
                 "(~16 GB in bf16) and runs its own modeling code (repaired for transformers 5 at load)",
        ),
        # Sources: mask_id 151666: configuration_dream.py (mask_token_id=151666); shift_logits and the 4-D mask:
        # Dream's generation_utils (logits = cat([logits[:, :1], logits[:, :-1]]), attention_mask [B, 1, N, N]);
        # eos_ids 151643 / 151645: Qwen2.5's <|endoftext|> / <|im_end|> (Dream's tokenizer); max_length 2048:
        # Dream's README (trained with a context of 2048); schedule "dream": its diffusion_generate (timesteps
        # linspace(1, eps, steps + 1)); model_type "Dream" / DreamModel: configuration_dream.py / modeling_dream.py;
        # params_b 7.6: Qwen2.5-7B's size, from which Dream is initialised.
        ModelInfo(
            "Dream-org/Dream-v0-Instruct-7B", "masked_diffusion", 7.6, mask_id=151666, shift_logits=True,
            eos_ids=(151643, 151645), trust_remote_code=True, attention_mask_4d=True, max_length=2048,
            schedule="dream", model_type="Dream", architectures=("DreamModel",),
            note="Dream 7B instruct: masked diffusion initialised from Qwen2.5, logits shifted by one; needs a GPU "
                 "(~15 GB in bf16) and runs its own modeling code (repaired for transformers 5 at load)",
        ),
        # Sources: transformers' diffusion_gemma docstring and NVIDIA NeMo docs (id, 26B MoE, canvas 256).
        ModelInfo(
            "google/diffusiongemma-26B-A4B-it", "native_diffusion", 26.0,
            note="DiffusionGemma 26B MoE (~4B active): transformers-native block diffusion, canvas 256, "
                 "uniform-noise (no mask token); id from transformers' docstring + NVIDIA NeMo docs, not loaded here",
        ),
        # Sources: the model cards (sizes; Llama 3 eos <|end_of_text|> 128001, <|eom_id|> 128008, <|eot_id|> 128009).
        ModelInfo(
            "meta-llama/Llama-3.2-1B-Instruct", "causal", 1.24, eos_ids=(128001, 128008, 128009), gen_length=512,
            note="Llama 3.2 1B instruct: the test-time-compute blog's policy model (gated on the Hub)",
        ),
        # Sources: the model card (1.54B); Qwen2.5's <|im_end|> 151645 and <|endoftext|> 151643.
        ModelInfo(
            "Qwen/Qwen2.5-1.5B-Instruct", "causal", 1.54, eos_ids=(151645, 151643), gen_length=512,
            note="Qwen2.5 1.5B instruct: small causal baseline",
        ),
        # Sources: RLHFlow's model card / Online-RLHF PRM code (read P("+") vs P("-") as the reply; eos <|eot_id|>).
        ModelInfo(
            "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", "prm", 8.0, good_token="+", bad_token="-",
            prm_readout="next_token", eos_ids=(128009,),
            note="RLHFlow PRM: each step a user turn, read P('+') vs P('-') as the assistant's reply",
        ),
        # Sources: the Qwen2.5-Math-PRM-7B model card (steps joined by <extra_0>, 2-class head, remote code).
        ModelInfo(
            "Qwen/Qwen2.5-Math-PRM-7B", "prm", 7.6, step_tag="<extra_0>", prm_readout="two_class",
            trust_remote_code=True,
            note="Qwen2.5-Math PRM: steps joined by <extra_0>, 2-class softmax at each tag (logits are [B,T,2])",
        ),
    ]
}

# Hub ids and local folders (resolved paths) whose own Python code we agree to run.
TRUST_REMOTE_CODE_ALLOWLIST: set[str] = {hub_id for hub_id, info in REGISTRY.items() if info.trust_remote_code}


def allow_remote_code(spec: str | Path) -> None:
    """Allow-list a hub id or a local folder for trust_remote_code=True."""
    TRUST_REMOTE_CODE_ALLOWLIST.add(_allow_key(spec))


# Hub ids outside the registry that load() may fetch (their own code still needs the list above).
HUB_ALLOWLIST: set[str] = set()


def allow_hub_id(hub_id: str) -> None:
    """Allow-list a hub id the registry does not know (app.py: the operator's DECODING_LENS_MODELS)."""
    HUB_ALLOWLIST.add(hub_id)


def _allow_key(spec: str | Path) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else str(spec)


def unknown_token_text(i: int) -> str:
    """What an id the tokenizer cannot render shows as."""
    return f"[id {i}]"


def _tokenizer_size(tokenizer: Any) -> int | None:
    try:
        return len(tokenizer)
    except (TypeError, ValueError):
        return None


class Adapter:
    """A loaded model plus everything a decoder needs to drive it (see docs/CONTRACTS.md)."""

    def __init__(self, spec: str, kind: str, model: torch.nn.Module, tokenizer: Any, device: torch.device,
                 settings: dict, mask_id: int | None, eos_ids: list[int], max_length: int,
                 mtp_heads: MTPHeads | None = None):
        self.spec = spec
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.settings = settings
        self.mask_id = mask_id
        self.shift_logits = bool(settings.get("shift_logits", False))
        self.eos_ids = eos_ids
        self.max_length = max_length
        self.mtp_heads = mtp_heads
        # Ids the tokenizer knows: [0, text_vocab). Beyond it (a padded vocabulary) ids render as "[id N]" and the
        # diffusion engine never samples them.
        self.text_vocab = _tokenizer_size(tokenizer)
        # Remote-code models (LLaDA) may not take position_ids: only pass what forward() accepts.
        self._takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        # DiffusionGemma: the trailing canvas the decoder denoises (its block length).
        self.canvas_length: int | None = getattr(model.config, "canvas_length", None) if kind == "native_diffusion" \
            else None

    def __repr__(self) -> str:
        return f"Adapter(spec={self.spec!r}, kind={self.kind!r}, device={self.device})"

    def numerics(self) -> dict[str, str]:
        """Where the logits are computed, for a trace's meta: {"device": "cuda (NVIDIA H100 …)", "dtype": "bfloat16"}."""
        device = self.device.type
        if device == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        return {"device": device, "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch.")}

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               canvas_length: int | None = None,
               self_conditioning_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits [B, T, V] for every position of a (left-padded) batch.

        Masked diffusion: position i's distribution over the token at i (Dream's shift applied here; with left
        padding a row's first real position then reads a pad's output, as in Dream's own generate: a prompt token).
        Causal / PRM: the next-token distribution after position i (two-class PRMs: V = 2).
        Native diffusion: see `_native_logits` (`canvas_length`, `self_conditioning_logits` apply only there).
        """
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
            if bool(attention_mask.all()):
                attention_mask = None  # no padding: the plain forward is faster and what every model supports
        if self.kind == "native_diffusion":
            return self._native_logits(input_ids, attention_mask, canvas_length, self_conditioning_logits)
        kwargs: dict[str, torch.Tensor] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
            if self.settings.get("attention_mask_4d"):
                # As Dream's own generate does: a pair attends only if query and key are both real tokens.
                real = attention_mask.bool()
                kwargs["attention_mask"] = real[:, None, :, None] & real[:, None, None, :]
            if self._takes_position_ids:
                # Left padding: real tokens start at position 0 in every row, as in the unpadded sequence.
                kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, **kwargs)
        # .to: a model split over GPUs (device_map) may hand its logits back on the last layers' GPU.
        logits = (out.logits if hasattr(out, "logits") else out[0]).float().to(self.device)
        if self.shift_logits:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def _native_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       canvas_length: int | None, self_conditioning_logits: torch.Tensor | None) -> torch.Tensor:
        """DiffusionGemma: a causal encoder writes the prompt into a KV cache, a bidirectional decoder reads it
        and denoises a canvas (its `decoder_input_ids`), giving logits only for the canvas positions.

        So `input_ids` is `prompt + canvas` and the last `canvas_length` positions (default: the model's
        canvas_length) are the canvas: the prompt goes to the encoder (`input_ids`), the canvas to the
        decoder. Prompt positions get zero logits (a uniform distribution: the decoder does not predict them).
        Without `self_conditioning_logits` this is the first denoising step's prediction, as in generate().
        """
        width = canvas_length or self.canvas_length
        if not width or width >= input_ids.shape[1]:
            raise ValueError(f"native diffusion needs prompt + canvas: got {input_ids.shape[1]} tokens for a "
                             f"canvas of {width}")
        prompt, canvas = input_ids[:, :-width], input_ids[:, -width:]
        kwargs: dict[str, Any] = {"self_conditioning_logits": self_conditioning_logits}
        if attention_mask is not None:
            prompt_mask = attention_mask[:, :-width]
            kwargs["attention_mask"] = prompt_mask
            kwargs["position_ids"] = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
            # The canvas continues right after each row's real prompt tokens and sees all of them.
            kwargs["decoder_position_ids"] = prompt_mask.long().sum(-1, keepdim=True) + torch.arange(
                width, device=self.device)
            kwargs["decoder_attention_mask"] = torch.nn.functional.pad(prompt_mask, (0, width), value=1)
        out = self.model(input_ids=prompt, decoder_input_ids=canvas, **kwargs)
        head = torch.zeros(prompt.shape[0], prompt.shape[1], out.logits.shape[-1], device=out.logits.device)
        return torch.cat([head, out.logits.float()], dim=1)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of the prompt: zoo "[BOS] + chars"; instruct models: the chat template, ready to answer."""
        tok = self.tokenizer
        if self.settings.get("prompt_format", "chat") == "chat" and getattr(tok, "chat_template", None):
            rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
            return list(tok.encode(rendered, add_special_tokens=False))
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return bos + list(tok.encode(text, add_special_tokens=False))

    def known(self, i: int) -> bool:
        """Whether the tokenizer can render id i (a padded model vocabulary has ids beyond it: Dream's tokenizer
        knows 151,667 ids, its model emits 152,064)."""
        return 0 <= i < self.text_vocab if self.text_vocab else True

    def token_text(self, ids: list[int] | torch.Tensor) -> list[str]:
        """One display string per id, special tokens kept (e.g. "[EOS]", "[MASK]"); an id the tokenizer does not
        know renders as "[id N]"."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        out = []
        for i in ids:
            text = None
            if self.known(i):
                try:
                    text = self.tokenizer.decode([i], skip_special_tokens=False)
                except (TypeError, ValueError, OverflowError, IndexError):
                    text = None
            out.append(text if text is not None else unknown_token_text(i))
        return out

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text without special tokens; ids the tokenizer does not know appear as "[id N]"."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if all(self.known(i) for i in ids):
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        parts, run = [], []
        for i in ids:
            if self.known(i):
                run.append(i)
                continue
            if run:
                parts.append(self.tokenizer.decode(run, skip_special_tokens=True))
                run = []
            parts.append(unknown_token_text(i))
        if run:
            parts.append(self.tokenizer.decode(run, skip_special_tokens=True))
        return "".join(parts)


_CACHE: dict[tuple[str, str], Adapter] = {}
# One lock for every load: transformers' from_pretrained is not thread-safe across models (two loads in two threads
# failed with "Cannot copy out of meta tensor": it builds on the meta device through process-wide state). Two app
# events asking for the same model load it once; a cached model is returned without waiting.
_LOAD_LOCK = threading.Lock()


def load(spec: str | Path, device: str | torch.device | None = None, device_map: str | dict | None = None,
         dtype: torch.dtype | None = None) -> Adapter:
    """Load a zoo name ("tiny-dllm"), a local folder or a registry / allow-listed hub id; cached by (spec, device,
    device_map).

    `device_map` is passed to `from_pretrained` as is, so accelerate places the layers: "balanced" splits the model
    evenly over the visible GPUs (even one that fits on one), "auto" fills them in order. Without it, a model too big
    for one GPU gets "auto" anyway; the adapter's device is then the one holding the input embeddings.
    `dtype`: the parameters' (default: bfloat16 on a GPU, float32 on the CPU); another one replays a run in another
    precision (`python -m decoding replay --dtype`).
    """
    spec = str(spec)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or default_dtype(device)  # resolved first: the default asked for by name is the same adapter
    key = (spec, str(device), json.dumps(device_map, sort_keys=True, default=str), str(dtype))
    if key in _CACHE:
        return _CACHE[key]
    with _LOAD_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(spec, device, device_map, dtype)
        return _CACHE[key]


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU, float32 on the CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def clear_cache() -> None:
    _CACHE.clear()


def _load(spec: str, device: torch.device, device_map: str | dict | None = None,
          dtype: torch.dtype | None = None) -> Adapter:
    if spec in ZOO_NAMES:
        folder = ZOO_DIR / spec
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"zoo model {spec!r} is not built: {folder} has no config.json (train it with "
                                 f"`python -m decoding.zoo.build_zoo --out {ZOO_DIR}`)")
        return _load_local(spec, folder, device, device_map, dtype)
    if spec in REGISTRY:
        return _load_hub(spec, REGISTRY[spec], device, device_map, dtype)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_local(spec, path, device, device_map, dtype)
    if path.exists() or _looks_like_path(spec):
        # Checked here: transformers would send a missing path to the Hub ("Repo id must be in the form ...").
        raise ModelLoadError(f"no model folder at {spec!r} ({path.resolve()} does not exist or is not a folder)")
    if spec in TRUST_REMOTE_CODE_ALLOWLIST or spec in HUB_ALLOWLIST:
        return _load_hub(spec, None, device, device_map, dtype)
    raise ModelLoadError(
        f"unknown model {spec!r}: not a zoo name ({', '.join(ZOO_NAMES)}), no folder at {path.resolve()}, "
        f"not a registry hub id ({', '.join(REGISTRY)}) and not on an allow-list (allow_hub_id, allow_remote_code)"
    )


def _looks_like_path(spec: str) -> bool:
    """A hub id is "owner/name"; anything with more structure was meant as a folder."""
    return spec.startswith(("/", ".", "~")) or spec.endswith(("/", os.sep)) or spec.count("/") > 1 or (
        os.sep != "/" and os.sep in spec)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"cannot read {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _kind_from_config(config: dict, where: Path) -> str:
    if config.get("model_type") == "diffusion_gemma":
        return "native_diffusion"
    archs = config.get("architectures") or []
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "masked_diffusion"
    if any(a.endswith("ForCausalLM") for a in archs):
        return "causal"
    raise ModelLoadError(f"cannot tell what kind of model {where} holds: no {SETTINGS_FILE}, and config.json has "
                         f"model_type={config.get('model_type')!r}, architectures={archs}")


def registry_match(config: dict) -> ModelInfo | None:
    """The registry entry a config belongs to (a local snapshot of a registry model): by model_type, else by
    architectures. model_type is compared case-insensitively ("Dream" / "dream")."""
    model_type = str(config.get("model_type") or "").lower()
    archs = set(config.get("architectures") or [])
    for info in REGISTRY.values():
        if info.model_type and info.model_type.lower() == model_type:
            return info
    for info in REGISTRY.values():
        if archs & set(info.architectures):
            return info
    return None


def _registry_settings(info: ModelInfo) -> dict:
    settings = {k: v for k, v in asdict(info).items() if v is not None and k not in ("model_type", "architectures")}
    if "eos_ids" in settings and not settings["eos_ids"]:
        del settings["eos_ids"]
    return settings


def folder_settings(folder: Path) -> tuple[dict, dict]:
    """(config.json, adapter settings) of a model folder: its decoding_lens.json over the registry's settings
    (for a snapshot of a registry model), the kind always filled in. ModelLoadError when it is no model folder."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json: not a transformers model folder")
    config = _read_json(folder / "config.json")
    settings = _read_json(folder / SETTINGS_FILE) if (folder / SETTINGS_FILE).is_file() else {}
    info = registry_match(config)
    if info is not None:  # a snapshot of a registry model: the registry's settings, its own file on top
        settings = {**_registry_settings(info), "registry": info.hub_id, **settings}
    if "kind" not in settings:
        settings["kind"] = _kind_from_config(config, folder)
    return config, settings


def _load_local(spec: str, folder: Path, device: torch.device, device_map: str | dict | None = None,
                dtype: torch.dtype | None = None) -> Adapter:
    config, settings = folder_settings(folder)
    needs_code = bool(settings.get("trust_remote_code")) or "auto_map" in config
    if needs_code and _allow_key(folder) not in TRUST_REMOTE_CODE_ALLOWLIST:
        raise ModelLoadError(f"{folder} ships its own model code (config.json auto_map) and needs trust_remote_code, "
                             f"but it is not on the allow-list: call decoding.models.allow_remote_code({spec!r}) "
                             f"if you trust it")
    n_params = _param_estimate(folder)
    return _build(spec, str(folder), settings, config, needs_code, n_params, device, local_only=True, folder=folder,
                  device_map=device_map, dtype=dtype)


def _load_hub(spec: str, info: ModelInfo | None, device: torch.device,
              device_map: str | dict | None = None, dtype: torch.dtype | None = None) -> Adapter:
    settings = _registry_settings(info) if info else {}
    needs_code = spec in TRUST_REMOTE_CODE_ALLOWLIST
    if info and info.trust_remote_code and not needs_code:
        raise ModelLoadError(f"{spec} needs trust_remote_code but was removed from the allow-list")
    local_only = _hub_offline()
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec, trust_remote_code=needs_code, local_files_only=local_only)
    except Exception as e:  # OSError, huggingface_hub / httpx errors: all mean "not here and not downloadable"
        raise ModelLoadError(f"could not download {spec}: this machine has no access to the Hugging Face Hub "
                             f"(or the id is wrong / gated) and it is not in the local cache; use a zoo model "
                             f"({', '.join(ZOO_NAMES)}) or a local path ({type(e).__name__}: {e})") from e
    config_dict = config.to_dict()
    if "auto_map" in config_dict and not needs_code:
        raise ModelLoadError(f"{spec} ships its own model code and is not on the trust_remote_code allow-list")
    if "kind" not in settings:
        settings["kind"] = _kind_from_config(config_dict, Path(spec))
    n_params = int(info.params_b * 1e9) if info else None
    return _build(spec, spec, settings, config_dict, needs_code, n_params, device, local_only=local_only,
                  device_map=device_map, dtype=dtype)


def _hub_offline() -> bool:
    """Offline when asked to be, or when the Hub's name does not resolve (skips ~20 s of retries)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    host = constants.ENDPOINT.split("://")[-1].split("/")[0]
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return True
    return False


def _param_estimate(folder: Path) -> int:
    """Parameters from the weight files' size, assuming 2 bytes each (over-estimates fp32 checkpoints: safe)."""
    size = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
    return size // 2


def _model_class(kind: str, config: dict, needs_code: bool):
    """(class, remote class reference or None): the auto class for remote code (with its auto_map entry)."""
    import transformers

    if kind == "native_diffusion":
        return transformers.DiffusionGemmaForBlockDiffusion, None
    if needs_code:
        # Remote code: the auto class its auto_map names (LLaDA, Dream and Qwen's PRM register AutoModel).
        auto_map = config.get("auto_map", {})
        preferred = ["AutoModelForMaskedLM", "AutoModel", "AutoModelForCausalLM"] if kind == "masked_diffusion" \
            else ["AutoModelForCausalLM", "AutoModel", "AutoModelForTokenClassification"]
        for name in preferred:
            if name in auto_map:
                return getattr(transformers, name), auto_map[name]
    for arch in config.get("architectures") or []:
        if hasattr(transformers, arch):
            return getattr(transformers, arch), None
    return (transformers.AutoModelForMaskedLM if kind == "masked_diffusion" else transformers.AutoModelForCausalLM,
            None)


def _remote_class(ref: str | list, source: str, local_only: bool) -> type:
    """The remote model class an auto_map entry names, imported (not yet instantiated) so it can be repaired."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    return get_class_from_dynamic_module(ref, source, local_files_only=local_only)


def _build(spec: str, source: str, settings: dict, config: dict, needs_code: bool, n_params: int | None,
           device: torch.device, local_only: bool, folder: Path | None = None,
           device_map: str | dict | None = None, dtype: torch.dtype | None = None) -> Adapter:
    from transformers import AutoTokenizer

    kind = settings["kind"]
    if kind not in KINDS:
        raise ModelLoadError(f"{spec}: unknown kind {kind!r} in its settings (expected one of {KINDS})")
    dtype = dtype or default_dtype(device)
    load_kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": needs_code, "local_files_only": local_only}
    big = device.type == "cuda" and n_params is not None and \
        n_params * dtype.itemsize > 0.85 * torch.cuda.get_device_properties(device).total_memory
    device_map = device_map or ("auto" if big else None)
    if device_map:
        load_kwargs["device_map"] = device_map  # accelerate spreads the layers over GPUs (and CPU)
    try:
        cls, remote_ref = _model_class(kind, config, needs_code)
        repairs: list[str] = []
        if remote_ref is not None:  # remote code written for transformers 4: repair what v5 breaks (repairs.py)
            cls = _remote_class(remote_ref, source, local_only)
            repairs += repair_class(cls)
            load_kwargs.pop("trust_remote_code")
        model = cls.from_pretrained(source, **load_kwargs)
        repairs += repair_model(model)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=needs_code, local_files_only=local_only)
    except Exception as e:
        raise ModelLoadError(f"could not load {spec} from {source} as {kind}: {type(e).__name__}: {e}") from e
    if not device_map:
        model = model.to(device)
    model.eval()
    if repairs:
        settings = {**settings, "repairs": repairs}
    device = next(model.parameters()).device  # with device_map, inputs go where the embeddings live

    mask_id = settings.get("mask_id", getattr(tokenizer, "mask_token_id", None))
    if mask_id is None:
        mask_id = config.get("mask_token_id")
    if kind == "masked_diffusion" and mask_id is None:
        raise ModelLoadError(f"{spec}: masked diffusion model without a mask token id (tokenizer, config or registry)")
    eos_ids = list(settings.get("eos_ids") or _eos_from(tokenizer, config))
    mtp_heads = None
    if folder is not None and kind == "causal" and has_mtp_heads(folder):
        mtp_heads = load_mtp_heads(folder, model.config).to(device=device, dtype=dtype).eval()
    return Adapter(spec, kind, model, tokenizer, device, settings, mask_id if kind == "masked_diffusion" else None,
                   eos_ids, _max_length(settings, config, tokenizer), mtp_heads)


def _eos_from(tokenizer: Any, config: dict) -> list[int]:
    ids = config.get("eos_token_id") or (config.get("text_config") or {}).get("eos_token_id")
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return ids


def _max_length(settings: dict, config: dict, tokenizer: Any) -> int:
    text = config.get("text_config") or {}
    for value in (settings.get("max_length"), config.get("max_position_embeddings"),
                  config.get("max_sequence_length"), text.get("max_position_embeddings")):
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**7 else 2048


def hardware_need(info: ModelInfo) -> str:
    """What running a registry model takes, for the picker: bf16 weights are ~2 bytes per parameter."""
    if info.params_b < 0.5:
        return "runs on CPU"
    return f"GPU with ~{math.ceil(2 * info.params_b)} GB for bf16 weights" + (
        ", runs its own modeling code" if info.trust_remote_code else "")


def list_models() -> list[dict]:
    """The app's picker: zoo models that exist, then the registry (available_locally = in the HF cache)."""
    rows = []
    for name in ZOO_NAMES:
        folder = ZOO_DIR / name
        if (folder / "config.json").is_file():
            settings = _read_json(folder / SETTINGS_FILE) if (folder / SETTINGS_FILE).is_file() else {}
            rows.append({"name": name, "kind": settings.get("kind", "?"), "available_locally": True,
                         "note": f"tiny zoo model trained on the synthetic arithmetic task ({folder.name})"})
    for hub_id, info in REGISTRY.items():
        rows.append({"name": hub_id, "kind": info.kind, "available_locally": _in_hf_cache(hub_id), "note": info.note,
                     "needs": hardware_need(info)})
    return rows


def _in_hf_cache(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except (OSError, ValueError):  # a malformed cache or id must not break the picker
        return False
