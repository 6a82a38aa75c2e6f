"""The divergence tab's views (the view-module contract of viz/panels.py): two samples of a run side by side with
the split marked, both top-k lists there, and the cause with its evidence (decoding/divergence.py).

Pure: reads a decoding.fold.State and the trace's Meta; no torch, no gradio. The samples are picked by the view
options `sample_a` / `sample_b` (1-based), so the diff follows the scrubber: at an early frame it shows where the
canvases part so far. Every token text, answer and evidence line is escaped.
"""

from __future__ import annotations

import html

from decoding.divergence import FORK_SEQ, PAIR_FILES, Divergence, Side, diverge_states, recount, sequences
from decoding.fold import State
from decoding.trace import Meta, Node
from viz.panels import Option, Panel
from viz.tokens import answer_text as _hash
from viz.tokens import label
from viz.voting_view import progress as voting_progress

PANELS = [
    Panel("split", "html", "Where the two samples part",
          placeholder='<div class="dl-wait">Run, then pick two samples: the first position where they differ is '
                      "marked in both.</div>"),
    Panel("cause", "html", "Why they part", placeholder=""),
    Panel("topk", "html", "What the model said at the split", placeholder=""),
    Panel("fork", "html", "Fork: what if a sample had taken another token",
          placeholder='<div class="dl-wait">Set the three Fork parameters (under the vote\'s settings) and Run: the '
                      "sample is re-decoded with the same seed and that position forced from the pass that decided "
                      "it.</div>"),
]
OPTIONS = [
    Option("sample_a", 1, "Sample A", minimum=1),
    Option("sample_b", 2, "Sample B", minimum=1),
]
CAUSE_WORDS = {
    "different context": "the two samples had committed different tokens before this point, so the model saw "
                         "different inputs",
    "sampling": "the model saw the same input, and the random draw picked a token that was not the most likely",
    "near-tie": "the model saw the same input and its top two tokens were almost equally likely: a tiny "
                "difference in the numbers decides",
    "numerics": "the model saw the same input and drew the same noise, yet its probabilities differ: the "
                "computation itself differs (batch shape, kernels, precision)",
    "forced": "the token was forced here (a fork)",
    "unknown": "the trace does not record enough to tell",
}
BOX = "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:1.7;overflow-wrap:anywhere"
SPLIT = "background:#6b21a8;color:#fff;border-radius:3px;padding:0 3px"
DIFFER = "background:#f8cf8c;color:#111;border-radius:3px;padding:0 2px"


def answer_text(answer: object) -> str:
    """'#42', or 'no answer' (never '#None': a sample still decoding, or one that wrote no answer line)."""
    return "no answer" if answer is None else _hash(answer)


def _pick(state: State, sample: float | None, default: int) -> int | None:
    seqs = sequences(state, forks=False)
    if not seqs:
        return None
    i = int(sample) - 1 if sample is not None and sample >= 1 else default
    return seqs[min(max(i, 0), len(seqs) - 1)]


def analyse(state: State, meta: Meta | None, sample_a: float | None = 1, sample_b: float | None = 2
            ) -> Divergence | str:
    """The divergence of the two picked samples, or a message (escaped HTML) saying why there is none yet."""
    a, b = _pick(state, sample_a, 0), _pick(state, sample_b, 1)
    if a is None or meta is None:
        return '<div class="dl-wait">No sample has committed a token yet.</div>'
    if a == b:
        n = len(sequences(state, forks=False))
        return (f'<div class="dl-wait">Pick two different samples (this run has {n} so far'
                f'{"; run more samples (K) to compare two" if n < 2 else ""}).</div>')
    d = diverge_states(state, meta, a, state, meta, b)
    d.a.source, d.b.source = who(meta, a), who(meta, b)
    return d


def who(meta: Meta, seq: int) -> str:
    """A sequence's name for people: "sample 3", "the fork", or (two uploaded traces, decoding.divergence.pair)
    "sample 1 of the second file (voting, seed 43)". Escaped where shown."""
    sources = meta.params.get("pair_sources")
    if isinstance(sources, list) and 0 <= seq < len(sources) and isinstance(src := sources[seq], dict):
        seed = f", seed {src['seed']}" if isinstance(src.get("seed"), int) else ""
        number = src["seq"] + 1 if isinstance(src.get("seq"), int) else "?"
        return f"sample {number} of the {PAIR_FILES[src.get('file') == 1]} ({str(src.get('method'))[:60]}{seed})"
    return "the fork" if seq == FORK_SEQ else f"sample {seq + 1}"


