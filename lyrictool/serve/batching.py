"""The request queue in front of the model: serve's own batcher (transformers), or admission in front of an
engine that batches by itself (vLLM).

:class:`BatchQueue` (transformers): concurrent requests gathered into one ``generate`` call.

One worker thread owns the model.  It takes the oldest waiting job, then keeps taking jobs for up to
``max_wait_ms`` (or until the batch holds ``max_batch_size`` sequences; a job's samples are never split), and runs
ONE generate call per distinct (temperature, top_p) among them: sampling settings are per batch in
``transformers``, so jobs that differ run back to back in the same cycle, while jobs that differ only in
``max_tokens`` or ``n`` share one call (each row stops at its own limit).  The queue is bounded: a full queue
refuses at once (the HTTP layer answers 429 with Retry-After) instead of letting latency grow without bound.
A caller that gave up (timeout, disconnect) cancels its future; the worker skips cancelled jobs it has not
started.  :meth:`BatchQueue.close` stops intake and lets the worker finish everything already accepted.

:class:`EngineQueue` (vLLM): no batching of ours.  vLLM's scheduler batches continuously (each step runs every
request it holds and takes new ones in), so a batcher in front of it only adds waiting: measured in
docs/benchmarks.md ("serve on vLLM: batcher or proxy").  The queue keeps what the service relies on: at most
``max_queue`` requests in the engine (429 + Retry-After beyond), a cancelled request (timeout, client gone)
aborted in the engine, and a drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from lyrictool.serve.backends import Backend, GenResult, GenRow

log = logging.getLogger("lyrictool")


class QueueFull(Exception):
    """The queue holds max_queue jobs; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"queue full; retry after {retry_after}s")
        self.retry_after = retry_after


class QueueClosed(Exception):
    """The server is shutting down and accepts no new work."""


@dataclass
class Job:
    rows: list[GenRow]
    temperature: float
    top_p: float
    future: Future = field(default_factory=Future)  # -> list[GenResult], one per row
    enqueued_at: float = field(default_factory=time.monotonic)


class BatchQueue:
    def __init__(self, backend: Backend, *, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None):
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch  # (sequences, seconds) after each generate call, for metrics
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = 0  # jobs taken by the worker and not yet answered
        self._batch_seconds = 0.5  # running estimate of one generate call, for Retry-After
        self._thread = threading.Thread(target=self._work, name="lyrictool-generate", daemon=True)

    # ---- caller side (event loop thread) ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        """The worker thread is running (False before start and after shutdown)."""
        return self._thread.is_alive()

    def depth(self) -> int:
        """Jobs waiting (not yet taken by the worker)."""
        return len(self._jobs)

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closed:
                raise QueueClosed()
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(self.retry_after())
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained enough to take a new job."""
        batches_ahead = len(self._jobs) / max(1, self.max_batch_size) + 1
        return max(1, math.ceil(batches_ahead * self._batch_seconds))

    async def drain(self, timeout: float | None = None) -> bool:
        """:meth:`close` from the event loop (the app's shutdown)."""
        return await asyncio.to_thread(self.close, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, finish accepted ones (for up to ``timeout`` s); True if all finished."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        left = not self._thread.is_alive()
        if not left:
            log.warning("shutdown: generation still running after %.0fs; abandoning it", timeout or 0)
        return left

    # ---- worker side ---------------------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next batch of live jobs, or None once closed and drained."""
        with self._cond:
            while True:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return None  # closed and drained
                batch: list[Job] = []
                size = 0
                deadline = time.monotonic() + self.max_wait_s
                while True:
                    while self._jobs and (not batch or size + len(self._jobs[0].rows) <= self.max_batch_size):
                        job = self._jobs.popleft()
                        if job.future.set_running_or_notify_cancel():  # False: the caller gave up already
                            batch.append(job)
                            size += len(job.rows)
                    remaining = deadline - time.monotonic()
                    if size >= self.max_batch_size or self._jobs or remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
                if batch:
                    self._busy += len(batch)
                    return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            groups: dict[tuple[float, float], list[Job]] = {}
            for job in batch:
                groups.setdefault((job.temperature, job.top_p), []).append(job)
            for (temperature, top_p), jobs in groups.items():
                self._run(jobs, temperature, top_p)
            with self._cond:
                self._busy -= len(batch)

    def _run(self, jobs: list[Job], temperature: float, top_p: float) -> None:
        rows = [row for job in jobs for row in job.rows]
        start = time.monotonic()
        try:
            results: list[GenResult] = self.backend.generate(rows, temperature=temperature, top_p=top_p)
        except Exception as e:
            log.exception("generation failed for a batch of %d sequences", len(rows))
            for job in jobs:
                job.future.set_exception(e)
            return
        seconds = time.monotonic() - start
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        if self.on_batch is not None:
            self.on_batch(len(rows), seconds)
        at = 0
        for job in jobs:
            job.future.set_result(results[at:at + len(job.rows)])
            at += len(job.rows)


class EngineQueue:
    """Admission in front of a continuous-batching engine (:class:`~lyrictool.serve.backends.VLLMBackend`).

    The same face as :class:`BatchQueue` for the service; lives on the event loop: ``submit`` starts one task per
    job whose samples go to the engine at once, and returns it (an asyncio future: cancelling it aborts the
    engine requests).
    """

    def __init__(self, backend, *, max_batch_size: int, max_queue: int):
        self.backend = backend
        self.max_batch_size = max_batch_size  # the engine's max_num_seqs (for Retry-After)
        self.max_queue = max_queue
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        self._closed = False
        self._job_seconds = 0.5  # running estimate of one request, for Retry-After

    def start(self) -> None:
        self._started = True

    def alive(self) -> bool:
        return self._started and not self._closed and self.backend.healthy()

    def depth(self) -> int:
        """Requests in the engine (running or waiting in vLLM's scheduler)."""
        return len(self._tasks)

    def retry_after(self) -> int:
        rounds = len(self._tasks) / max(1, self.max_batch_size) + 1
        return max(1, math.ceil(rounds * self._job_seconds))

    def submit(self, job: Job) -> asyncio.Task:
        if self._closed:
            raise QueueClosed()
        if len(self._tasks) >= self.max_queue:
            raise QueueFull(self.retry_after())
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, job: Job) -> list[GenResult]:
        start = time.monotonic()
        kw = {"temperature": job.temperature, "top_p": job.top_p}
        try:
            results = await asyncio.gather(*(self.backend.stream(row, **kw) for row in job.rows))
        except asyncio.CancelledError:
            raise  # gather cancelled every sample: each aborted its engine request
        except Exception:
            log.exception("generation failed for a request of %d sequences", len(job.rows))
            raise
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.monotonic() - start)
        return list(results)

    async def drain(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, let the ones in the engine finish (for up to ``timeout`` s); True if all finished."""
        self._closed = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                log.warning("shutdown: %d requests still generating after %.0fs; abandoning them", len(pending),
                            timeout or 0)
                for task in pending:
                    task.cancel()
                return False
        return True
