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
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from nmt.batching import QueueFull, RequestBatcher
from nmt.errors import NmtError
from nmt.http_guard import (
    LOOPBACK_NAMES,
    GuardMiddleware,
    allowed_hosts,
    error_body,
    guarded_protocol,
)
from nmt.rundir import METRICS_FILE
from nmt.sentences import join_sentences, split_lines
from nmt.service_request import (
    REQUEST_FIELDS,
    RequestError,
    ServiceLimits,
    TranslateRequest,
    parse_body,
)
from nmt.translator import Translation, Translator

__all__ = ["REQUEST_FIELDS", "RequestBatcher", "RequestError", "ServiceLimits",
           "TranslateRequest", "check_host", "create_app", "ensure_port_free", "parse_body",
           "serve"]

logger = logging.getLogger(__name__)

DEFAULT_LIMITS = ServiceLimits()

WEB_DIR = Path(__file__).resolve().parent / "web"


def translation_json(translation: Translation, n_best: int = 1, heads: bool = False) -> dict:
    """One sentence of the `/translate` answer: text, tokens and the attention matrix (and
    the `n_best` best candidates when more than one was asked for, and with `heads` every
    layer's and head's weights)."""
    record = translation.to_json(heads=heads)
    if n_best == 1:
        record.pop("n_best", None)
    return record


async def translate_request(batcher: RequestBatcher, request: TranslateRequest,
                            language: str, max_work: int | None = None) -> dict:
    """Cut every line of `request` into sentences, translate them all in one batcher job
    and answer with one record per sentence (`line`, `sentence`) plus the joined `lines`.

    Raises:
        RequestError: 413 when the lines' source tokens times the beam pass `max_work`
            (counted before splitting, so a refused request costs no splitting).
        QueueFull: too many requests wait for the decoder.
    """
    if request.heads and not batcher.translator.has_heads:
        raise RequestError(422, f'"heads": {batcher.translator.name} is an RNN with one '
                                "attention; layers and heads need a Transformer model")
    if max_work is not None:  # on whole lines, before the slower sentence splitting
        tokens = await asyncio.to_thread(source_tokens, batcher.translator, request.texts)
        if tokens * request.beam > max_work:
            raise RequestError(413, f"{tokens} source tokens x beam {request.beam} is "
                                    f"{tokens * request.beam}; at most {max_work} per request "
                                    "(send fewer or shorter sentences, or a smaller beam)")
    sentences, per_line = await asyncio.to_thread(split_lines, request.texts, language,
                                                  request.split)
    results = iter(await batcher.translate(sentences, request.beam, request.n_best,
                                           request.heads))
    records, lines = [], []
    for line, (text, parts) in enumerate(zip(request.texts, per_line, strict=True)):
        mine = [{**translation_json(next(results), request.n_best, request.heads), "line": line,
                 "sentence": number} for number in range(len(parts))]
        records += mine
        lines.append({"source": text, "translation": join_sentences(
            [record["translation"] for record in mine])})
    return {"translations": records, "lines": lines}


def source_tokens(translator: Translator, sentences: list[str]) -> int:
    """How many subword tokens the source tokenizer makes of `sentences`, in all."""
    return sum(map(len, translator.source_tokenizer.ids_of(sentences)))


async def until_disconnected(receive) -> None:
    """Return when the client has gone away (call once the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive, work):
    """The result of awaiting `work`, which is cancelled (and its batcher job dropped) if the
    client disconnects first; then `RequestError(499)` is raised (nobody reads the answer)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise RequestError(499, "the client disconnected before its answer was ready")
    return task.result()


# ---------------------------------------------------------------------- application
def create_app(translators: Translator | dict[str, Translator],
               limits: ServiceLimits = DEFAULT_LIMITS, batch_window: float = 0.01,
               batching: bool = True, checkpoint: str | dict[str, str] = "",
               warm_up: bool = True, ready_message: str | None = None,
               hosts: Iterable[str] = LOOPBACK_NAMES):
    """The FastAPI application serving one translator or several by name (see the module
    docstring). The first one is the default of requests that name no `"model"`;
    `checkpoint` is its run directory (a name -> directory dict with several models).
    Requests whose `Host` is not among `hosts` (`"*"`: any) get 400 (`nmt.http_guard`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    if isinstance(translators, Translator):
        translators = {translators.name: translators}
    paths = checkpoint if isinstance(checkpoint, dict) else {next(iter(translators)): checkpoint}
    names = tuple(translators)
    batchers = {name: RequestBatcher(t, window=batch_window, max_batch=limits.max_sentences,
                                     enabled=batching, max_queue=limits.max_queue)
                for name, t in translators.items()}
    info = _service_info(translators, limits, paths)

    # No Swagger UI: it loads from a CDN, and everything served here must work offline.
    app = FastAPI(title="nmt translation service", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(translators, batchers, limits, warm_up, ready_message))
    app.state.batcher, app.state.batchers = batchers[names[0]], batchers
    app.add_middleware(GuardMiddleware, hosts=frozenset(hosts))
    _add_error_handlers(app)

    @app.api_route("/health", methods=["GET", "HEAD"])
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
        body = await _read_limited(request, limits.max_body_bytes, limits.body_timeout)
        asked = parse_body(body, limits, names)
        model = asked.model or names[0]
        start = time.perf_counter()
        answer = await _answer(request, batchers[model], asked,
                               translators[model].config.data.src, limits.max_work)
        return {"checkpoint": model, "model": model, "beam": asked.beam,
                "milliseconds": round(1000 * (time.perf_counter() - start), 1), **answer}

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def _lifespan(translators: dict[str, Translator], batchers: dict[str, RequestBatcher],
              limits: ServiceLimits, warm_up: bool, ready_message: str | None):
    """Load and trace before the first request; start and stop the batchers."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if warm_up:  # trace the default searches now, not during the first request
            for model in translators.values():
                model.warm_up(sorted({1, limits.default_beam}))
        for each in batchers.values():
            each.start()
        if ready_message:
            print(ready_message, flush=True)
        yield
        for each in batchers.values():
            await each.stop()
    return lifespan


