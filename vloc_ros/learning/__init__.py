"""Learned components trained on a map's own structure from motion."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Union

import torch
from tqdm import tqdm

# A trainer's progress: True shows a tqdm bar, False nothing; a callable is called with (done, total)
# after each step (the map builder's progress callback, for the map-builder node's feedback).
TrainingProgress = Union[bool, Callable[[int, int], None]]


def training_steps(steps: int, description: str, progress: TrainingProgress) -> Iterator[int]:
    """``range(steps)``, reported to ``progress`` as it advances."""
    for step in tqdm(range(steps), desc=description, unit="step", disable=progress is not True):
        yield step
        if callable(progress):
            progress(step + 1, steps)


@contextmanager
def one_torch_thread():
    """Torch on one thread while training: its batches are too small to gain from more, a team of
    threads on a busy machine waits for its slowest member (many times slower), and the result then
    does not depend on the caller's thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
