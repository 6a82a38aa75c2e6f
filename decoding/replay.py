"""Replay by seed and counterfactual forks: re-decode one sequence of a trace and diff it against the original.

    replayed, d = replay_sample(adapter, trace, seq)          # alone, from its recorded seed: d.identical?
    forked, d = fork(adapter, trace, seq, pos, token)         # force a token from where it was decided, same seed

Both rebuild the decode from the trace alone: its prompt ids, `meta.params` and `meta.seed`; the engines seed
row r with seed + r, so a sample decoded alone with `rows=[r]` draws the same noise as in its batch.

- diffusion and voting traces (the masked-diffusion engine): the sample's start canvas is its `keep` delta
  (dVoting's later samples), everything else masked; a fork decodes with the same seed, its passes before
  `at_pass` (default: the pass that committed `pos`) as they were, and from that pass on forces `token` at `pos`
  (the model's distribution there replaced by certainty, the noise drawn as always, so it stays aligned): the
  counterfactual "had this pass taken `token` there";
- autoregressive traces (plain decoding, `decoding/autoregressive.py`): the same seed and sampling settings; a
  fork decodes freely up to `pos` (same noise, so the prefix must come out unchanged), forces `token` there (the
  sampler still draws that step's uniform, so the noise stays aligned), then decodes freely on;
- greedy speculative traces (sequence 0, the output): as plain greedy decoding, which they equal token for token.
  Sampled speculative traces (typical acceptance) and search traces (one generator for all beams) are refused.

`decode_divergence` (the divergence tab's decoder): voting's run, then a fork of one sample as sequence FORK_SEQ.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch

from decoding.divergence import FORK_SEQ, Divergence, diverge
from decoding.params import ui
from decoding.trace import RunStart, Tokens, Trace
from decoding.voting import VotingParams

ENGINE_METHODS = ("diffusion", "voting", "divergence")  # the divergence tab runs voting
AR_METHODS = ("autoregressive",)
# Greedy only: greedy speculative output is plain greedy decoding's, token for token (decoding/speculative.py), so
# its sequence 0 replays and forks as plain greedy decoding, without drafts.
SPEC_METHODS = ("speculative",)


def _start(trace: Trace) -> RunStart:
    start = next((e for e in trace.events if isinstance(e, RunStart)), None)
    if start is None:
        raise ValueError("the trace has no start event: nothing to replay")
    return start


def _engine_params(trace: Trace):
    from decoding.diffusion import DiffusionParams

    params = trace.meta.params
    if trace.meta.method == "divergence":
        return _vote_params(DivergenceParams.model_validate(params)).diffusion(1)
    if trace.meta.method == "voting":
        return VotingParams.model_validate(params).diffusion(1)
    return DiffusionParams.model_validate(params).model_copy(update={"batch": 1})


def _kept(trace: Trace, seq: int) -> dict[int, int]:
    return {p: t for e in trace.events if isinstance(e, Tokens) and e.seq == seq and e.action == "keep"
            for p, t in zip(e.pos, e.ids)}


def commit_pass(trace: Trace, seq: int, pos: int) -> int | None:
    """The sequence's own pass (1 = its first) that committed position `pos` (None: it never did)."""
    steps: list[int] = []
    for e in trace.events:
        if not isinstance(e, Tokens) or e.seq != seq or e.action == "keep":
            continue
        if not steps or steps[-1] != e.step:
            steps.append(e.step)
        if e.action in ("commit", "accept") and pos in e.pos:
            return len(steps)
    return None