def render(state: State, meta: Meta | None, *, plots: bool = True, sample_a: float | None = 1,  # noqa: ARG001 -- the contract's flag; no plots here
           sample_b: float | None = 2) -> dict[str, object]:
    d = analyse(state, meta, sample_a, sample_b)
    fork = fork_html(state, meta)
    if isinstance(d, str):
        return {"split": d, "topk": "", "cause": "", "fork": fork}
    pair = meta is not None and "pair_sources" in meta.params
    return {"split": split_html(d, fork_hint=not pair, settings=meta.params.get("pair_settings") if pair else None),
            "topk": topk_html(d), "cause": cause_html(d), "fork": fork}


def fork_html(state: State, meta: Meta | None) -> str:
    """The fork (sequence FORK_SEQ) against the sample it re-decoded: the forced token, both answers, what changed.
    Until the fork's node arrives (a live or scrubbed frame) it is still decoding: no answer yet, only what it has
    committed."""
    info = state.end.summary.get("fork") if state.end is not None else None
    if isinstance(info, str):  # the decoder's reason for not forking (e.g. no such sample or position)
        return f'<div class="dl-div-fork"><div class="dl-head">No fork: {html.escape(info)}</div></div>'
    if meta is not None and "pair_sources" in meta.params:
        return ('<div class="dl-wait">Two uploaded traces: no model here, so no fork (the Divergence tab forks a '
                "sample of its own vote).</div>")
    if FORK_SEQ not in sequences(state) or meta is None:
        return ""
    sample = int(info["sample"]) - 1 if isinstance(info, dict) else int(meta.params.get("fork_sample", 1) or 1) - 1
    if sample not in sequences(state, forks=False):
        return ""
    d = diverge_states(state, meta, sample, state, meta, FORK_SEQ)
    d.a.source, d.b.source = who(meta, sample), who(meta, FORK_SEQ)
    node = next((n for n in state.nodes.values() if n.seq == FORK_SEQ), None)
    if meta.params.get("fork_rank") == 0:
        return _replay_html(d, sample, node, bool(meta.params.get("batched")))
    pos = int(meta.params.get("fork_position", 0) or 0)
    was, now = d.a.tokens[pos] if pos < len(d.a.tokens) else None, d.b.tokens[pos] if pos < len(d.b.tokens) else None
    changed = [s.pos for s in d.splits if s.pos != pos and s.token_b is not None]
    at = info.get("pass") if isinstance(info, dict) else None
    when = (f"from its pass {at} on (passes before it as they were)" if isinstance(at, int) and at > 1 else
            "from its first pass")  # (traces from before mid-run forks say no pass: pinned from the start)
    head = (f"Fork of sample {sample + 1}: position {pos} forced to <b>{label(d.b.text_of(now))}</b> {when} (it "
            f"had {label(d.a.text_of(was))}), same seed. ")
    if node is None:  # mid-run: uncommitted positions are not changes, and there is no answer yet
        left = sum(t is None for t in d.b.tokens)
        head += (f"<b>Still decoding</b>: {left} position(s) to go; {len(changed)} committed position(s) differ "
                 "so far")
    else:
        stopped = "" if node.status == "finished" else "<b>Stopped before it finished</b>: "
        head += (f"{stopped}New answer <b>{html.escape(answer_text(d.b.answer))}</b> (was "
                 f"{html.escape(answer_text(d.a.answer))}); {len(changed)} other position(s) changed")
        head += _vote_line(state, meta, sample, d.b.answer) if not stopped else ""
    d.b.name, d.a.name = "fork", "original"
    marked = Divergence(**{**d.__dict__, "position": pos})
    return (f'<div class="dl-div-fork"><div class="dl-head">{head}</div>{_row(marked, d.a)}{_row(marked, d.b)}'
            "</div>")