async def _answer(request, batcher: RequestBatcher, asked: TranslateRequest, language: str,
                  max_work: int) -> dict:
    """`translate_request` for an HTTP request: dropped when its client disconnects, and
    the batcher's refusals turned into `RequestError`s (422, or 503 with `Retry-After`)."""
    try:
        return await unless_disconnected(request.receive, translate_request(
            batcher, asked, language, max_work))
    except NmtError as exc:
        raise RequestError(422, str(exc)) from None
    except QueueFull as exc:
        raise RequestError(503, f"{exc}; try again in a second",
                           {"Retry-After": "1"}) from None


def _add_error_handlers(app) -> None:
    """Answer every refused request in one JSON shape, with one log line each."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    def error(request, status: int, message: str, headers: dict | None = None) -> Response:
        client = request.client.host if request.client else "?"
        logger.warning("%s %s from %s: %d %s", request.method, request.url.path, client,
                       status, message[:200])
        return Response(error_body(status, message), status, headers,
                        media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # 404, 405 and friends, in the same JSON shape
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(request, 422, str(exc.errors()))

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return error(request, exc.status, exc.message, exc.headers)


def _service_info(translators: dict[str, Translator], limits: ServiceLimits,
                  paths: dict[str, str]) -> dict:
    """`GET /info`: the default model at the top level and every served one in `models`."""
    infos = {name: _model_info(t, limits, paths.get(name, "")) for name, t in translators.items()}
    default = next(iter(translators))
    return {**infos[default], "default_model": default,
            "models": [{"name": name, "source_language": i["config"]["data"]["src"],
                        "target_language": i["config"]["data"]["tgt"], **i}
                       for name, i in infos.items()]}


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
        "heads": {"type": "boolean", "default": False,
                  "description": "a Transformer model: add every sentence's cross-attention "
                                 "per layer and head, [layers][heads][target][source]"},
        "model": {"type": "string", "description": "a served model (GET /info lists them); "
                                                   "default: the first"}},
        "oneOf": [{"required": ["text"]}, {"required": ["texts"]}]}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema, "example": {"text": "Ein Mann fährt Fahrrad.", "beam": 5}}}}}


async def _read_limited(request, limit: int, timeout: float) -> bytes:
    """The request body, refusing (413) as soon as it passes `limit` bytes, so that a huge
    or endless body is never held in memory whole, and (408) when it has not all arrived
    `timeout` seconds after the headers."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestError(413, f"request body is over {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"request body is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {timeout:g} s",
                           {"Connection": "close"}) from None
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
        "attention": _attention_info(translator),
        "vocab_sizes": {"source": translator.source_tokenizer.vocab_size,
                        "target": translator.target_tokenizer.vocab_size},
        "metrics": {"best_epoch": best.get("epoch"), "val_bleu": best.get("val_bleu"),
                    "val_chrf": best.get("val_chrf"), "epochs": len(metrics.get("epochs", [])),
                    "wall_time": metrics.get("wall_time"), "parameters": metrics.get("parameters"),
                    "bleu_signature": metrics.get("bleu_signature"),
                    "stopped_by": metrics.get("stopped_by")},
        "limits": asdict(limits),
    }


def _attention_info(translator: Translator) -> dict:
    """What the page can show: the architecture, and for a Transformer its layers, heads per
    layer and the layer (from 0) whose head-average is the default matrix."""
    model = translator.config.model
    if not translator.has_heads:
        return {"architecture": model.architecture, "layers": None, "heads": None,
                "alignment_layer": None}
    return {"architecture": model.architecture, "layers": model.layers, "heads": model.heads,
            "alignment_layer": translator.model.alignment_layer}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES


def serve(translators: Translator | dict[str, Translator], host: str = "127.0.0.1",
          port: int = 8000, limits: ServiceLimits = DEFAULT_LIMITS,
          batch_window: float = 0.01, batching: bool = True,
          checkpoints: str | dict[str, str] = "", log_level: str = "warning",
          allow_hosts: Iterable[str] = ()) -> None:
    """Run the service until SIGINT/SIGTERM (uvicorn finishes open requests, then exits).

    Requests must name in `Host` a loopback name, `host` or one of `allow_hosts`. uvicorn's
    `limit_concurrency` (`limits.max_connections`; beyond it: 503) and `timeout_keep_alive`
    (5 s) apply, and `nmt.http_guard.guarded_protocol` adds the header deadline and the
    per-address connection cap."""
    if isinstance(translators, Translator):
        translators = {translators.name: translators}
    try:
        import uvicorn
    except ImportError:
        raise NmtError('serving needs the server libraries: pip install -e ".[serve]"') from None
    shown = f"[{host}]" if ":" in host else host
    app = create_app(translators, limits, batch_window, batching, checkpoints,
                     ready_message=f"serving {', '.join(translators)} on "
                                   f"http://{shown}:{port}/ (Ctrl-C stops)",
                     hosts=allowed_hosts(host, allow_hosts))
    protocol = guarded_protocol(limits.header_timeout, limits.max_connections_per_client)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            http=protocol, limit_concurrency=limits.max_connections,
                            timeout_keep_alive=5, timeout_graceful_shutdown=10)
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
