"""Data-parallel benchmark loops with accelerate: shard work items, run each, gather records in order.

`accelerate launch [--num_processes N] -m decoding.bench <name> ...` starts N processes; `map_items` gives
each its slice (`split_between_processes`), runs `fn(index, item)` on it and gathers the per-item records
(`gather_object`) back into the original order on EVERY process (so each can summarise; only the main
process prints and writes). Without `accelerate launch` there is one process and this is a plain loop.
Results equal a single-process run's as long as `fn` seeds per item (by index), never across items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm


def state() -> PartialState:
    """The process state: `.device` (cuda:<local rank> or cpu), `.is_main_process`, `.num_processes`.
    Without CUDA, processes started by a launcher join over gloo (accelerate needs `cpu=True` to see them)."""
    return PartialState(cpu=not torch.cuda.is_available())


def map_items(fn: Callable[[int, Any], list], items: Sequence, desc: str = "problems") -> list:
    """Run `fn(index, item)` (returning a list of records) on this process's shard; all records, in item order."""
    st = state()
    indexed = list(enumerate(items))
    mine: list[tuple[int, list]] = []
    with st.split_between_processes(indexed) as shard, \
            tqdm(total=len(items), desc=desc, disable=not st.is_main_process) as bar:
        for index, item in shard:
            mine.append((index, fn(index, item)))
            bar.update(st.num_processes)  # the main process's pace stands for all
    gathered = gather_object(mine) if st.num_processes > 1 else mine
    return [rec for _, recs in sorted(gathered, key=lambda pair: pair[0]) for rec in recs]