def _replay_html(d: Divergence, sample: int, node: Node | None, batched: bool) -> str:
    """Sample `sample` re-decoded alone by its seed (nothing forced) against its run in the vote."""
    head = (f"Replay of sample {sample + 1} alone, by its seed (the vote decoded it "
            f"{'in a batch with others' if batched else 'as one row, after the samples before it'}): ")
    if node is None:
        head += f"<b>still decoding</b>, {sum(t is None for t in d.b.tokens)} position(s) to go"
    elif node.status != "finished":
        head += "<b>stopped before it finished</b>"
    elif d.identical:
        head += f"<b>reproduces it token for token</b> ({len(d.a.tokens)} tokens, answer {html.escape(answer_text(d.b.answer))})"
    else:
        head += (f"<b>differs</b> from position {d.position} on ({len(d.splits)} position(s)); cause at the split: "
                 f"<b>{html.escape(d.cause)}</b>: " + html.escape("; ".join(d.evidence)))
    d.a.name, d.b.name = "in the vote", "alone"
    return f'<div class="dl-div-fork"><div class="dl-head">{head}</div>{_row(d, d.a)}{_row(d, d.b)}</div>'


def _vote_line(state: State, meta: Meta, sample: int, answer: str | None) -> str:
    """The vote with the fork's answer in the sample's place: does the tally, or the winner, change?"""
    sel = state.selection
    if sel is None or sample not in sel.nodes:
        return ""
    before, after = recount(sel.answers, sel.nodes, sample, answer)

    def line(t: list[tuple[str, int]]) -> str:
        return " · ".join(f"{html.escape(answer_text(a))} ×{n}" for a, n in t) or "no answers"

    was, now = before[0][0] if before else None, after[0][0] if after else None
    verdict = (f"the vote's answer stays <b>{html.escape(answer_text(now))}</b>" if was == now else
               f"the vote's answer changes from {html.escape(answer_text(was))} to <b>{html.escape(answer_text(now))}</b>")
    later = (" The later samples are not re-decoded (in dVoting they started from the earlier samples' agreement)."
             if meta.params.get("method") == "dvoting" else "")
    return (f'<div class="dl-div-vote">The vote: {line(before)} → with the fork in sample {sample + 1}\'s place: '
            f"{line(after)}: {verdict}.{later}</div>")


def progress(state: State, meta: Meta | None) -> str:
    return voting_progress(state, meta)


def _row(d: Divergence, side: Side) -> str:
    differ = {s.pos for s in d.splits}
    end = len(side.tokens)  # a trailing run of one token (EOS padding) is shown once, with its count
    while end > 1 and side.tokens[end - 2] == side.tokens[-1] and (d.position is None or end - 2 > d.position) \
            and end - 2 not in differ:
        end -= 1
    chips = []
    for p, text in enumerate(side.texts[:end]):
        shown = "▒" if side.tokens[p] is None else label(text)
        style = SPLIT if p == d.position else DIFFER if p in differ else ""
        chips.append(f'<span style="{style}" title="position {p}">{shown}</span>' if style else shown)
    if end < len(side.tokens):
        chips.append(f' <span style="color:#555">×{len(side.tokens) - end + 1}</span>')
    answer = html.escape(answer_text(side.answer))
    return (f'<div style="margin:4px 0"><b>{side.name}</b> · {html.escape(side.source)} · answer <b>{answer}</b>'
            f'<div class="dl-div-row" style="{BOX}">{"".join(chips)}</div></div>')


