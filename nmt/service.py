"""The HTTP translation service: a JSON API and a web page of attention heatmaps.

`create_app(translator)` builds a FastAPI application; `python translate.py serve` runs it
with uvicorn. Concurrent requests are queued and translated together by `RequestBatcher`,
so that many users share one decoder call; the model is loaded once, before the first
request. Install the server libraries with `pip install -e ".[serve]"`.
"""

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from nmt.config import DEFAULT_LENGTH_PENALTY
from nmt.errors import NmtError
from nmt.rundir import METRICS_FILE
from nmt.sentences import join_sentences, split_lines
from nmt.translator import Translation, Translator

REQUEST_FIELDS = ("text", "texts", "beam", "model", "split", "n_best")

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask for; larger requests get 413 (limits) or 422 (values)."""

    max_body_bytes: int = 256 * 1024
    max_sentences: int = 64
    max_sentence_chars: int = 1000
    max_beam: int = 10
    default_beam: int = 5


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

    With `enabled=False` every request is translated on its own, in arrival order.
    """

    def __init__(self, translator: Translator, window: float = 0.01, max_batch: int = 64,
                 enabled: bool = True, alpha: float = DEFAULT_LENGTH_PENALTY):
        self.translator, self.window, self.max_batch = translator, window, max_batch
        self.enabled, self.alpha = enabled, alpha
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder")
        self.queue: asyncio.Queue[_Job] | None = None
        self.worker: asyncio.Task | None = None
        self.calls = 0  # decoder calls so far (for tests and the benchmark)
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

    async def translate(self, texts: list[str], beam: int, n_best: int = 1
                        ) -> list[Translation]:
        if self.queue is None:
            raise RuntimeError("RequestBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(texts, beam, future, n_best))
        return await future

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            jobs = [await self.queue.get()]
            if self.enabled:
                jobs += await self._gather_more(len(jobs[0].texts))
            groups: dict[tuple[int, int], list[_Job]] = {}
            for job in jobs:
                groups.setdefault((job.beam, job.n_best), []).append(job)
            for (beam, n_best), group in groups.items():
                await self._translate_group(beam, n_best, group)

    async def _gather_more(self, sentences: int) -> list[_Job]:
        """Jobs arriving within the window, up to `max_batch` sentences in all."""
        assert self.queue is not None
        more: list[_Job] = []
        deadline = time.perf_counter() + self.window
        while sentences < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = (self.queue.get_nowait() if remaining <= 0 else
                       await asyncio.wait_for(self.queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            more.append(job)
            sentences += len(job.texts)
        return more

    async def _translate_group(self, beam: int, n_best: int, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self._decode, texts, beam,
                                                 n_best)
        except Exception as error:  # noqa: BLE001 - every waiting client must get an answer
            logger.exception("translation failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
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


# ----------------------------------------------------------------- request checking
class RequestError(Exception):
    """A bad request: answered as `{"error": {"status": ..., "message": ...}}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class TranslateRequest(NamedTuple):
    """A checked `POST /translate` body."""

    texts: list[str]  # lines of text, each cut into sentences unless `split` is False
    beam: int
    model: str | None  # None: the service's default model
    split: bool = True
    n_best: int = 1  # candidates per sentence in the answer (1: none listed)


def parse_body(body: bytes, limits: ServiceLimits, models: tuple[str, ...] = ()
               ) -> TranslateRequest:
    """Check a `POST /translate` body and return what it asks for.

    `models`: the names a request may pick with `"model"`; the model is None when the
    request names none (the service's default model).

    Raises:
        RequestError: 400 (not UTF-8, not JSON), 413 (over a limit) or 422 (wrong fields,
            types or values), with a message that says what to change.
    """
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body is over {limits.max_body_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"request body is not valid UTF-8 (byte {error.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise RequestError(422, 'expected a JSON object such as {"text": "Ein Hund."}')
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; allowed: "
                                f"{', '.join(REQUEST_FIELDS)}")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or model not in models):
        raise RequestError(422, f'"model" must be one of {list(models)}, not '
                                f"{json.dumps(model)}")
    if ("text" in data) == ("texts" in data):
        raise RequestError(422, 'give exactly one of "text" (a string) or "texts" (a list)')
    if "text" in data:
        if not isinstance(data["text"], str):
            raise RequestError(422, f'"text" must be a string, not {_json_type(data["text"])}')
        texts = [data["text"]]
    else:
        texts = data["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RequestError(422, '"texts" must be a list of strings')
        if not texts:
            raise RequestError(422, '"texts" is empty; give at least one sentence')
    if len(texts) > limits.max_sentences:
        raise RequestError(413, f"{len(texts)} sentences; at most {limits.max_sentences} "
                                "per request")
    for index, sentence in enumerate(texts):
        where = '"text"' if "text" in data else f'"texts"[{index}]'
        if not sentence.strip():
            raise RequestError(422, f"{where} is empty; give a sentence to translate")
        if len(sentence) > limits.max_sentence_chars:
            raise RequestError(413, f"{where} has {len(sentence)} characters; at most "
                                    f"{limits.max_sentence_chars} per sentence")
    beam = _integer(data, "beam", limits.default_beam, limits.max_beam)
    n_best = _integer(data, "n_best", 1, beam)
    split = data.get("split", True)
    if not isinstance(split, bool):
        raise RequestError(422, f'"split" must be true or false, not {json.dumps(split)}')
    return TranslateRequest(texts, beam, model, split, n_best)


def _integer(data: dict, field: str, default: int, most: int) -> int:
    """The integer `data[field]` (default `default`), checked to lie in 1..`most`."""
    value = data.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise RequestError(422, f'"{field}" must be an integer from 1 to {most}, '
                                f"not {json.dumps(value)}")
    return value


def _json_type(value) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def translation_json(translation: Translation, n_best: int = 1) -> dict:
    """One sentence of the `/translate` answer: text, tokens and the attention matrix (and
    the `n_best` best candidates when more than one was asked for)."""
    record = translation.to_json()
    if n_best == 1:
        record.pop("n_best", None)
    return record


async def translate_request(batcher: RequestBatcher, request: TranslateRequest,
                            language: str) -> dict:
    """Cut every line of `request` into sentences, translate them all in one batcher job
    and answer with one record per sentence (`line`, `sentence`) plus the joined `lines`."""
    sentences, per_line = split_lines(request.texts, language, request.split)
    results = iter(await batcher.translate(sentences, request.beam, request.n_best))
    records, lines = [], []
    for line, (text, parts) in enumerate(zip(request.texts, per_line, strict=True)):
        mine = [{**translation_json(next(results), request.n_best), "line": line,
                 "sentence": number} for number in range(len(parts))]
        records += mine
        lines.append({"source": text, "translation": join_sentences(
            [record["translation"] for record in mine])})
    return {"translations": records, "lines": lines}


# ---------------------------------------------------------------------- application
def create_app(translators: Translator | dict[str, Translator],
               limits: ServiceLimits = ServiceLimits(), batch_window: float = 0.01,
               batching: bool = True, checkpoint: str | dict[str, str] = "",
               warm_up: bool = True, ready_message: str | None = None):
    """The FastAPI application serving one translator or several by name (see the module
    docstring). The first one is the default of requests that name no `"model"`;
    `checkpoint` is its run directory (a name -> directory dict with several models)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    if isinstance(translators, Translator):
        translators = {translators.name: translators}
    paths = checkpoint if isinstance(checkpoint, dict) else {next(iter(translators)): checkpoint}
    names = tuple(translators)
    batchers = {name: RequestBatcher(t, window=batch_window, max_batch=limits.max_sentences,
                                     enabled=batching) for name, t in translators.items()}
    infos = {name: _model_info(t, limits, paths.get(name, "")) for name, t in translators.items()}
    info = {**infos[names[0]], "default_model": names[0],
            "models": [{"name": name, "source_language": i["config"]["data"]["src"],
                        "target_language": i["config"]["data"]["tgt"], **i}
                       for name, i in infos.items()]}
    batcher = batchers[names[0]]

    @asynccontextmanager
    async def lifespan(app):
        if warm_up:  # trace the default searches now, not during the first request
            for model in translators.values():
                for beam in sorted({1, limits.default_beam}):
                    model.translate(["Ein Test."], beam=beam)
        for each in batchers.values():
            each.start()
        if ready_message:
            print(ready_message, flush=True)
        yield
        for each in batchers.values():
            await each.stop()

    # No Swagger UI: it loads from a CDN, and everything served here must work offline.
    app = FastAPI(title="nmt translation service", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.batcher, app.state.batchers = batcher, batchers

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "message": message}}, status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # 404, 405 and friends, in the same JSON shape
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(422, str(exc.errors()))

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return error(exc.status, exc.message)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_loaded": True, "checkpoint": info["checkpoint"],
                "score": info["config"]["model"]["score"],
                "attention_mode": info["config"]["model"]["attention_mode"],
                "models": list(names)}

    @app.get("/info")
    async def model_info():
        return info

    @app.post("/translate", openapi_extra=_translate_schema(limits))
    async def translate(request: Request):
        body = await _read_limited(request, limits.max_body_bytes)
        asked = parse_body(body, limits, names)
        model = asked.model or names[0]
        start = time.perf_counter()
        try:
            answer = await translate_request(batchers[model], asked,
                                             translators[model].config.data.src)
        except NmtError as exc:
            raise RequestError(422, str(exc)) from None
        return {"checkpoint": model, "model": model, "beam": asked.beam,
                "milliseconds": round(1000 * (time.perf_counter() - start), 1), **answer}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def _translate_schema(limits: ServiceLimits) -> dict:
    """The request body of `POST /translate`, for /openapi.json (parsed by `parse_body`)."""
    sentence = {"type": "string", "minLength": 1, "maxLength": limits.max_sentence_chars}
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "text": sentence,
        "texts": {"type": "array", "items": sentence, "minItems": 1,
                  "maxItems": limits.max_sentences},
        "beam": {"type": "integer", "minimum": 1, "maximum": limits.max_beam,
                 "default": limits.default_beam},
        "n_best": {"type": "integer", "minimum": 1, "default": 1,
                   "description": "list the N best candidates of every sentence (N <= beam)"},
        "split": {"type": "boolean", "default": True,
                  "description": "cut every text into sentences and translate them one by one"},
        "model": {"type": "string", "description": "a served model (GET /info lists them); "
                                                   "default: the first"}},
        "oneOf": [{"required": ["text"]}, {"required": ["texts"]}]}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema, "example": {"text": "Ein Mann fährt Fahrrad.", "beam": 5}}}}}


