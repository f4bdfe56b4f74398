"""Request batching for the service: concurrent requests share one decoder call.

`RequestBatcher` keeps a bounded queue of requests (a full queue raises `QueueFull`, which
the service answers with 503 and `Retry-After`), decodes large requests a slice at a time
with the requests taking turns (so one client cannot hold the decoder for seconds), skips
the requests of clients that have gone away, and retries a failing batch one request at a
time so that only the bad request fails.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nmt.config import DEFAULT_LENGTH_PENALTY
from nmt.translator import Translation, Translator

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests wait for the decoder than the batcher's `max_queue`."""


@dataclass(eq=False)  # a job is itself: compared by identity
class _Job:
    texts: list[str]
    beam: int
    future: asyncio.Future
    n_best: int = 1
    heads: bool = False  # every layer's and head's weights (a Transformer)
    sent: int = 0  # sentences handed to the decoder so far
    results: list[Translation] = field(default_factory=list)

    @property
    def search(self) -> tuple[int, int, bool]:
        """What a decoder call must share to serve this job: (beam, n_best, heads)."""
        return self.beam, self.n_best, self.heads

    @property
    def waiting(self) -> bool:
        """Whether some of its sentences have not reached the decoder yet."""
        return self.sent < len(self.texts)

    def work(self, index: int) -> int:
        """The estimated cost of sentence `index`: (characters + 1) x beam."""
        return (len(self.texts[index]) + 1) * self.beam


