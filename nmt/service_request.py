"""What a `POST /translate` request may ask for, and the checks that turn its body into a
`TranslateRequest` or a `RequestError` (answered as JSON by `nmt.service`)."""

import json
from dataclasses import dataclass
from typing import NamedTuple

REQUEST_FIELDS = ("text", "texts", "beam", "model", "split", "n_best", "heads")


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask for (larger requests get 413, wrong values 422) and how
    long and how many connections the server waits for.

    `max_work` bounds the decoder time one request may take: its source tokens (after
    cutting texts into sentences) times its beam. `max_queue` requests may wait for the
    decoder; more get 503 with `Retry-After`. A client must send its request headers within
    `header_timeout` seconds and its body within `body_timeout` seconds; one client address
    may hold `max_connections_per_client` connections, and the server `max_connections`.
    """

    max_body_bytes: int = 256 * 1024
    max_sentences: int = 64
    max_sentence_chars: int = 1000
    max_beam: int = 10
    default_beam: int = 5
    max_work: int = 24_000  # source tokens x beam; the 64 longest test_2016_flickr
    # sentences at beam 10 are 20,090; the largest request parse_body allows, ~160,000
    max_queue: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    max_connections_per_client: int = 32
    max_connections: int = 1000


class RequestError(Exception):
    """A bad request: answered as `{"error": {"status": ..., "message": ...}}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class TranslateRequest(NamedTuple):
    """A checked `POST /translate` body."""

    texts: list[str]  # lines of text, each cut into sentences unless `split` is False
    beam: int
    model: str | None  # None: the service's default model
    split: bool = True
    n_best: int = 1  # candidates per sentence in the answer (1: none listed)
    heads: bool = False  # every layer's and head's weights in the answer (a Transformer)


def parse_body(body: bytes, limits: ServiceLimits, models: tuple[str, ...] = ()
               ) -> TranslateRequest:
    """Check a `POST /translate` body and return what it asks for.

    `models`: the names a request may pick with `"model"`; the model is None when the
    request names none (the service's default model).

    Raises:
        RequestError: 400 (not UTF-8, not JSON, too deeply nested, a number too long, text
            that is not Unicode scalar values), 413 (over a limit) or 422 (wrong fields,
            types or values), with a message that says what to change.
    """
    data = _json_object(body, limits)
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; allowed: "
                                f"{', '.join(REQUEST_FIELDS)}")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or model not in models):
        raise RequestError(422, f'"model" must be one of {list(models)}, not '
                                f"{json.dumps(model)}")
    texts = _texts(data, limits)
    beam = _integer(data, "beam", limits.default_beam, limits.max_beam)
    n_best = _integer(data, "n_best", 1, beam)
    split, heads = _boolean(data, "split", True), _boolean(data, "heads", False)
    return TranslateRequest(texts, beam, model, split, n_best, heads)


def _json_object(body: bytes, limits: ServiceLimits) -> dict:
    """The body as a JSON object; 400 for anything `json.loads` refuses or cannot finish."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body is over {limits.max_body_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"request body is not valid UTF-8 (byte {error.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise RequestError(400, "request body is nested too deeply") from None
    except ValueError as error:  # bad JSON, or an integer past Python's digit limit
        raise RequestError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise RequestError(422, 'expected a JSON object such as {"text": "Ein Hund."}')
    return data


def _texts(data: dict, limits: ServiceLimits) -> list[str]:
    """The lines of `"text"` or `"texts"`, each checked against the limits."""
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
        try:
            sentence.encode("utf-8")
        except UnicodeEncodeError as error:  # JSON's "\ud800": a lone surrogate
            code = ord(sentence[error.start])
            raise RequestError(400, f"{where} has a lone surrogate (\\u{code:04x}) at character "
                                    f"{error.start}; text must be Unicode scalar values") from None
    return texts


def _integer(data: dict, field: str, default: int, most: int) -> int:
    """The integer `data[field]` (default `default`), checked to lie in 1..`most`."""
    value = data.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise RequestError(422, f'"{field}" must be an integer from 1 to {most}, '
                                f"not {json.dumps(value)}")
    return value


def _boolean(data: dict, field: str, default: bool) -> bool:
    """The boolean `data[field]` (default `default`)."""
    value = data.get(field, default)
    if not isinstance(value, bool):
        raise RequestError(422, f'"{field}" must be true or false, not {json.dumps(value)}')
    return value


def _json_type(value) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