async def _read_limited(request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes `limit` bytes, so that a huge
    or endless body is never held in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestError(413, f"request body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _model_info(translator: Translator, limits: ServiceLimits, checkpoint: str) -> dict:
    metrics: dict = {}
    path = Path(checkpoint) / METRICS_FILE if checkpoint else None
    if path is not None and path.is_file():
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("%s is not valid JSON; /info shows no metrics", path)
    best = metrics.get("best") or {}
    return {
        "checkpoint": translator.name,
        "config": translator.config.to_dict(),
        "vocab_sizes": {"source": translator.source_tokenizer.vocab_size,
                        "target": translator.target_tokenizer.vocab_size},
        "metrics": {"best_epoch": best.get("epoch"), "val_bleu": best.get("val_bleu"),
                    "val_chrf": best.get("val_chrf"), "epochs": len(metrics.get("epochs", [])),
                    "wall_time": metrics.get("wall_time"), "parameters": metrics.get("parameters"),
                    "bleu_signature": metrics.get("bleu_signature"),
                    "stopped_by": metrics.get("stopped_by")},
        "limits": asdict(limits),
    }


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


def serve(translators: Translator | dict[str, Translator], host: str = "127.0.0.1",
          port: int = 8000, limits: ServiceLimits = ServiceLimits(),
          batch_window: float = 0.01, batching: bool = True,
          checkpoints: str | dict[str, str] = "", log_level: str = "warning") -> None:
    """Run the service until SIGINT/SIGTERM (uvicorn finishes open requests, then exits)."""
    if isinstance(translators, Translator):
        translators = {translators.name: translators}
    try:
        import uvicorn
    except ImportError:
        raise NmtError('serving needs the server libraries: pip install -e ".[serve]"') from None
    shown = f"[{host}]" if ":" in host else host
    app = create_app(translators, limits, batch_window, batching, checkpoints,
                     ready_message=f"serving {', '.join(translators)} on "
                                   f"http://{shown}:{port}/ (Ctrl-C stops)")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            limit_concurrency=1000, timeout_graceful_shutdown=10)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-sends the signal to the
    # process; with these no-op handlers behind its own, that ends in a clean exit (status 0).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT,
                                                                      signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_host(host: str) -> str | None:
    """A warning to print when `host` is reachable from other machines, else None."""
    if is_loopback(host):
        return None
    return (f"warning: listening on {host}, reachable from other machines; the service has "
            "no authentication: anyone who reaches this port can use it")


def ensure_port_free(host: str, port: int) -> None:
    """Fail early, before the model loads, when `host:port` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise NmtError(f"cannot listen on {host}:{port}: {error.strerror}; choose another "
                           "--port or stop the program using it") from None
