"""Convert a version-1 trace (full `step` snapshots) to version 2 on load.

Version 1 repeated every row and position at every step. Here each snapshot becomes deltas: the
positions still masked before the step get a `propose` (guess, confidence, entropy, top-k), the positions
committed at the step a `commit`, and positions a sample started with (dVoting's kept tokens) a `keep`.
Version 1 named tokens by text only in places (top-k), so ids are re-assigned per distinct text; the result
replays and scrubs like a version-2 trace, and is validated like one afterwards.
"""

from __future__ import annotations

from typing import Any

from decoding.trace import TraceError, r

_METHOD = {"diffusion": "diffusion", "majority": "voting", "dvoting": "voting", "dvoting_batched": "voting"}


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


class _Converter:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.out: list[dict] = []
        self.step = 0
        self.masked: dict[int, list[bool]] = {}  # per sample: masked after its latest step

    def name(self, texts: list) -> list[int]:
        new = [str(t) for t in dict.fromkeys(str(t) for t in texts) if str(t) not in self.ids]
        for t in new:
            self.ids[t] = len(self.ids)
        if new:
            self.out.append({"kind": "vocab", "ids": [self.ids[t] for t in new], "texts": new})
        return [self.ids[str(t)] for t in texts]

    def start(self, e: dict) -> None:
        prompt_ids = self.name(list(e.get("prompt_tokens") or []))
        self.out.append({"kind": "start", "method": _METHOD.get(str(e.get("method")), str(e.get("method"))),
                         "prompt": e["prompt"], "prompt_ids": prompt_ids, "rows": e.get("batch", 1),
                         "length": e.get("gen_length", 0)})

    def snapshot(self, e: dict) -> None:
        self.step += 1
        for a, sample in enumerate(e["rows"]):
            tokens, masked, committed = e["tokens"][a], e["masked"][a], set(e["committed"][a])
            before = self.masked.get(sample)
            if before is None:  # first step of this sample: what it did not decode, it started with
                kept = [p for p, m in enumerate(masked) if not m and p not in committed]
                if kept:
                    self.out.append({"kind": "tokens", "seq": sample, "step": self.step - 1, "action": "keep",
                                     "pos": kept, "ids": self.name([tokens[p] for p in kept])})
                before = [p not in kept for p in range(len(masked))]
            pos = [p for p, m in enumerate(before) if m]
            if pos:
                topk = [e["topk"][a][p] if p < len(e["topk"][a]) else [] for p in pos]
                self.out.append({"kind": "tokens", "seq": sample, "step": self.step, "action": "propose", "pos": pos,
                                 "ids": self.name([tokens[p] for p in pos]),
                                 "conf": [r(e["confidence"][a][p]) for p in pos],
                                 "entropy": [r(e["entropy"][a][p]) for p in pos],
                                 "top_ids": [self.name([alt[0] for alt in top]) for top in topk],
                                 "top_p": [[r(alt[1]) for alt in top] for top in topk], "block": e.get("block")})
            done = sorted(committed)
            if done:
                self.out.append({"kind": "tokens", "seq": sample, "step": self.step, "action": "commit", "pos": done,
                                 "ids": self.name([tokens[p] for p in done]), "block": e.get("block")})
            self.masked[sample] = list(masked)

    def done(self, e: dict) -> None:
        row_nfe = e.get("row_nfe") or []
        for i, sample in enumerate(e["rows"]):
            self.out.append({"kind": "node", "id": sample, "seq": sample, "step": self.step, "status": "finished",
                             "text": e["texts"][i], "answer": _s(e["answers"][i]),
                             "nfe": row_nfe[i] if i < len(row_nfe) else None})
            self.masked.pop(sample, None)  # a sample decoded again later starts afresh

    def round(self, e: dict) -> None:
        letters = {"kept": "k", "agree": "a", "disagree": "d", "remasked": "r"}
        tally = [(str(a), int(n)) for a, n in e.get("tally", [])]
        self.out.append({"kind": "selection", "round": e["round"], "nodes": e["samples"],
                         "answers": [_s(a) for a in e["answers"]], "tally": tally,
                         "answer": _s(e.get("final_answer")) if e.get("stop_reason") else (tally[0][0] if tally else None),
                         "reason": e.get("stop_reason"), "nfe": e.get("nfe_total", 0),
                         "agreement": ["".join(letters.get(str(c), "d") for c in row) for row in e.get("grid", [])]})

    def end(self, e: dict) -> None:
        self.out.append({"kind": "end", "nfe": e["nfe"], "seconds": e["seconds"], "answer": _s(e.get("answer")),
                         "stopped": e.get("stopped", False), "summary": e.get("summary", {})})


def convert(data: dict) -> dict:
    """A version-1 trace dict as a version-2 trace dict (validated by the caller)."""
    meta = data.get("meta")
    events = data.get("events")
    if not isinstance(meta, dict) or not isinstance(events, list):
        raise TraceError("a trace needs a 'meta' object and an 'events' list")
    conv = _Converter()
    handlers = {"start": conv.start, "step": conv.snapshot, "done": conv.done, "round": conv.round, "end": conv.end}
    for i, e in enumerate(events):
        kind = e.get("kind") if isinstance(e, dict) else None
        if kind not in handlers:
            raise TraceError(f"events[{i}]: unknown event kind {str(kind)[:40]!r} in a version-1 trace")
        try:
            handlers[kind](e)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise TraceError(f"events[{i}] ({kind}): malformed version-1 event ({type(err).__name__}: "
                             f"{str(err)[:80]})") from None
    method = str(meta.get("method", "diffusion"))
    new_meta = {"model": str(meta.get("model", "?")), "method": _METHOD.get(method, method),
                "params": meta.get("params") if isinstance(meta.get("params"), dict) else {},
                "seed": meta.get("seed", 0) if isinstance(meta.get("seed"), int) else 0,
                "expected": _s(meta.get("expected")),
                "versions": {str(k): str(v) for k, v in (meta.get("versions") or {}).items()}}
    return {"format": data["format"], "version": 2, "meta": new_meta, "events": conv.out}