def _decode(adapter, trace: Trace, seq: int, force: tuple[int, int] | None = None, at_pass: int = 1,
            task=None) -> Trace:
    """One sequence decoded alone as the trace's method did it, into a new trace (same meta, same seq id);
    `force` (pos, token): from the sequence's own pass `at_pass` (diffusion) or at position pos (autoregressive)."""
    start = _start(trace)
    out = Trace(trace.meta.model_copy(deep=True, update=adapter.numerics()))  # where this decode ran
    if task is None and trace.meta.task:
        from decoding import tasks

        task = tasks.get(trace.meta.task)
    if trace.meta.method in ENGINE_METHODS:
        from decoding.diffusion import denoise

        if start.mask_id is None or adapter.mask_id is None:
            raise ValueError("a diffusion trace needs a masked-diffusion model to replay")
        params = _engine_params(trace)
        canvas = [adapter.mask_id] * params.gen_length
        for p, t in _kept(trace, seq).items():
            if 0 <= p < params.gen_length:
                canvas[p] = t
        out.add(start.model_copy(update={"rows": 1}))
        gen = denoise(adapter, start.prompt, params, trace.meta.seed, task=task, init_canvas=[canvas], rows=[seq],
                      run_events=False, force=dict([force]) if force else None, force_from=at_pass)
    elif trace.meta.method in AR_METHODS + SPEC_METHODS:
        from decoding.autoregressive import generate

        params = _ar_params(trace, seq)
        out.add(start.model_copy(update={"rows": 1}))
        gen = generate(adapter, [list(start.prompt_ids)], params.config(), seed=trace.meta.seed + seq, seqs=[seq],
                       record_k=params.alternatives, use_cache=params.use_cache, task=task,
                       policy=_forcing(*force) if force else None)
    else:
        raise ValueError(f"replay supports the {', '.join(ENGINE_METHODS + AR_METHODS + SPEC_METHODS)} methods, not "
                         f"{trace.meta.method!r}")
    for event in gen:
        out.add(event)
    return out


def _ar_params(trace: Trace, seq: int):
    from decoding.autoregressive import ARParams

    params = trace.meta.params
    if trace.meta.method not in SPEC_METHODS:
        return ARParams.model_validate({k: v for k, v in params.items() if k in ARParams.model_fields})
    if params.get("temperature", 0) != 0 or seq != 0:
        raise ValueError("only a greedy speculative trace's output (sequence 0) replays: greedy speculative output is "
                         "plain greedy decoding's; sampled typical acceptance draws no noise plain sampling could repeat")
    return ARParams(max_new_tokens=int(params.get("max_new_tokens", 80)), temperature=0.0,
                    alternatives=int(params.get("top_k", 3)))


def _forcing(pos: int, token: int):
    """An autoregressive policy that forces `token` at answer position `pos` and leaves every other step alone."""

    def policy(rows, raw, _live, _sampler, _u):
        if rows.length - rows.prompt_length != pos:
            return raw, []
        forced = torch.full_like(raw, -torch.inf)
        forced[:, token] = 0.0
        return forced, []

    return policy


def replay_sample(adapter, trace: Trace, seq: int, *, task=None) -> tuple[Trace, Divergence]:
    """Re-run sample `seq` alone from its recorded seed and parameters; the Divergence against the original says
    whether it reproduces the trace token for token (`identical`) or where it does not, and why."""
    replayed = _decode(adapter, trace, seq, task=task)
    return replayed, diverge(trace, seq, replayed, seq, labels=("original", "replayed alone"))


def fork(adapter, trace: Trace, seq: int, pos: int, token: int, *, at_pass: int | None = None,
         task=None) -> tuple[Trace, Divergence]:
    """Force `token` at position `pos` of sequence `seq` and re-decode with the same seed; the Divergence is the new
    run against the original. Diffusion: the passes before `at_pass` (the sequence's own count; default: the pass
    that committed `pos`, `commit_pass`) are decoded as they were, from it on `pos` takes `token` (`denoise`'s
    force); autoregressive: forced when the decoder reaches `pos`."""
    if trace.meta.method in ENGINE_METHODS:
        at_pass = at_pass if at_pass is not None else commit_pass(trace, seq, pos) or 1
        forked = _decode(adapter, trace, seq, force=(pos, token), at_pass=at_pass, task=task)
    else:
        forked = _decode(adapter, trace, seq, force=(pos, token), task=task)
    d = diverge(trace, seq, forked, seq, labels=("original", f"fork (pos {pos} forced)"))
    if d.position == pos:  # the fork's own doing, whatever the distributions say
        d.cause, d.notes = "forced", [*d.evidence, *d.notes]
        d.evidence = [f"the fork forced {d.b.text_of(token)!r} at position {pos} (the original had "
                      f"{d.a.text_of(d.a.pick.token) if d.a.pick else None!r})"]
    return forked, d


