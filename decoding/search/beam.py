"""What every search strategy shares: the Beam (a path of steps with their PRM scores) and the Tree that records
each expansion as `node` events and each choice as a `selection`, with the real cost (tokens, passes, PRM calls).

Tree events per iteration (one scrubber frame each): a `tokens` commit per new node (seq = node id, step = the
run-wide forward pass at which the iteration's generation ended), then one `node` per candidate with its status
(kept / pruned / finished / duplicate), its step's PRM score and, when finished, why (`stop`), then a
`selection` (the candidates, their aggregated scores, the best answer so far).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from decoding.prm import PRM
from decoding.record import Recorder
from decoding.search.config import SearchParams
from decoding.search.expand import Step, expand
from decoding.selection import aggregate, pick
from decoding.trace import Node, RunEnd, RunStart, Selection, Tokens, r


@dataclass
class Beam:
    """A partial or complete solution: its steps (delimiters left out), their PRM scores, its latest node."""

    ids: list[int] = field(default_factory=list)  # generated token ids after the prompt
    text: str = ""  # the generated text, delimiters included
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    node: int | None = None  # id of its latest node (None: the root, nothing generated)
    tokens: int = 0  # tokens generated along this path
    stop: str | None = None  # set once complete: "eos" | "length" | "empty" | "answer"
    last: Step | None = None  # the step that made this beam (for the tokens event)

    def score(self, how: str) -> float:
        return aggregate(self.scores, how)


def content(step: Step, delimiter: str) -> str:
    """A step's text without its delimiter: what the PRM reads and the tree shows."""
    return step.text[:-len(delimiter)] if step.stop == "step" and step.text.endswith(delimiter) else step.text


def grow(parent: Beam, step: Step, delimiter: str, tokenizer) -> Beam:
    """The child of `parent` after `step` (stop set for EOS, a length stop and an empty step)."""
    body = content(step, delimiter)
    ids = step.ids if tokenizer.decode(step.ids, skip_special_tokens=True) == step.text or step.stop == "eos" \
        else tokenizer.encode(step.text, add_special_tokens=False)  # text cut inside a token: re-encode it
    stop = None if step.stop == "step" else step.stop
    if stop is None and not body.strip():
        stop = "empty"
    return replace(parent, ids=parent.ids + [t for t in ids], text=parent.text + step.text, steps=[*parent.steps, body],
                   scores=list(parent.scores), tokens=parent.tokens + len(step.ids), stop=stop, last=step)


