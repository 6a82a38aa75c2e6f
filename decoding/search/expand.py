"""Batched step expansion: every beam of an iteration generates its next step in one batched, KV-cached loop.

    steps, passes = expand(adapter, prefixes, delimiter="\\n", temperature=0.8, top_p=1.0, max_tokens=[80, 80],
                           generator=g)

`prefixes` are token ids (prompt + the beam's text so far), left-padded into one batch; one prefill pass, then
one pass per token, rows leaving the batch (and its KV cache) as they stop. A row stops on EOS ("eos"), on the
step delimiter ("step": vLLM's `stop=["\\n\\n"], include_stop_str_in_output=True`, the text cut right after the
delimiter), or on its token limit ("length", labelled as such: the reference's vLLM wrapper calls it "EOS").
`delimiter=None` generates to EOS (Best-of-N; the last search iteration). `one_by_one=True` runs the rows one at
a time, as the reference does (same tokens at temperature 0, more passes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Step:
    ids: list[int] = field(default_factory=list)  # generated tokens (EOS included when it stopped there)
    text: str = ""  # the generated text, cut after the delimiter, EOS left out
    stop: str = ""  # "step" | "eos" | "length"


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] -> [B]: argmax at temperature 0, else nucleus sampling at the temperature."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = (logits / temperature).softmax(-1)
    if top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _Text:
    """Per-id display text, decoded once (the delimiter check runs on every token)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def piece(self, i: int) -> str:
        if i not in self.cache:
            self.cache[i] = self.tokenizer.decode([i], skip_special_tokens=True)
        return self.cache[i]


def _finish(step: Step, tok: int, eos: set[int], delimiter: str | None, limit: int, text: _Text) -> bool:
    """Append `tok` to the row's step; True when the row stops here."""
    step.ids.append(tok)
    if tok in eos:
        step.stop = "eos"
        return True
    piece = text.piece(tok)
    if delimiter and delimiter[-1] in piece:
        full = text.tokenizer.decode(step.ids, skip_special_tokens=True)
        cut = full.find(delimiter)
        if cut >= 0:
            step.text, step.stop = full[:cut + len(delimiter)], "step"
            return True
    if len(step.ids) >= limit:
        step.stop = "length"
        return True
    return False


@torch.no_grad()
def _expand_batch(adapter, prefixes: list[list[int]], delimiter: str | None, temperature: float, top_p: float,
                  limits: list[int], generator: torch.Generator | None, text: _Text) -> tuple[list[Step], int]:
    model, device = adapter.model, adapter.device
    eos = set(adapter.eos_ids)
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else 0
    width = max(map(len, prefixes))
    ids = torch.full((len(prefixes), width), pad, dtype=torch.long)
    attn = torch.zeros(len(prefixes), width, dtype=torch.long)
    for i, row in enumerate(prefixes):
        ids[i, width - len(row):], attn[i, width - len(row):] = torch.tensor(row), 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    cache, logits, passes = out.past_key_values, out.logits[:, -1].float(), 1
    steps = [Step() for _ in prefixes]
    alive = list(range(len(prefixes)))  # batch row -> prefix index
    last = pos[:, -1]
    while True:
        toks = sample(logits, temperature, top_p, generator)
        host = toks.tolist()  # one device sync per pass, not one per row
        keep = [j for j, i in enumerate(alive) if not _finish(steps[i], host[j], eos, delimiter, limits[i], text)]
        if not keep:
            break
        if len(keep) < len(alive):  # stopped rows leave the batch and the cache
            index = torch.tensor(keep, device=device)
            cache.reorder_cache(index)
            toks, attn, last = toks[index], attn[index], last[index]
            alive = [alive[j] for j in keep]
        attn = torch.cat([attn, attn.new_ones(len(alive), 1)], dim=1)
        last = last + 1
        out = model(input_ids=toks[:, None], attention_mask=attn, position_ids=last[:, None], past_key_values=cache,
                    use_cache=True)
        cache, logits, passes = out.past_key_values, out.logits[:, -1].float(), passes + 1
    for s in steps:
        if s.stop != "step":
            s.text = text.tokenizer.decode([t for t in s.ids if t not in eos], skip_special_tokens=True)
    return steps, passes


def expand(adapter, prefixes: list[list[int]], *, delimiter: str | None, temperature: float, top_p: float,
           max_tokens: int, generator: torch.Generator | None = None, one_by_one: bool = False) -> tuple[list[Step], int]:
    """One step for every prefix: (steps, forward passes). Each row may add at most `max_tokens` tokens and never
    runs past the model's context (adapter.max_length)."""
    if not prefixes:
        return [], 0
    limits = [max(1, min(max_tokens, adapter.max_length - len(p))) for p in prefixes]
    text = _Text(adapter.tokenizer)
    if not one_by_one:
        return _expand_batch(adapter, prefixes, delimiter, temperature, top_p, limits, generator, text)
    steps, passes = [], 0
    for prefix, limit in zip(prefixes, limits):
        (step,), n = _expand_batch(adapter, [prefix], delimiter, temperature, top_p, [limit], generator, text)
        steps.append(step)
        passes += n
    return steps, passes
