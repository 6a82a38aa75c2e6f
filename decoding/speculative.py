"""Self-speculative decoding on multi-token-prediction heads (Gloeckle et al. 2024, arXiv 2404.19737;
blockwise parallel decoding, Stern et al. 2018; verification as in Medusa, FasterDecoding/Medusa).

A causal LM with n MTP heads (decoding/mtp.py: head 1 is the model itself, head k predicts the token k
ahead from the trunk's state entering the last layer). One forward pass does two jobs:

1. **verify** the pending draft d_1..d_m with head 1: the input is [last committed token, d_1..d_m];
   head 1's prediction g_0..g_m at those positions says what plain decoding would write next. Accept the
   longest prefix with d_i == g_{i-1} (greedy), then add head 1's own next token g_a (the *bonus* token,
   always correct). A pass therefore writes between 1 and m + 1 tokens.
2. **draft**: at the last accepted position, heads 2..m+1 propose the next m tokens (their argmax).

Greedy output equals plain greedy decoding token for token: every emitted token is head 1's argmax given
the tokens before it (tests/test_speculative.py checks it against `model.generate()`).

Sampling mode (temperature > 0) uses Medusa's *typical acceptance*: draft token d_i is accepted while
p(d_i) > min(ε, α·exp(−H)) under head 1 at temperature T (ε = 0.09, α = 0.3, H = head 1's entropy there),
and the bonus token is sampled from head 1 restricted to the tokens passing the same test. This is an
approximation: unlike speculative sampling it does NOT preserve the model's sampling distribution.

Where this deviates: one draft chain per pass (the heads' argmax), as in the paper's blockwise parallel
decoding, not Medusa's tree of candidates; draft tokens past the end of the answer (EOS or the length limit)
count as rejected; the extra heads run only as many layers as the draft length needs.

KV caches: the trunk keeps transformers' DynamicCache; each extra head's layer keeps its own small K/V cache
(`HeadCache`), fed with the same positions in the same pass. After a verdict both are cropped to the
accepted tokens (the rejected drafts' K/V are dropped; the bonus token is not in any cache yet, it is the
first input of the next pass). Why a cache for the heads rather than recomputing: a head is a full decoder
layer that attends over every earlier position's trunk state, so recomputing it would cost a pass over
the whole prefix per round (O(T) per round, O(T^2) per answer) for one layer, while its cache costs one
layer's K/V per position and the same crop as the trunk. `DynamicCache.crop` takes a negative count
(tokens to drop) in transformers 5.x.

Events (docs/CONTRACTS.md, "speculative"): seq 0 is the output; each round's draft is its own sequence,
seq = the step that proposed it, so every draft and its verdict stay in the folded state for the views.
Per forward pass `step`: on the draft verified, `accept` (positions that matched) and `reject` (the first
mismatch and everything after it); on seq 0, `accept` for the accepted draft tokens, a `propose` at the
bonus position carrying head 1's confidence, entropy and top-k (at a rejection: the verifier's top-k at the
first rejected position) and a `commit` of the bonus token; then `propose` of the next draft on its own
seq with each head's confidence, entropy and top-k. Positions count from the first generated token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import torch
from pydantic import model_validator
from transformers import DynamicCache

from decoding.params import Context, Limit, Params, ui
from decoding.record import Recorder
from decoding.trace import RunEnd, RunStart, Tokens, r

EPSILON, ALPHA = 0.09, 0.3  # Medusa's typical-acceptance defaults (posterior_threshold, posterior_alpha)

INTRO = """**Multi-token prediction, self-speculative.** The model has extra heads that guess the 2nd, 3rd,
4th token ahead. Each forward pass checks the previous guesses (the *draft*) against the model's own
next-token head, keeps the matching prefix plus one token of its own (the *bonus*), and drafts again. With
greedy decoding the output is exactly plain greedy decoding, in fewer forward passes.
Sampling (temperature > 0) uses Medusa's typical acceptance: an **approximation** that does not preserve the
model's sampling distribution."""

LOOK_FOR = ("Look for the orange, struck-through draft tokens: there head 1 disagreed, and the pass wrote its own "
            "blue bonus token instead; the meter counts the forward passes saved against plain decoding.")