# ---------------------------------------------------------------- the divergence tab: a vote, then a fork

class DivergenceParams(VotingParams):
    """A vote (voting's parameters), then optionally a fork: sample `fork_sample` re-decoded alone with the same
    seed, position `fork_position` forced to its top-k alternative no. `fork_rank` there from the pass that had
    committed it (0: nothing forced, a
    replay of the sample alone by its seed, against its batched run)."""

    fork_sample: int = ui(0, "Fork: sample to re-decode (0 = no fork)", 0, 9, 1,
                          help="After the vote, re-decode this sample with one position forced to another token "
                               "from the pass that decided it (same seed; the passes before it as they were).")
    fork_position: int = ui(0, "Fork: position to force", 0, 511, 1,
                            help="Which answer position to force (the split's position is shown above the samples).")
    fork_rank: int = ui(1, "Fork: force its alternative no. (1 = most likely; 0 = force nothing: replay alone)", 0, 20,
                        1, help="The sample's top-k entry at that position to force instead of what it took. 0: force "
                             "nothing, and see whether the sample decoded alone reproduces its batched run.")


def _vote_params(params: DivergenceParams) -> VotingParams:
    return VotingParams.model_validate(params.model_dump(exclude={"fork_sample", "fork_position", "fork_rank"}))


def decode_divergence(adapter, prompt: str, params: DivergenceParams, *, task=None, seed: int = 42,
                      should_stop: Callable[[], bool] | None = None) -> Generator:
    """The registry's decoder for the divergence tab: voting's events, then (fork_sample > 0) the fork as sequence
    FORK_SEQ with a finished Node, then voting's RunEnd (its summary gains `fork`)."""
    from decoding.diffusion import denoise
    from decoding.fold import Fold
    from decoding.record import Recorder
    from decoding.trace import Meta, RunEnd, Vocab
    from decoding.voting import decode as vote

    events, end = [], None
    for e in vote(adapter, prompt, _vote_params(params), task=task, seed=seed, should_stop=should_stop):
        if isinstance(e, RunEnd):
            end = e
            break
        events.append(e)
        yield e
    if end is None or end.stopped or params.fork_sample < 1:
        if end is not None:
            yield end
        return
    seq, pos = params.fork_sample - 1, params.fork_position
    state = Fold(Trace(Meta(model="", method="voting"), events)).latest()
    replay = params.fork_rank == 0  # force nothing: the sample alone, against its batched run (numerics)
    if seq not in state.seqs or (not replay and (not 0 <= pos < len(state.seqs[seq].ids) or not state.seqs[seq].top[pos])):
        yield end.model_copy(update={"summary": {**end.summary, "fork": f"no sample {seq + 1} / position {pos} "
                                                 "with recorded alternatives to fork"}})
        return
    canvas = [adapter.mask_id] * params.gen_length
    for p in state.seqs[seq].kept:
        canvas[p] = state.seqs[seq].ids[p]
    token, at_pass = None, 1
    if not replay:  # forced from the pass that decided the position; the passes before it as they were
        top_ids = state.seqs[seq].top[pos][0]
        token = top_ids[min(params.fork_rank, len(top_ids)) - 1]
        at_pass = commit_pass(Trace(Meta(model="", method="voting"), events), seq, pos) or 1
    rec = Recorder(adapter.token_text)
    rec.named = {i for e in events if isinstance(e, Vocab) for i in e.ids}
    # rows=[FORK_SEQ] labels the row; the seed offset makes its generator seed + seq, the sample's own
    done = yield from denoise(adapter, prompt, _vote_params(params).diffusion(1), seed + seq - FORK_SEQ, task=task,
                              init_canvas=[canvas], rows=[FORK_SEQ], run_events=False, first_step=state.step,
                              recorder=rec, should_stop=should_stop, force={pos: token} if token is not None else None,
                              force_from=at_pass)
    yield end.model_copy(update={"nfe": end.nfe + done.row_nfe[0], "stopped": done.stopped, "summary": {
        **end.summary, "fork": {"sample": seq + 1, "position": pos, "token": token, "pass": at_pass,
                                "answer": done.answers[0]}}})
