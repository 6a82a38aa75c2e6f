"""Process reward models: `PRM(adapter).score(prompts, steps_lists) -> per-step scores`, one batched call.

A PRM reads a solution step by step and gives each step the probability that it (and everything before it)
is correct. The read-outs, as `shared/REFERENCES.md` and search-and-learn's `sal/models/reward_models.py`
give them, chosen from the adapter's settings:

- `tag` (the zoo's tiny-prm; Math-Shepherd): `prompt step1<tag>step2<tag>...`; at each tag the next-token
  logits give P(good) / (P(good) + P(bad)) (zoo: tag "\\n", tokens [GOOD] / [BAD]; Math-Shepherd: tag " ки",
  tokens "+" / "-");
- `chat` (RLHFlow): each step a user turn (the first one prefixed by the question and a space), each followed
  by an assistant turn "+"; the score is P("+") vs P("-") read at the position that predicts that "+";
- `two_class` (Qwen2.5-Math-PRM): the assistant's reply is the steps joined and ended by `<extra_0>`; the
  model's 2-class head is soft-maxed at each `<extra_0>`, class 1 = good.

`aggregate(scores, "last" | "min" | "prod")` turns a step list into one number (search-and-learn's
`aggregate_scores`; "last" is its default). Scores of a causal PRM at step i depend only on steps <= i, so a
search can score a prefix once and reuse the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from decoding.selection import AGGREGATIONS, aggregate

__all__ = ["AGGREGATIONS", "PRM", "aggregate", "readout_of"]


def readout_of(settings: dict) -> str:
    """Which read-out a PRM's settings (decoding_lens.json / the registry) ask for."""
    if settings.get("prm_readout") == "two_class":
        return "two_class"
    if settings.get("good_token") and settings.get("bad_token"):
        return "tag" if settings.get("step_tag") else "chat"
    raise ValueError("this PRM's settings name no read-out: give good_token / bad_token (+ step_tag), or "
                     "prm_readout='two_class' with step_tag")


def _token_id(tokenizer, text: str) -> int:
    """The id of a candidate token ("+", "[GOOD]"): a single token, or the last of its encoding (the reference's
    `tokenizer.encode("+")[-1]`)."""
    ids = tokenizer.convert_tokens_to_ids(text)
    if isinstance(ids, int) and ids != tokenizer.unk_token_id:
        return ids
    return tokenizer.encode(text, add_special_tokens=False)[-1]


class PRM:
    """A PRM adapter (decoding.models, kind "prm") with its read-out. Counts its calls and forward passes."""

    def __init__(self, adapter, batch_size: int = 64):
        self.adapter = adapter
        self.tokenizer = adapter.tokenizer
        self.readout = readout_of(adapter.settings)
        self.batch_size = batch_size
        self.calls = 0  # score() calls
        self.passes = 0  # forward passes (a call over more rows than batch_size costs several)
        s = adapter.settings
        if self.readout in ("tag", "chat"):
            self.good, self.bad = _token_id(self.tokenizer, s["good_token"]), _token_id(self.tokenizer, s["bad_token"])
        self.tag = s.get("step_tag")

    # ------------------------------------------------------------ inputs: (ids, positions read, column read)

    def _tag_row(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """prompt, then each step followed by the tag; read where each tag ends. Pieces are encoded one by one,
        as the zoo PRM was trained (and so the tag positions are exact)."""
        ids = list(self.adapter.encode_prompt(prompt))
        where = []
        for step in steps:
            ids += self.tokenizer.encode(step + self.tag, add_special_tokens=False)
            where.append(len(ids) - 1)
        return ids, where

    def _chat_row(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """RLHFlow: user step / assistant "+" turns; step k is read at the last position before its "+", i.e. the
        end of the conversation up to step k rendered with the generation prompt (the reference's
        `_score_single` reads logits[-3] of that conversation with "+<|eot_id|>" appended)."""
        tok = self.tokenizer
        conv: list[dict] = []
        where = []
        for k, step in enumerate(steps):
            conv.append({"role": "user", "content": f"{prompt} {step}" if k == 0 else step})
            head = tok.encode(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)
            where.append(len(head) - 1)
            conv.append({"role": "assistant", "content": "+"})
        ids = tok.encode(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)
        for k, p in enumerate(where):
            if p + 1 >= len(ids) or ids[p + 1] != self.good:
                raise ValueError(f"step {k}: the chat template does not put '+' right after the generation prompt")
        return ids, where

    def _two_class_row(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        reply = "".join(step + self.tag for step in steps)
        conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        text = tok.apply_chat_template(conv, tokenize=False) if getattr(tok, "chat_template", None) \
            else prompt + reply
        ids = tok.encode(text, add_special_tokens=False)
        tag_id = tok.encode(self.tag, add_special_tokens=False)[-1]
        return ids, [p for p, t in enumerate(ids) if t == tag_id]

    def rows(self, prompts: Sequence[str], steps_lists: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int]]]:
        build = {"tag": self._tag_row, "chat": self._chat_row, "two_class": self._two_class_row}[self.readout]
        return [build(p, s) for p, s in zip(prompts, steps_lists, strict=True)]

    def read(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, T, V] logits -> [B, T] P(good) at every position (read only at the step positions)."""
        if self.readout == "two_class":
            return logits.float().softmax(-1)[..., 1]
        return logits[..., [self.good, self.bad]].float().softmax(-1)[..., 0]

    # ------------------------------------------------------------ the call

    @torch.no_grad()
    def score(self, prompts: Sequence[str], steps_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        """One list of per-step scores per (prompt, steps); every row of the call in one left-padded batch
        (or batch_size-row chunks). Counts as one call."""
        self.calls += 1
        rows = self.rows(prompts, steps_lists)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[list[float]] = []
        for lo in range(0, len(rows), self.batch_size):
            chunk = rows[lo:lo + self.batch_size]
            todo = [i for i, (_, where) in enumerate(chunk) if where]
            scores: dict[int, list[float]] = {i: [] for i in range(len(chunk))}
            if todo:
                width = max(len(chunk[i][0]) for i in todo)
                ids = torch.full((len(todo), width), pad, dtype=torch.long)
                attn = torch.zeros(len(todo), width, dtype=torch.long)
                for j, i in enumerate(todo):
                    r = chunk[i][0]
                    ids[j, width - len(r):], attn[j, width - len(r):] = torch.tensor(r), 1
                good = self.read(self.adapter.logits(ids, attn)).cpu()
                self.passes += 1
                for j, i in enumerate(todo):
                    shift = width - len(chunk[i][0])
                    scores[i] = [float(good[j, shift + p]) for p in chunk[i][1]]
            out += [scores[i] for i in range(len(chunk))]
        return out
