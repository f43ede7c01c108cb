"""Micro-batching: the instances of requests that arrive together are predicted as one batch.

A model call costs about the same for 1 row as for 32 on a CPU, so under load
the server predicts whatever has queued while the previous batch ran. It
waits for company (at most ``max_wait_s`` after the oldest queued request)
only while other requests are still being prepared (``expect``/``arrived``),
so a lone request is never held back. A
batch holds at most ``max_batch`` rows (a larger request is its own batch)
and rows of one model version only, so a request is answered by the version
it was prepared for. The model runs on one thread; the event loop stays free
for decoding and I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    def __init__(self, predict, max_batch: int, max_wait_s: float):
        """``predict(model, rows) -> probabilities (len(rows), labels)``, called on the model thread."""
        self._predict = predict
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self._queue: deque = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batches = self.rows = 0
        self.preparing = 0  # requests decoding their images, about to submit

    def expect(self) -> None:
        """A request started preparing its rows: a batch about to run may wait for it."""
        self.preparing += 1

    def arrived(self) -> None:
        """That request submitted its rows, or gave up."""
        self.preparing -= 1
        if self._wake is not None:
            self._wake.set()

    async def submit(self, model, rows: list) -> np.ndarray:
        """Probabilities for ``rows`` (prepared for ``model``), predicted in some batch."""
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._queue.append((model, rows, future, time.monotonic()))
        self._wake.set()
        return await future

    def _take(self) -> tuple[object, list]:
        """The requests of the next batch: the first queued, and those after it of the same model that fit."""
        model = self._queue[0][0]
        taken, size, kept = [], 0, deque()
        while self._queue:
            item = self._queue.popleft()
            if item[0] is model and (not taken or size + len(item[1]) <= self.max_batch):
                taken.append(item)
                size += len(item[1])
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        return model, taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            # wait for company at most max_wait_s after the oldest request came (not at all under load)
            deadline = self._queue[0][3] + self.max_wait_s
            while self.preparing > 0 and sum(len(item[1]) for item in self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            model, taken = self._take()
            rows = [row for _, r, _, _ in taken for row in r]
            try:
                probs = await loop.run_in_executor(self._executor, self._predict, model, rows)
            except Exception as e:  # noqa: BLE001 - every request of the batch gets the error
                for _, _, future, _ in taken:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.rows += len(rows)
            start = 0
            for _, r, future, _ in taken:
                if not future.done():  # the client may have gone
                    future.set_result(probs[start:start + len(r)])
                start += len(r)