def split_html(d: Divergence, fork_hint: bool = True, settings: object = None) -> str:
    """The two rows with the split marked; `settings`: two uploaded runs' differing settings, [name, a, b] each."""
    if d.identical:
        head = f"No split: the two samples commit the same {len(d.a.tokens)} tokens."
    else:
        pa, pb = d.a.pick, d.b.pick
        head = (f"Split at <b>position {d.position}</b>, pass {d.pass_no} (A decided it at its pass "
                f"{pa.pass_no if pa else '?'}, B at its pass {pb.pass_no if pb else '?'}) · "
                f"{len(d.splits)} position(s) differ")
        if d.answer_pass is not None:
            head += f" · the answers part at pass {d.answer_pass}"
        head += f" · cause: <b>{html.escape(d.cause)}</b>"
        rank = next((i + 1 for i, (t, _, _) in enumerate(d.a.top) if t == d.b.tokens[d.position]), None)
        if rank is not None and fork_hint:  # (two uploaded traces: no model, no fork)
            head += (f"<div>To fork here: Fork sample {d.a.seq + 1}, position {d.position}, alternative {rank} "
                     f"(<b>{label(d.b.text_of(d.b.tokens[d.position]))}</b>, what {d.b.name} took)</div>")
    if isinstance(settings, list):
        shown = "; ".join(f"{html.escape(str(k))}: {html.escape(str(x))} → {html.escape(str(y))}"
                          for k, x, y in (r for r in settings if isinstance(r, list) and len(r) == 3))
        head += f"<div>Settings that differ (first file → second): {shown or 'none'}</div>"
    legend = (f'<span style="{SPLIT}">split</span> <span style="{DIFFER}">differs</span> ▒ not committed yet')
    return (f'<div class="dl-divergence"><div class="dl-head">{head}</div>{_row(d, d.a)}{_row(d, d.b)}'
            f'<div style="font-size:12px;color:#555;margin-top:4px">{legend}</div></div>')


def _topk(side: Side) -> str:
    """One side's top-k at the split as rows of spans (the views emit div / span / b / code only)."""
    if side.pick is None:
        return f"<div><b>{side.name}</b>: no token at the split</div>"
    rows = []
    grid = "display:grid;grid-template-columns:2.5em 9.5em 90px;align-items:center;gap:0 6px"
    for t, text, p in side.top:
        chosen = t == side.pick.token
        bar = f'<span style="display:inline-block;background:#6b21a8;height:8px;width:{max(1, round(p * 80))}px"></span>'
        rows.append(f'<div class="dl-div-alt" style="{grid}{";font-weight:700" if chosen else ""}">'
                    f'<span style="{BOX}">{label(text)}</span><span>{p:.3f}{" ◀ taken" if chosen else ""}</span>'
                    f"{bar}</div>")
    if side.rank is None:
        conf = "?" if side.pick.conf is None else f"{side.pick.conf:.3f}"
        rows.append(f'<div class="dl-div-alt" style="font-weight:700"><span style="{BOX}">'
                    f"{label(side.text_of(side.pick.token))}</span> {conf} ◀ taken (outside the top-k)</div>")
    if side.pick.noise is not None:
        rows.append(f"<div>Gumbel draw of the taken token: g = {side.pick.noise:+.2f}</div>")
    ent = "?" if side.pick.entropy is None else f"{side.pick.entropy:.3f} nats"
    margin = "?" if side.margin is None else f"{side.margin:.3f}"
    return (f'<div class="dl-div-topk" style="flex:1 1 220px;min-width:0"><b>{side.name}</b> · {html.escape(side.source)}'
            f' · entropy {ent} · top-2 margin {margin}<div style="margin-top:4px">'
            f'{"".join(rows) or "<div>not recorded</div>"}</div></div>')


def topk_html(d: Divergence) -> str:
    if d.identical:
        return ""
    return f'<div style="display:flex;gap:16px;flex-wrap:wrap">{_topk(d.a)}{_topk(d.b)}</div>'


def cause_html(d: Divergence) -> str:
    if d.identical:
        return ""
    item = '<div style="margin:2px 0 2px 1em">• '
    items = "".join(f"{item}{html.escape(e)}</div>" for e in d.evidence)
    notes = "".join(f"{item}<b>also:</b> {html.escape(n)}</div>" for n in d.notes)
    only = ""
    for s, o in ((d.a, d.b), (d.b, d.a)):
        if s.only:
            shown = " ".join(f"{p}:{label(s.text_of(s.tokens[p]))}" for p in s.only[:16])
            only += (f"{item}{s.name} had committed, {o.name} had not: <span style=\"{BOX}\">{shown}"
                     f"{' …' if len(s.only) > 16 else ''}</span></div>")
    words = html.escape(CAUSE_WORDS.get(d.cause, ""))
    return (f'<div class="dl-div-cause"><div style="font-size:16px"><b>{html.escape(d.cause)}</b>: {words}</div>'
            f"{items}{only}{notes}</div>")