class Tree:
    """One run's bookkeeping: node ids, the events, the cost."""

    def __init__(self, adapter, prm: PRM, prompt: str, params: SearchParams, task, seed: int):
        self.adapter, self.prm, self.prompt, self.params, self.task = adapter, prm, prompt, params, task
        self.prompt_ids = list(adapter.encode_prompt(prompt))
        self.delimiter = params.step_delimiter(getattr(task, "name", None))
        self.recorder = Recorder(adapter.token_text)
        self.generator = torch.Generator(device=adapter.device).manual_seed(seed)
        self.next_id = 0
        self.passes = 0  # policy forward passes (a batched pass counts once)
        self.tokens = 0  # tokens generated, every row (pruned ones too)
        self.round = 0
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------ model calls

    def expand(self, beams: Sequence[Beam], *, final: bool = False, temperature: float | None = None) -> list[Beam]:
        """One step for each beam (a copy each: tiled beams get their own children). final: generate to EOS."""
        p = self.params
        steps, passes = expand(self.adapter, [self.prompt_ids + b.ids for b in beams],
                               delimiter=None if final else self.delimiter,
                               temperature=p.temperature if temperature is None else temperature, top_p=p.top_p,
                               max_tokens=p.max_tokens, generator=self.generator, one_by_one=not p.batched)
        self.passes += passes
        self.tokens += sum(len(s.ids) for s in steps)
        children = [grow(b, s, self.delimiter, self.adapter.tokenizer) for b, s in zip(beams, steps, strict=True)]
        for child in children:
            child.node = self._new_id()
        return children

    def score(self, beams: Sequence[Beam]) -> None:
        """Every beam's steps scored in one PRM call (a causal PRM: earlier steps keep their scores)."""
        todo = [b for b in beams if b.steps]
        for b, s in zip(todo, self.prm.score([self.prompt] * len(todo), [b.steps for b in todo]), strict=True):
            b.scores = [float(x) for x in s]

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # ------------------------------------------------------------ events

    def start(self) -> list:
        return [RunStart(method="search", prompt=self.prompt, prompt_ids=self.prompt_ids, rows=self.params.n,
                         length=self.params.max_tokens), *self.recorder.name(self.prompt_ids)]

    def answer(self, beam: Beam) -> str | None:
        return self.task.extract_answer(beam.text) if self.task is not None else None

    def has_answer(self, beam: Beam) -> bool:
        """A final answer is written (DVTS prunes there): the zoo's `#<int>` line, else `boxed{` as the reference."""
        if getattr(self.task, "name", None) == "zoo":
            return self.answer(beam) is not None
        return "boxed{" in beam.text

    def nodes(self, beams: Sequence[Beam], parents: Sequence[int | None], statuses: Sequence[str]) -> list:
        """The iteration's tokens deltas, then its nodes."""
        out: list = []
        for b in beams:
            ids = b.last.ids if b.last is not None else []
            out += self.recorder.name(ids)
            out.append(Tokens(seq=b.node, step=max(self.passes, 1), action="commit", pos=list(range(len(ids))),
                              ids=list(ids)))
        for b, parent, status in zip(beams, parents, statuses, strict=True):
            done = status == "finished" or b.stop is not None
            out.append(Node(id=b.node, parent=parent, seq=b.node, step=max(self.passes, 1), status=status,
                            text=b.steps[-1] if b.steps else "", answer=self.answer(b) if done else None,
                            score=r(b.scores[-1]) if b.scores else None, nfe=len(b.last.ids) if b.last else 0,
                            stop=b.stop))
        return out

    def selection(self, beams: Sequence[Beam], answer: str | None, reason: str | None = None,
                  final: bool = False) -> Selection:
        self.round += 1
        how = self.params.aggregation
        answers = [self.answer(b) for b in beams]
        valid = [a for a in answers if a is not None]
        return Selection(round=self.round, nodes=[b.node for b in beams], answers=answers,
                         tally=Counter(valid).most_common() if final else [],
                         scores=[r(b.score(how)) for b in beams], answer=answer, reason=reason, nfe=self.passes)

    def end(self, answer: str | None, stopped: bool, outputs: Sequence[Beam], chosen: int | None,
            reason: str | None) -> RunEnd:
        return RunEnd(nfe=self.passes, seconds=round(time.perf_counter() - self.t0, 4), answer=answer, stopped=stopped,
                      summary={"tokens": self.tokens, "passes": self.passes, "prm_calls": self.prm.calls,
                               "prm_passes": self.prm.passes, "stop_reason": reason,
                               "outputs": [b.node for b in outputs],
                               "chosen": outputs[chosen].node if chosen is not None else None,
                               "completion_tokens": [b.tokens for b in outputs]})

    def finish(self, outputs: Sequence[Beam], rule: str, stopped: bool, reason: str | None) -> list:
        """The final selection over the outputs (aggregated with params.aggregation), then RunEnd."""
        how = self.params.aggregation
        answers = [self.answer(b) for b in outputs]
        chosen = pick(answers, [b.score(how) for b in outputs], rule) if outputs else None
        answer = answers[chosen] if chosen is not None else None
        events = [self.selection(outputs, answer, reason=f"{reason}; pick: {rule}", final=True)] if outputs else []
        return [*events, self.end(answer, stopped, outputs, chosen, reason)]
