"""Request batching for the service: concurrent requests share one decoder call.

`RequestBatcher` keeps a bounded queue of requests (a full queue raises `QueueFull`, which
the service answers with 503 and `Retry-After`), skips the requests of clients that have
gone away, and retries a failing batch one request at a time so that only the bad request
fails.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nmt.config import DEFAULT_LENGTH_PENALTY
from nmt.translator import Translation, Translator

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests wait for the decoder than the batcher's `max_queue`."""


@dataclass
class _Job:
    texts: list[str]
    beam: int
    future: asyncio.Future
    n_best: int = 1


class RequestBatcher:
    """Collects requests for `window` seconds and translates each beam size's group in one
    `Translator.translate` call on a single worker thread (TensorFlow runs one batch at a
    time; the event loop keeps answering other clients meanwhile).

    With `enabled=False` every request is translated on its own, in arrival order. At most
    `max_queue` requests wait (0: no bound); a request whose caller was cancelled (its
    client disconnected) is dropped before it reaches the decoder.
    """

    def __init__(self, translator: Translator, window: float = 0.01, max_batch: int = 64,
                 enabled: bool = True, alpha: float = DEFAULT_LENGTH_PENALTY,
                 max_queue: int = 0):
        self.translator, self.window, self.max_batch = translator, window, max_batch
        self.enabled, self.alpha, self.max_queue = enabled, alpha, max_queue
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder")
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.calls = 0  # decoder calls so far (for tests and the benchmark)
        self.dropped = 0  # requests dropped because their client went away
        self._lock = threading.Lock()

    def start(self) -> None:
        self.queue = asyncio.Queue(self.max_queue)
        self.worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def translate(self, texts: list[str], beam: int, n_best: int = 1
                        ) -> list[Translation]:
        """The translations of `texts`, decoded together with other waiting requests.

        Raises:
            QueueFull: `max_queue` requests are waiting already.
        """
        if self.queue is None:
            raise RuntimeError("RequestBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(texts, beam, future, n_best))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are waiting for the decoder") from None
        # Cancelling the caller cancels `future`, and the worker skips a cancelled job.
        return await future

    async def _run(self) -> None:
        if self.queue is None:
            raise RuntimeError("RequestBatcher.start() was not called")
        while True:
            jobs = self._live([await self.queue.get()])
            if not jobs:
                continue
            if self.enabled:
                jobs += await self._gather_more(len(jobs[0].texts))
            groups: dict[tuple[int, int], list[_Job]] = {}
            for job in jobs:
                groups.setdefault((job.beam, job.n_best), []).append(job)
            for (beam, n_best), group in groups.items():
                await self._translate_group(beam, n_best, group)

    def _live(self, jobs: list[_Job]) -> list[_Job]:
        """`jobs` without those whose client has gone away (their future is cancelled)."""
        live = [job for job in jobs if not job.future.done()]
        self.dropped += len(jobs) - len(live)
        return live

    async def _gather_more(self, sentences: int) -> list[_Job]:
        """Jobs arriving within the window, up to `max_batch` sentences in all."""
        more: list[_Job] = []
        deadline = time.perf_counter() + self.window
        while sentences < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = (self.queue.get_nowait() if remaining <= 0 else
                       await asyncio.wait_for(self.queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if self._live([job]):
                more.append(job)
                sentences += len(job.texts)
        return more

    async def _translate_group(self, beam: int, n_best: int, jobs: list[_Job]) -> None:
        """Decode `jobs` in one call; if it fails, decode them one at a time so that only a
        bad request fails (with a one-line log, not a traceback)."""
        jobs = self._live(jobs)
        if not jobs:
            return
        texts = [text for job in jobs for text in job.texts]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self._decode, texts, beam,
                                                 n_best)
        except Exception as error:  # noqa: BLE001 - every waiting client must get an answer
            if len(jobs) > 1:
                logger.warning("a batch of %d requests failed (%s: %s); retrying them one by "
                               "one", len(jobs), type(error).__name__, _first_line(error))
                for job in jobs:
                    await self._translate_group(beam, n_best, [job])
                return
            logger.warning("translation failed: %s: %s", type(error).__name__,
                           _first_line(error))
            if not jobs[0].future.done():
                jobs[0].future.set_exception(error)
            return
        start = 0
        for job in jobs:
            if not job.future.done():  # the client may have gone away
                job.future.set_result(results[start:start + len(job.texts)])
            start += len(job.texts)

    def _decode(self, texts: list[str], beam: int, n_best: int) -> list[Translation]:
        with self._lock:
            self.calls += 1
        return self.translator.translate(texts, beam=beam, alpha=self.alpha,
                                         batch_size=self.max_batch, n_best=n_best)


def _first_line(error: BaseException, most: int = 200) -> str:
    """The first line of `error`'s message, at most `most` characters (for one-line logs)."""
    lines = str(error).strip().splitlines()
    return lines[0][:most] if lines else ""