class RequestBatcher:
    """Translates the requests of many clients on one worker thread (TensorFlow runs one
    batch at a time; the event loop keeps answering other clients meanwhile).

    Requests arriving within `window` seconds share a decoder call (one per beam size,
    n-best and heads), up to `max_batch` sentences. A call holds at most `call_work`
    (characters + 1) x beam, so a large request is decoded a slice at a time, and the
    requests take turns:
    after each call the requests it served go to the back of the line, behind those that
    arrived meanwhile. A client with one
    sentence therefore waits for at most about one slice of someone else's large request,
    not for all of it.

    With `enabled=False` every request is translated whole on its own, in arrival order. At
    most `max_queue` requests wait (0: no bound); a request whose caller was cancelled (its
    client disconnected) is dropped before its next slice reaches the decoder.
    """

    def __init__(self, translator: Translator, window: float = 0.01, max_batch: int = 64,
                 enabled: bool = True, alpha: float = DEFAULT_LENGTH_PENALTY,
                 max_queue: int = 0, call_work: int = 12_000):
        self.translator, self.window, self.max_batch = translator, window, max_batch
        self.enabled, self.alpha, self.max_queue = enabled, alpha, max_queue
        self.call_work = call_work
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder")
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.calls = 0  # decoder calls so far (for tests and the benchmark)
        self.dropped = 0  # requests dropped because their client went away
        self._jobs: list[_Job] = []  # taken from the queue, in turn order
        self._served: list[_Job] = []  # the jobs of the last decoder call
        self._lock = threading.Lock()

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def translate(self, texts: list[str], beam: int, n_best: int = 1,
                        heads: bool = False) -> list[Translation]:
        """The translations of `texts`, decoded together with other waiting requests.

        Raises:
            QueueFull: `max_queue` requests are waiting already (a request whose every
                sentence is in the running decoder call no longer waits).
        """
        if self.queue is None:
            raise RuntimeError("RequestBatcher.start() was not called")
        if not texts:
            return []
        waiting = self.queue.qsize() + sum(job.waiting for job in self._jobs)
        if self.max_queue and waiting >= self.max_queue:
            raise QueueFull(f"{self.max_queue} requests are waiting for the decoder")
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(texts, beam, future, n_best, heads))
        # Cancelling the caller cancels `future`, and the worker skips a cancelled job.
        return await future

    async def _run(self) -> None:
        if self.queue is None:
            raise RuntimeError("RequestBatcher.start() was not called")
        while True:
            if not self._jobs:
                self._jobs.append(await self.queue.get())
                if self.enabled:
                    await self._gather_more()
            self._jobs = self._live(self._in_turn_order())
            if self._jobs:
                search, parts = self._next_call()
                await self._translate_parts(search, parts)

    def _live(self, jobs: list[_Job]) -> list[_Job]:
        """`jobs` without those whose client has gone away (their future is cancelled)."""
        live = [job for job in jobs if not job.future.done()]
        self.dropped += len(jobs) - len(live)
        return live

    async def _gather_more(self) -> None:
        """Move jobs arriving within the window into the line, up to `max_batch` sentences."""
        sentences = sum(len(job.texts) for job in self._jobs)
        deadline = time.perf_counter() + self.window
        while sentences < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = (self.queue.get_nowait() if remaining <= 0 else
                       await asyncio.wait_for(self.queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            self._jobs.append(job)
            sentences += len(job.texts)

    def _next_call(self) -> tuple[tuple[int, int, bool], list[tuple[_Job, int, int]]]:
        """The next decoder call: the search options (`_Job.search`) of the first job in
        line, and the slices `(job, start, stop)` of the jobs in line that share them, in
        turn order."""
        first = self._jobs[0]
        if not self.enabled:
            parts = [(first, first.sent, len(first.texts))]
        else:
            parts, sentences, work = [], 0, 0
            for job in self._jobs:
                if job.search != first.search:
                    continue
                stop = job.sent
                while (stop < len(job.texts) and sentences < self.max_batch
                       and (sentences == 0 or work + job.work(stop) <= self.call_work)):
                    work, sentences, stop = work + job.work(stop), sentences + 1, stop + 1
                if stop > job.sent:
                    parts.append((job, job.sent, stop))
        for job, _, stop in parts:
            job.sent = stop
        self._served = [job for job, _, _ in parts]
        return first.search, parts

    def _in_turn_order(self) -> list[_Job]:
        """The line for the next call: those not served by the last call, then the requests
        that arrived during it, then those it served (round robin)."""
        arrived = []
        while not self.queue.empty():
            arrived.append(self.queue.get_nowait())
        served = [job for job in self._served if job in self._jobs]
        return [job for job in self._jobs if job not in served] + arrived + served

    async def _translate_parts(self, search: tuple[int, int, bool],
                               parts: list[tuple[_Job, int, int]]) -> None:
        """Decode the slices in one call; if it fails, decode them one at a time so that only
        a bad request fails (with a one-line log, not a traceback)."""
        texts = [text for job, start, stop in parts for text in job.texts[start:stop]]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self._decode, texts, *search)
        except Exception as error:  # noqa: BLE001 - every waiting client must get an answer
            if len(parts) > 1:
                logger.warning("a batch of %d requests failed (%s: %s); retrying them one by "
                               "one", len(parts), type(error).__name__, _first_line(error))
                for part in parts:
                    await self._translate_parts(search, [part])
                return
            logger.warning("translation failed: %s: %s", type(error).__name__,
                           _first_line(error))
            self._finish(parts[0][0], error)
            return
        for job, start, stop in parts:
            job.results += results[:stop - start]
            results = results[stop - start:]
            if len(job.results) == len(job.texts):
                self._finish(job)

    def _finish(self, job: _Job, error: Exception | None = None) -> None:
        """Answer `job` (unless its client has gone away) and take it out of the line."""
        if job in self._jobs:
            self._jobs.remove(job)
        if job.future.done():
            return
        if error is None:
            job.future.set_result(job.results)
        else:
            job.future.set_exception(error)

    def _decode(self, texts: list[str], beam: int, n_best: int, heads: bool
                ) -> list[Translation]:
        with self._lock:
            self.calls += 1
        options = {"heads": True} if heads else {}  # only a Transformer's translator has them
        return self.translator.translate(texts, beam=beam, alpha=self.alpha,
                                         batch_size=self.max_batch, n_best=n_best, **options)


def _first_line(error: BaseException, most: int = 200) -> str:
    """The first line of `error`'s message, at most `most` characters (for one-line logs)."""
    lines = str(error).strip().splitlines()
    return lines[0][:most] if lines else ""
