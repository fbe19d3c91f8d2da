"""``threads=-1``: pick one thread or all of them, whichever trains faster right now.

On a shared, oversubscribed CPU one thread can be several times faster than two, because every
parallel op waits for both threads to be scheduled.
"""

from __future__ import annotations

import torch

__all__ = ["ThreadPicker"]


class ThreadPicker:
    """Time ``steps`` steps on one thread and on all, keep the faster; probe again when steps
    become ``slack`` times slower than measured three times in a row (the machine's load
    changed), every ``every`` steps, and one step into every epoch (a new image size)."""

    def __init__(self, max_threads: int, steps: int = 2, every: int = 200, slack: float = 1.6):
        self.options, self.steps, self.every, self.slack = (1, max_threads), steps, every, slack
        self.queue: list[int] = []
        self.times: dict[int, list[float]] = {}
        self.ref, self.slow, self.since, self.skip = 0.0, 0, 0, 0

    def new_epoch(self) -> None:
        self.queue, self.skip = [], 1  # the first step at a new size is a warm-up

    def _start(self) -> None:
        self.queue = [n for n in self.options for _ in range(self.steps)]
        self.times = {n: [] for n in self.options}

    def before_step(self) -> None:
        if self.queue:
            torch.set_num_threads(self.queue[0])

    def after_step(self, seconds: float) -> None:
        if self.skip:
            self.skip -= 1
            if not self.skip:
                self._start()
            return
        if self.queue:
            self.times[self.queue.pop(0)].append(seconds)
            if not self.queue:
                mean = {n: sum(t) / len(t) for n, t in self.times.items()}
                best = min(mean, key=mean.get)
                torch.set_num_threads(best)
                self.ref, self.slow, self.since = mean[best], 0, 0
            return
        self.since += 1
        self.slow = self.slow + 1 if seconds > self.slack * self.ref else 0
        if self.slow >= 3 or self.since >= self.every:
            self._start()