# The tab's examples, measured with tiny-ar at draft length 3, greedy.
EXAMPLES = (
    {"question": "26-19+16-15=?", "label": "one draft rejected", "level": 3,
     "why": "27 tokens in 8 forward passes; one pass rejects a drafted digit"},
    {"question": "60-49-1-2*4-19+6=?", "label": "the heads disagree where the model errs", "level": 6,
     "why": "42 tokens in 15 passes, 6 of them with a rejection; the answer is wrong (6, expected 19)"},
    {"question": "12+7-5*3=?", "label": "every draft accepted", "level": 3,
     "why": "28 tokens in 8 passes: 3.5 tokens per pass"},
    {"question": "4+5-1+28*5=?", "label": "a long chain", "level": 4, "why": "34 tokens in 10 passes"},
)


class SpeculativeParams(Params):
    draft_length: int = ui(3, "Draft length (tokens the extra heads propose per pass)", 1, 3, 1,
                           help="Heads 2..n guess this many tokens ahead; the next pass checks them (at most n − 1).")
    max_new_tokens: int = ui(80, "Max new tokens", 1, 512, 1, help="The answer stops here or at EOS.")
    temperature: float = ui(0.0, "Temperature (0 = greedy, exact; > 0 = typical acceptance, approximate)", 0, 2, 0.05,
                            help="0: exactly plain greedy decoding. Above 0: Medusa's typical acceptance, which "
                                 "does not preserve the sampling distribution.")
    epsilon: float = ui(EPSILON, "Typical acceptance ε (hard threshold)", 0.0, 1.0, 0.01, advanced=True,
                        help="Sampling only: accept a draft token while p > min(ε, α·exp(−H)).")
    alpha: float = ui(ALPHA, "Typical acceptance α (entropy-scaled threshold)", 0.0, 1.0, 0.01, advanced=True,
                      help="Sampling only: accept a draft token while p > min(ε, α·exp(−H)).")
    top_k: int = ui(3, "Alternatives recorded per position", 1, 10, 1, advanced=True,
                    help="How many of the verifier's and the heads' runner-up tokens the views can show.")

    @classmethod
    def limits(cls, values, context: Context | None = None) -> dict[str, Limit]:
        """The answer fits the model's context after the prompt."""
        out = super().limits(values, context)
        if context is not None and context.room is not None:
            room = max(1, context.room)
            out["max_new_tokens"] = Limit(1, room, whole=True, soft=False,
                                          why=f"the model's context {context.max_length} − the prompt's "
                                              f"{context.prompt_tokens} tokens")
        return out

    @model_validator(mode="after")
    def _check(self) -> SpeculativeParams:
        if self.draft_length < 0:
            raise ValueError(f"draft_length must be >= 0 (0 = plain decoding), got {self.draft_length}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 1 <= self.top_k <= 10:
            raise ValueError(f"top_k must be in [1, 10], got {self.top_k}")
        return self


# ---------------------------------------------------------------- pure rules (tensors in, verdicts out)


def matching_prefix(draft: list[int], wanted: list[int]) -> int:
    """How many draft tokens to accept: the longest prefix with draft[i] == wanted[i] (head 1's argmax)."""
    n = 0
    while n < len(draft) and draft[n] == wanted[n]:
        n += 1
    return n


def greedy_accept(draft: torch.Tensor, verifier_logits: torch.Tensor) -> int:
    """`matching_prefix` on tensors: draft [m]; verifier_logits [m + 1, V] (head 1 at the last committed token and
    at each draft token)."""
    return matching_prefix(draft.tolist(), verifier_logits.argmax(-1).tolist())


def typical_mask(probs: torch.Tensor, epsilon: float, alpha: float) -> torch.Tensor:
    """Medusa's typical set: p(token) > min(ε, α·exp(−H)), per row of probs [..., V]."""
    entropy = torch.special.entr(probs).sum(-1, keepdim=True)
    return probs > torch.minimum(torch.full_like(entropy, epsilon), alpha * torch.exp(-entropy))


def typical_accept(draft: torch.Tensor, verifier_probs: torch.Tensor, epsilon: float = EPSILON,
                   alpha: float = ALPHA) -> int:
    """Longest prefix of the draft whose tokens are in head 1's typical set (verifier_probs: [m + 1, V])."""
    if not len(draft):
        return 0
    ok = typical_mask(verifier_probs[: len(draft)], epsilon, alpha).gather(-1, draft[:, None])[:, 0]
    return int(torch.cumprod(ok.int(), 0).sum())


def bonus_token(logits: torch.Tensor, params: SpeculativeParams, gen: torch.Generator | None) -> int:
    """Head 1's own token after the accepted prefix: argmax (greedy), else a sample from the typical set."""
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, -1)
    probs = torch.where(typical_mask(probs, params.epsilon, params.alpha) | (probs == probs.max()), probs, 0)
    return int(torch.multinomial(probs, 1, generator=gen))


