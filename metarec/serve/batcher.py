"""Micro-batching: requests that arrive within a few milliseconds of each other adapt together.

One :class:`MicroBatcher` per served model. The first request of a batch waits at most ``window_ms`` for others
(``max_batch`` at most); the batch runs in the model's one worker thread (``fn(requests) -> results``, one
vectorised adaptation), while the event loop keeps accepting requests, so under load the next batch is already
waiting when one finishes. The window is only waited out when requests have been overlapping (more than one in
flight since the last batch): a lone client is answered at once instead of paying the window on every request.
``window_ms = 0`` turns batching off: every request runs alone, one at a time, in the same worker thread (what
the benchmark compares against).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["MicroBatcher"]


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], list[Any]], window_ms: float = 2.0, max_batch: int = 32,
                 on_batch: Callable[[int], None] | None = None, name: str = "model"):
        if max_batch < 1 or window_ms < 0:
            raise ValueError("max_batch >= 1 and window_ms >= 0")
        self.fn, self.window, self.max_batch, self.on_batch = fn, window_ms / 1000.0, max_batch, on_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"metarec-{name}")  # one model, one thread
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.inflight = 0  # submitted, not yet answered
        self.overlapping = False  # more than one in flight since the last batch started

    @property
    def batching(self) -> bool:
        return self.window > 0 and self.max_batch > 1

    def _run(self, items: list[Any]) -> list[Any]:
        if self.on_batch is not None:
            self.on_batch(len(items))
        return self.fn(items)

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if not self.batching:
            return (await loop.run_in_executor(self.executor, self._run, [item]))[0]
        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = loop.create_task(self._worker())
        fut = loop.create_future()
        assert self.queue is not None
        self.inflight += 1
        self.overlapping = self.overlapping or self.inflight > 1
        try:
            await self.queue.put((item, fut))
            return await fut
        finally:
            self.inflight -= 1

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + (self.window if self.overlapping else 0.0)
            self.overlapping = self.inflight > 1
            while len(batch) < self.max_batch:
                try:  # everything already waiting joins at once; then wait out the window for more
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            live = [(x, f) for x, f in batch if not f.cancelled()]  # a client that went away is not answered
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self._run, [x for x, _ in live])
            except Exception as e:  # noqa: BLE001 - every request of the batch gets the error
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(live, results, strict=True):
                if not f.done():
                    f.set_result(r)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        self.executor.shutdown(wait=False)
