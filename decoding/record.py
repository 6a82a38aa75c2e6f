"""The recorder: turns a decoder's per-step tensors into trace events, keeping the model's device busy.

A decoder's step is a pure tensor function; what it hands the recorder is small: [rows, positions] and
[rows, positions, k] tensors (chosen ids, which positions were proposed / committed, confidence, entropy,
top-k). `Recorder.stage` packs them into one float32 tensor on the device and starts one non-blocking copy
into pinned host memory; the decoder launches its next forward pass and only then asks the staged step for
its events (`StagedStep.events()`), so building events overlaps the model's work on a GPU. Ids are exact in
float32 (< 2**24). Token text is named once per id (`Vocab` events), floats rounded to `PRECISION`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from decoding.trace import PRECISION, Tokens, Vocab


class Recorder:
    """One per run: names each token id once (shared by every decode of the run, e.g. dVoting's samples)."""

    def __init__(self, token_text: Callable[[list[int]], list[str]]):
        self.token_text = token_text
        self.named: set[int] = set()

    def name(self, ids: Iterable[int]) -> list[Vocab]:
        """A Vocab event for the ids not named yet (none when all are)."""
        new = sorted({int(i) for i in ids} - self.named)
        if not new:
            return []
        self.named.update(new)
        return [Vocab(ids=new, texts=[str(t) for t in self.token_text(new)])]

    def stage(self, step: int, seqs: list[int], block: int | None, x0: torch.Tensor, proposed: torch.Tensor,
              committed: torch.Tensor, conf: torch.Tensor, entropy: torch.Tensor, top_ids: torch.Tensor,
              top_p: torch.Tensor, noise: torch.Tensor | None = None) -> StagedStep:
        """Start copying one step to the host. x0 / proposed / committed / conf / entropy: [A, L];
        top_ids / top_p: [A, L, k]. `proposed`: positions whose prediction is recorded (still masked before
        the step); `committed`: positions fixed at this step (their value is x0). `noise` [A, L] (optional): the
        sampling draw that chose x0, recorded on the `commit` deltas (one more packed column)."""
        columns = [x0[..., None].float(), proposed[..., None].float(), committed[..., None].float(),
                   conf[..., None].float(), entropy[..., None].float(), top_ids.float(), top_p.float()]
        packed = torch.cat(columns + ([noise[..., None].float()] if noise is not None else []), -1)
        if packed.is_cuda:
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = packed, None
        return StagedStep(self, step, seqs, block, top_ids.shape[-1], host, done, noise is not None)


def _split(values: list, counts: list[int]) -> list[list]:
    out, at = [], 0
    for n in counts:
        out.append(values[at:at + n])
        at += n
    return out


@dataclass
class StagedStep:
    recorder: Recorder
    step: int
    seqs: list[int]
    block: int | None
    k: int
    host: torch.Tensor  # [A, L, 5 + 2k (+ 1 with noise)]
    done: torch.cuda.Event | None
    noisy: bool = False  # the last column holds the sampling noise

    def events(self) -> list:
        """Vocab for new ids, then per row: `propose` (the predictions at still-masked positions) and `commit`.
        Each field is gathered for all rows at once and split by row (a handful of numpy calls per step)."""
        if self.done is not None:
            self.done.synchronize()
        k = self.k
        arr = self.host.numpy().astype(np.float64)  # round in float64: 0.123, not 0.12300000339
        proposed, committed = arr[..., 1] > 0.5, arr[..., 2] > 0.5
        n_prop, n_comm = proposed.sum(1).tolist(), committed.sum(1).tolist()
        rows_p = arr[proposed]  # [sum n_prop, 5 + 2k], rows in order
        rows_c = arr[committed]
        pos_p = _split(np.nonzero(proposed)[1].tolist(), n_prop)
        pos_c = _split(np.nonzero(committed)[1].tolist(), n_comm)
        ids_p = rows_p[:, 0].astype(np.int64)
        top_ids = rows_p[:, 5:5 + k].astype(np.int64)
        ids_c = rows_c[:, 0].astype(np.int64)
        out: list = self.recorder.name(np.unique(np.concatenate([ids_p, ids_c, top_ids.ravel()])).tolist())
        fields = zip(_split(ids_p.tolist(), n_prop), _split(np.round(rows_p[:, 3], PRECISION).tolist(), n_prop),
                     _split(np.round(rows_p[:, 4], PRECISION).tolist(), n_prop), _split(top_ids.tolist(), n_prop),
                     _split(np.round(rows_p[:, 5 + k:5 + 2 * k], PRECISION).tolist(), n_prop),
                     _split(ids_c.tolist(), n_comm))
        noise = (_split(np.round(rows_c[:, 5 + 2 * k], PRECISION).tolist(), n_comm) if self.noisy
                 else [None] * len(self.seqs))
        # The values come from our own tensors: model_construct skips re-validating them (a quarter of the time).
        for seq, pp, pc, (ids, conf, ent, tids, tp, cids), g in zip(self.seqs, pos_p, pos_c, fields, noise):
            if pp:
                out.append(Tokens.model_construct(seq=seq, step=self.step, action="propose", pos=pp, ids=ids, conf=conf,
                                                  entropy=ent, top_ids=tids, top_p=tp, block=self.block))
            if pc:
                extra = {"noise": g} if g is not None else {}
                out.append(Tokens.model_construct(seq=seq, step=self.step, action="commit", pos=pc, ids=cids,
                                                  block=self.block, **extra))
        return out
