"""Load-time repairs for remote-code models (LLaDA, Dream) written for transformers 4 and run under 5.

Each repair is named after the failure it repairs and does nothing unless that failure's condition holds, so a
model whose code is already fine (or a later, fixed revision of it) loads untouched. Two moments:

- `repair_class(cls)`, before `from_pretrained`: patches the remote model class and the remote module it came
  from (class-level failures happen while the model is being built or its weights tied);
- `repair_model(model)`, after loading: fixes the instance (config attributes, RoPE buffers) and checks it.

Both return the names of the repairs they applied; the Adapter keeps them in `settings["repairs"]`.

The failures, as the real LLaDA-8B-Instruct / Dream-v0-Instruct-7B hub code meets transformers 5.23:
- `post_init_bookkeeping`: LLaDAModelLM.__init__ never calls `post_init()`, so `all_tied_weights_keys`
  (set there in v5) is missing when from_pretrained needs it;
- `tie_weights_signature`: v5 calls `model.tie_weights(missing_keys=..., recompute_mapping=...)`, LLaDA's
  override takes no arguments;
- `dropped_config_attributes`: v5's PretrainedConfig no longer keeps `use_cache` (LLaDA's forward reads
  `self.config.use_cache`);
- `rope_default_init`: v5's ROPE_INIT_FUNCTIONS has no "default" entry (Dream's rotary embedding looks it up);
- `rope_inv_freq`: v5 builds the model on the meta device, so a non-persistent `inv_freq` buffer computed in
  `__init__` comes out as uninitialised memory after loading: recomputed, then checked;
- `generation_config_validate`: v5's GenerationConfig calls `validate(user_set_attributes=...)`, Dream's
  DreamGenerationConfig.validate takes only `is_init`;
- `tied_weights_keys_format`: Dream's `_tied_weights_keys = ["lm_head.weight"]` is v4's list of parameters tied
  to the input embeddings; v5 wants a {target: source} dict and fails with `'list' object has no attribute
  'keys'` (in save_pretrained, and in loading whenever the config ties the embeddings).
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

import torch

# Attributes transformers 5's PretrainedConfig stopped keeping, with the value transformers 4 defaulted to for
# the models here (LLaDA's configuration_llada.py: `use_cache: bool = False`; the decoders never use a cache).
DROPPED_CONFIG_DEFAULTS: dict[str, Any] = {"use_cache": False}

_MARK = "_decoding_lens_repairs"


class RepairError(RuntimeError):
    """A repair ran but its check failed: the model would run silently wrong."""


def _source(obj: Any) -> str:
    """obj's source without comments ("" when unavailable)."""
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _takes(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _mark(obj: Any, name: str) -> None:
    done = set(getattr(obj, _MARK, ()))
    done.add(name)
    setattr(obj, _MARK, done)


def _done(obj: Any, name: str) -> bool:
    return name in obj.__dict__.get(_MARK, ()) if isinstance(obj, type) else name in getattr(obj, _MARK, ())


# ---------------------------------------------------------------- class-level repairs (before from_pretrained)


def repair_post_init_bookkeeping(cls: type) -> bool:
    """`'X' object has no attribute 'all_tied_weights_keys'`: __init__ never calls post_init(). Condition: the
    class's own __init__ does not mention post_init. Repair: call post_init() after __init__ when it was not."""
    init = cls.__dict__.get("__init__")
    if init is None or ".post_init(" in _source(init) or _done(cls, "post_init_bookkeeping"):
        return False

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self) is cls and not hasattr(self, "all_tied_weights_keys"):
            self.post_init()

    cls.__init__ = __init__
    _mark(cls, "post_init_bookkeeping")
    return True


def repair_tie_weights_signature(cls: type) -> bool:
    """`tie_weights() got an unexpected keyword argument 'missing_keys'`. Condition: the class overrides
    tie_weights without `missing_keys` (or **kwargs). Repair: accept and ignore v5's keyword arguments."""
    tie = cls.__dict__.get("tie_weights")
    if tie is None or _takes(tie, "missing_keys") or _done(cls, "tie_weights_signature"):
        return False

    @functools.wraps(tie)
    def tie_weights(self, missing_keys=None, recompute_mapping=True, **kwargs):  # noqa: ARG001 -- v5's signature
        return tie(self)

    cls.tie_weights = tie_weights
    _mark(cls, "tie_weights_signature")
    return True


def repair_tied_weights_keys_format(cls: type) -> bool:
    """`'list' object has no attribute 'keys'`: v4's `_tied_weights_keys` list. Condition: the class itself sets it
    to a list or tuple. Repair: a property giving v5's {target: source} dict, the source being the input embeddings'
    weight as v4 tied them (an empty dict while the model is still being built)."""
    targets = cls.__dict__.get("_tied_weights_keys")
    if not isinstance(targets, list | tuple) or _done(cls, "tied_weights_keys_format"):
        return False
    targets = tuple(targets)

    def tied_weights_keys(self) -> dict[str, str]:
        try:
            weight = self.get_input_embeddings().weight
        except (AttributeError, NotImplementedError):
            return {}
        source = next((name for name, p in self.named_parameters() if p is weight), None)
        return {t: source for t in targets if source is not None and t != source}

    cls._tied_weights_keys = property(tied_weights_keys)
    _mark(cls, "tied_weights_keys_format")
    return True