# ---------------------------------------------------------------- the model: one pass, all heads, cached


class HeadCache:
    """K/V of one MTP head's layer (the `past_key_values` its attention calls `update` on), croppable."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def update(self, keys: torch.Tensor, values: torch.Tensor, *_args, **_kwargs) -> tuple[torch.Tensor, ...]:
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], -2), torch.cat([self.values, values], -2)
        self.keys, self.values = keys, values
        return keys, values

    def get_seq_length(self, *_args) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def crop(self, n: int) -> None:
        """Drop the last n positions."""
        if n > 0 and self.keys is not None:
            self.keys, self.values = self.keys[..., :-n, :], self.values[..., :-n, :]


@dataclass
class Caches:
    trunk: DynamicCache
    heads: list[HeadCache]

    @property
    def length(self) -> int:
        return self.trunk.get_seq_length()

    def crop(self, n: int) -> None:
        if n > 0:
            self.trunk.crop(-n)  # transformers 5.x: a negative count of tokens to drop
            for cache in self.heads:
                cache.crop(n)


def new_caches(heads) -> Caches:
    return Caches(DynamicCache(), [HeadCache() for _ in heads.layers])


@torch.no_grad()
def forward(model, heads, input_ids: torch.Tensor, caches: Caches, n_heads: int) -> torch.Tensor:
    """Logits of heads 1..n_heads for the new tokens [n_heads, L, V] (float32), extending every cache.
    input_ids: [1, L], continuing the cached positions."""
    past, length = caches.length, input_ids.shape[1]
    out = model.model(input_ids=input_ids, past_key_values=caches.trunk, use_cache=True, output_hidden_states=True)
    logits = [model.lm_head(out.last_hidden_state)]
    if n_heads > 1:
        # The state entering the last layer, shared by every head. With the trunk split over GPUs
        # (device_map) it lives on the last layers' GPU: the heads run where they were loaded.
        device = next(heads.parameters()).device
        trunk = out.hidden_states[-2].to(device)
        position_ids = torch.arange(past, past + length, device=device)[None]
        cos_sin = tuple(t.to(device) for t in model.model.rotary_emb(trunk, position_ids))
        # Cached keys come first: query i (position past + i) sees keys 0..past + i. sdpa's own is_causal would
        # align the triangle top-left, wrong as soon as there is a cache.
        mask = torch.ones(length, past + length, dtype=torch.bool, device=device).tril(past)[None, None]
        for layer, cache in zip(heads.layers[: n_heads - 1], caches.heads):  # only the heads the draft needs
            hidden = layer(trunk, attention_mask=mask, position_ids=position_ids, position_embeddings=cos_sin,
                           past_key_values=cache)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            logits.append(model.lm_head(model.model.norm(hidden)))
    return torch.stack([x.to(input_ids.device) for x in logits])[:, 0].float()


# ---------------------------------------------------------------- the loop


@dataclass
class Round:
    """One forward pass: the draft it verified, its verdict, the tokens written and the next draft."""

    step: int
    start: int  # output position of the first token this pass writes (= of draft[0])
    draft: list[int]  # the draft verified (proposed by the previous pass)
    accepted: int  # how many of its tokens matched
    written: list[int]  # the tokens this pass writes: draft[:accepted] + [bonus] (cut at EOS / the budget)
    bonus: int | None  # head 1's own token (None when EOS or the budget cut it off)
    bonus_logits: torch.Tensor  # head 1 at the bonus position [V]
    next_draft: list[int]
    draft_logits: torch.Tensor  # [m, V]: head k+2 for next_draft[k]
    done: bool

    # Probabilities only when events are built (the benchmark's loop never pays for them).
    @property
    def bonus_probs(self) -> torch.Tensor:
        return torch.softmax(self.bonus_logits.float(), -1)

    @property
    def draft_probs(self) -> torch.Tensor:
        return torch.softmax(self.draft_logits.float(), -1)


@dataclass
class Result:
    ids: list[int] = field(default_factory=list)
    passes: int = 0
    accepted_by_pos: list[int] = field(default_factory=list)  # accepted at draft position k (0-based)
    drafted_by_pos: list[int] = field(default_factory=list)  # verified at draft position k

    def add(self, rd: Round) -> None:
        self.ids += rd.written
        self.passes += 1
        for k in range(len(rd.draft)):
            while len(self.drafted_by_pos) <= k:
                self.drafted_by_pos.append(0)
                self.accepted_by_pos.append(0)
            self.drafted_by_pos[k] += 1
            self.accepted_by_pos[k] += int(k < rd.accepted)


def check_model(adapter) -> None:
    if adapter.kind != "causal":
        raise ValueError(f"speculative decoding needs a causal model; {adapter.spec} is {adapter.kind}")
    if adapter.mtp_heads is None:
        raise ValueError(f"{adapter.spec} has no multi-token-prediction heads (mtp_heads.safetensors beside the "
                         f"model, decoding/mtp.py): self-speculative decoding needs them to draft. Use tiny-ar.")


def speculate(adapter, prompt_ids: list[int], params: SpeculativeParams, seed: int = 0,
              should_stop: Callable[[], bool] | None = None) -> Iterator[Round]:
    """The decoding loop: one Round per forward pass. Greedy when params.temperature == 0."""
    check_model(adapter)
    model, heads = adapter.model, adapter.mtp_heads
    m = params.draft_length
    if m > heads.n_future - 1:
        raise ValueError(f"draft_length {m} needs {m + 1} heads; {adapter.spec} has {heads.n_future} "
                         f"(draft length 0..{heads.n_future - 1})")
    budget = min(params.max_new_tokens, adapter.max_length - len(prompt_ids))
    if budget < 1:
        raise ValueError(f"the prompt ({len(prompt_ids)} tokens) fills the model's context ({adapter.max_length})")
    gen = torch.Generator().manual_seed(seed)
    eos = set(adapter.eos_ids)
    caches = new_caches(heads)
    pending, draft, n_out, step = list(prompt_ids), [], 0, 0
    while n_out < budget and not (should_stop and should_stop()):
        x = torch.tensor([pending + draft], device=adapter.device)
        logits = forward(model, heads, x, caches, m + 1)  # [m + 1, L, V]
        step += 1
        last = len(pending) - 1  # the last committed token's index in x
        verifier = logits[0, last:]  # head 1 at the last committed token and at each draft token
        if params.temperature == 0:  # one host copy per pass: every head's argmax at every verified position
            picks = logits[:, last:].argmax(-1).tolist()
            a = matching_prefix(draft, picks[0])
            bonus, proposal = picks[0][a], [row[a] for row in picks[1:]]
        else:
            d = torch.tensor(draft, device=verifier.device, dtype=torch.long)
            a = typical_accept(d, torch.softmax(verifier / params.temperature, -1), params.epsilon, params.alpha)
            bonus, proposal = bonus_token(verifier[a], params, gen), None
        written = [*draft[:a], bonus]
        for i, t in enumerate(written):  # stop at EOS, like generate()
            if t in eos:
                written = written[:i + 1]
                break
        written = written[:budget - n_out]
        done = n_out + len(written) >= budget or any(t in eos for t in written)
        bonus_kept = len(written) == a + 1
        # Draft tokens past the end of the output (EOS or the budget came first) count as rejected: not written.
        a = min(a, len(written))
        caches.crop(len(draft) - a)  # keep K/V of the committed tokens only; the bonus is the next input
        # Heads 2..m+1 at the last accepted token predict the tokens after the bonus: the next draft.
        here = logits[1:, last + a]  # [m, V]
        next_draft = [] if done else proposal if proposal is not None else here.argmax(-1).tolist()
        yield Round(step=step, start=n_out, draft=draft, accepted=a, written=written,
                    bonus=bonus if bonus_kept else None, bonus_logits=verifier[a], next_draft=next_draft,
                    draft_logits=here, done=done)
        n_out += len(written)
        if done:
            break
        pending, draft = [bonus], next_draft


def run(adapter, prompt_ids: list[int], params: SpeculativeParams, seed: int = 0) -> Result:
    """The loop without events (benchmarks, tests): ids written, passes, acceptance by draft position."""
    res = Result()
    for rd in speculate(adapter, prompt_ids, params, seed):
        res.add(rd)
    return res


# ---------------------------------------------------------------- events (the registry's decoder)


def _top(probs: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]], list[float]]:
    """top ids, top probs and entropies (nats) of probs [n, V]."""
    p, i = probs.topk(min(k, probs.shape[-1]), -1)
    ent = torch.special.entr(probs).sum(-1)
    return i.tolist(), [[r(x) for x in row] for row in p.tolist()], [r(x) for x in ent.tolist()]


def round_events(rd: Round, rec: Recorder, k: int) -> list:
    """The trace of one pass (module docstring): verdict on the verified draft, writes on seq 0, next draft."""
    out: list = []
    bonus_probs, draft_probs = rd.bonus_probs, rd.draft_probs
    b_ids, b_p, b_ent = _top(bonus_probs[None], k)
    d_ids, d_p, d_ent = _top(draft_probs[: len(rd.next_draft)], k) if rd.next_draft else ([], [], [])
    out += rec.name([*rd.written, *rd.next_draft, *b_ids[0], *(t for row in d_ids for t in row)])
    a, pos = rd.accepted, list(range(rd.start, rd.start + len(rd.draft)))
    draft_seq = rd.step - 1  # the pass that proposed it
    if rd.draft:
        if a:
            out.append(Tokens(seq=draft_seq, step=rd.step, action="accept", pos=pos[:a], ids=rd.draft[:a]))
        if a < len(rd.draft):
            out.append(Tokens(seq=draft_seq, step=rd.step, action="reject", pos=pos[a:], ids=rd.draft[a:]))
    if a:
        out.append(Tokens(seq=0, step=rd.step, action="accept", pos=pos[:a], ids=rd.written[:a]))
    if rd.bonus is not None:
        at = [rd.start + a]
        conf = [r(bonus_probs[rd.bonus])]
        out.append(Tokens(seq=0, step=rd.step, action="propose", pos=at, ids=[rd.bonus], conf=conf, entropy=b_ent,
                          top_ids=b_ids, top_p=b_p))
        out.append(Tokens(seq=0, step=rd.step, action="commit", pos=at, ids=[rd.bonus]))
    if rd.next_draft:
        first = rd.start + len(rd.written)
        conf = [r(draft_probs[j, t]) for j, t in enumerate(rd.next_draft)]
        out.append(Tokens(seq=rd.step, step=rd.step, action="propose",
                          pos=list(range(first, first + len(rd.next_draft))), ids=rd.next_draft, conf=conf,
                          entropy=d_ent, top_ids=d_ids, top_p=d_p))
    return out


def decode(adapter, prompt: str, params: SpeculativeParams, *, task=None, seed: int = 0,
           should_stop: Callable[[], bool] | None = None) -> Generator[object, None, Result]:
    """The registry's decoder: RunStart, per forward pass the round's events, RunEnd with the savings."""
    check_model(adapter)
    t0 = time.perf_counter()
    prompt_ids = adapter.encode_prompt(prompt)
    rec = Recorder(adapter.token_text)
    yield RunStart(method="speculative", prompt=prompt, prompt_ids=prompt_ids, rows=1, length=params.max_new_tokens)
    yield from rec.name(prompt_ids)
    res = Result()
    for rd in speculate(adapter, prompt_ids, params, seed, should_stop):
        yield from round_events(rd, rec, params.top_k)
        res.add(rd)
    text = adapter.decode(res.ids)
    answer = task.extract_answer(text) if task is not None else None
    drafted = sum(res.drafted_by_pos)
    summary = {"tokens": len(res.ids), "passes": res.passes, "passes_saved": len(res.ids) - res.passes,
               "tokens_per_pass": r(len(res.ids) / max(res.passes, 1)),
               "acceptance": r(sum(res.accepted_by_pos) / drafted) if drafted else None,
               "accepted_by_pos": res.accepted_by_pos, "drafted_by_pos": res.drafted_by_pos,
               "draft_length": params.draft_length, "exact": params.temperature == 0}
    stopped = bool(should_stop and should_stop()) and len(res.ids) < params.max_new_tokens
    yield RunEnd(nfe=res.passes, seconds=r(time.perf_counter() - t0), answer=answer, stopped=stopped,
                 summary=summary)
    return res


