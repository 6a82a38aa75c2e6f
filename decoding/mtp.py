"""Multi-token prediction heads (Gloeckle et al. 2024) on top of a LlamaForCausalLM trunk.

The causal LM's own last layer + norm + lm_head is head 1, the ordinary next-token head, so the trunk
loads and generates as a plain `AutoModelForCausalLM`. Heads 2..n each add one decoder layer on the
shared trunk (the hidden state entering the last layer) and reuse the model's norm and unembedding.
Their weights live beside the model in `mtp_heads.safetensors` (+ `mtp_heads.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

HEADS_WEIGHTS = "mtp_heads.safetensors"
HEADS_CONFIG = "mtp_heads.json"


class MTPHeads(nn.Module):
    def __init__(self, config: LlamaConfig, n_future: int = 4):
        super().__init__()
        self.n_future = n_future
        last = config.num_hidden_layers - 1
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, layer_idx=last) for _ in range(n_future - 1))

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / HEADS_WEIGHTS))
        (directory / HEADS_CONFIG).write_text(json.dumps({"n_future": self.n_future}))


def has_mtp_heads(directory: str | Path) -> bool:
    return (Path(directory) / HEADS_WEIGHTS).is_file()


def load_mtp_heads(directory: str | Path, config: LlamaConfig) -> MTPHeads:
    directory = Path(directory)
    n_future = json.loads((directory / HEADS_CONFIG).read_text())["n_future"]
    heads = MTPHeads(config, n_future)
    heads.load_state_dict({k: v.float() for k, v in load_file(str(directory / HEADS_WEIGHTS)).items()})
    return heads


def mtp_logits(model: nn.Module, heads: MTPHeads, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of every head for an unpadded batch: [n_future, B, T, V]; head k predicts token t+k.

    The heads' layers run with no explicit mask, which sdpa turns into a causal mask: callers pass
    unpadded (or right-padded, loss-masked) sequences.
    """
    out = model.model(input_ids=input_ids, output_hidden_states=True)
    trunk = out.hidden_states[-2]  # the state entering the last layer: shared by all heads
    position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand(input_ids.shape[0], -1)
    cos_sin = model.model.rotary_emb(trunk, position_ids)
    logits = [model.lm_head(out.last_hidden_state)]
    for layer in heads.layers:
        hidden = layer(trunk, attention_mask=None, position_ids=position_ids, position_embeddings=cos_sin)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        logits.append(model.lm_head(model.model.norm(hidden)))
    return torch.stack(logits)