def default_rope_init(config: Any, device: torch.device | None = None, seq_len: int | None = None,  # noqa: ARG001
                      **rope_kwargs) -> tuple[torch.Tensor, float]:
    """transformers 4's `_compute_default_rope_parameters`: inv_freq = 1 / base^(2i / dim), scaling 1.0.
    base: rope_kwargs["base"], config.rope_theta or config.rope_parameters["rope_theta"]; dim: rope_kwargs["dim"]
    or head_dim (hidden_size / num_attention_heads) times partial_rotary_factor."""
    base = rope_kwargs.get("base")
    dim = rope_kwargs.get("dim")
    if config is not None:
        params = getattr(config, "rope_parameters", None) or {}
        if base is None:
            base = getattr(config, "rope_theta", None) or (params.get("rope_theta") if isinstance(params, dict)
                                                           else None)
        if dim is None:
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            dim = int(head_dim * (getattr(config, "partial_rotary_factor", None) or 1.0))
    base = float(base if base is not None else 10000.0)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
                               / dim))
    return inv_freq, 1.0


def repair_rope_default_init(module: Any) -> bool:
    """`KeyError: 'default'` in ROPE_INIT_FUNCTIONS. Condition: the remote module uses ROPE_INIT_FUNCTIONS and it
    has no "default". Repair: the module (only it) gets a copy of the table with transformers 4's default."""
    table = getattr(module, "ROPE_INIT_FUNCTIONS", None)
    if not isinstance(table, dict) or "default" in table:
        return False
    module.ROPE_INIT_FUNCTIONS = {**table, "default": default_rope_init}
    return True


def repair_generation_config_validate(gen_cls: type) -> bool:
    """`validate() got an unexpected keyword argument 'user_set_attributes'`. Condition: a GenerationConfig
    subclass overrides validate without it (or **kwargs). Repair: accept and drop v5's new keyword arguments."""
    validate = gen_cls.__dict__.get("validate")
    if validate is None or _takes(validate, "user_set_attributes") or _done(gen_cls, "generation_config_validate"):
        return False
    own = set(inspect.signature(validate).parameters)

    @functools.wraps(validate)
    def wrapped(self, *args, **kwargs):
        return validate(self, *args, **{k: v for k, v in kwargs.items() if k in own})

    gen_cls.validate = wrapped
    _mark(gen_cls, "generation_config_validate")
    return True


def _remote_modules(cls: type) -> list[Any]:
    """The module defining cls and the remote modules it imported (Dream's generation_utils), by package."""
    home = sys.modules.get(cls.__module__)
    if home is None:
        return []
    package = cls.__module__.rpartition(".")[0]
    mods = [home]
    for name, mod in list(sys.modules.items()):
        if mod is not home and package and name.startswith(package + "."):
            mods.append(mod)
    return mods


def repair_class(cls: type) -> list[str]:
    """Class-level repairs for a remote model class and its modules; returns the names applied."""
    from transformers import GenerationConfig

    applied = []
    for base in [c for c in cls.__mro__ if c.__module__ == cls.__module__]:
        if repair_post_init_bookkeeping(base):
            applied.append("post_init_bookkeeping")
        if repair_tie_weights_signature(base):
            applied.append("tie_weights_signature")
        if repair_tied_weights_keys_format(base):
            applied.append("tied_weights_keys_format")
    for module in _remote_modules(cls):
        if repair_rope_default_init(module):
            applied.append("rope_default_init")
        for value in list(vars(module).values()):
            if isinstance(value, type) and issubclass(value, GenerationConfig) and value is not GenerationConfig \
                    and repair_generation_config_validate(value):
                applied.append("generation_config_validate")
    return sorted(set(applied))


# ---------------------------------------------------------------- instance-level repairs (after loading)


def repair_dropped_config_attributes(model: torch.nn.Module) -> bool:
    """`'XConfig' object has no attribute 'use_cache'`. Condition: the config lacks an attribute v5 dropped.
    Repair: set it to its transformers-4 default (DROPPED_CONFIG_DEFAULTS)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    missing = [k for k in DROPPED_CONFIG_DEFAULTS if not hasattr(config, k)]
    for key in missing:
        setattr(config, key, DROPPED_CONFIG_DEFAULTS[key])
    return bool(missing)


def _rope_modules(model: torch.nn.Module):
    for name, module in model.named_modules():
        if isinstance(getattr(module, "inv_freq", None), torch.Tensor) and callable(getattr(module, "rope_init_fn",
                                                                                           None)):
            yield name, module


def repair_rope_inv_freq(model: torch.nn.Module) -> bool:
    """Uninitialised `inv_freq` after loading (non-persistent buffer of a model built on the meta device).
    Condition: a rotary module's inv_freq differs from what its own rope_init_fn computes. Repair: recompute it
    (and `original_inv_freq`, `attention_scaling`); then check every rotary module, raising RepairError if one is
    still wrong or not finite."""
    applied = False
    for _name, module in _rope_modules(model):
        buf = module.inv_freq
        expected, scaling = module.rope_init_fn(module.config, buf.device, **getattr(module, "rope_kwargs", {}))
        expected = expected.to(device=buf.device, dtype=buf.dtype)
        if buf.shape == expected.shape and torch.equal(buf, expected):
            continue
        module.register_buffer("inv_freq", expected.clone(), persistent=False)
        if hasattr(module, "original_inv_freq"):
            module.original_inv_freq = module.inv_freq
        module.attention_scaling = scaling
        applied = True
    for name, module in _rope_modules(model):
        expected, _ = module.rope_init_fn(module.config, module.inv_freq.device, **getattr(module, "rope_kwargs", {}))
        if not (torch.isfinite(module.inv_freq).all() and torch.allclose(module.inv_freq.float(), expected.float())):
            raise RepairError(f"rotary inverse frequencies of {name or 'the model'} are still wrong after repair")
    return applied


def repair_model(model: torch.nn.Module) -> list[str]:
    """Instance-level repairs after from_pretrained; returns the names applied."""
    applied = []
    if repair_dropped_config_attributes(model):
        applied.append("dropped_config_attributes")
    if repair_rope_inv_freq(model):
        applied.append("rope_inv_freq")
    return applied
