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
    def __init__(self, token_text: Callable[[list[int]], list[str]], top_k: int):
        self.token_text, self.top_k = token_text, top_k
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
              top_p: torch.Tensor) -> StagedStep:
        """Start copying one step to the host. x0 / proposed / committed / conf / entropy: [A, L];
        top_ids / top_p: [A, L, k]. `proposed`: positions whose prediction is recorded (still masked before
        the step); `committed`: positions fixed at this step (their value is x0)."""
        packed = torch.cat([x0[..., None].float(), proposed[..., None].float(), committed[..., None].float(),
                            conf[..., None].float(), entropy[..., None].float(), top_ids.float(), top_p.float()], -1)
        if packed.is_cuda:
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = packed, None
        return StagedStep(self, step, seqs, block, host, done)


@dataclass
class StagedStep:
    recorder: Recorder
    step: int
    seqs: list[int]
    block: int | None
    host: torch.Tensor  # [A, L, 5 + 2k]
    done: torch.cuda.Event | None

    def events(self) -> list:
        """Vocab for new ids, then per row: `propose` (the predictions at still-masked positions) and `commit`."""
        if self.done is not None:
            self.done.synchronize()
        k = self.recorder.top_k
        arr = self.host.numpy().astype(np.float64)  # round in float64: 0.123, not 0.12300000339
        x0 = arr[..., 0].astype(np.int64)
        proposed, committed = arr[..., 1] > 0.5, arr[..., 2] > 0.5
        conf, ent = np.round(arr[..., 3], PRECISION), np.round(arr[..., 4], PRECISION)
        top_ids = arr[..., 5:5 + k].astype(np.int64)
        top_p = np.round(arr[..., 5 + k:5 + 2 * k], PRECISION)
        ids_used = np.concatenate([x0[proposed | committed], top_ids[proposed].ravel()])
        out: list = self.recorder.name(np.unique(ids_used).tolist())
        for a, seq in enumerate(self.seqs):
            pos = np.flatnonzero(proposed[a])
            if len(pos):
                out.append(Tokens(seq=seq, step=self.step, action="propose", pos=pos.tolist(), ids=x0[a, pos].tolist(),
                                  conf=conf[a, pos].tolist(), entropy=ent[a, pos].tolist(),
                                  top_ids=top_ids[a, pos].tolist(), top_p=top_p[a, pos].tolist(), block=self.block))
            pos = np.flatnonzero(committed[a])
            if len(pos):
                out.append(Tokens(seq=seq, step=self.step, action="commit", pos=pos.tolist(), ids=x0[a, pos].tolist(),
                                  block=self.block))
        return out
