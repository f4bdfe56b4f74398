"""Issue 19, service part: one client cannot break the others. Hostile bodies, failing
batches, a full queue, gone clients, slow clients, connection floods, hogs, and what a web
browser could be made to send; unit tests for the logic, a real server for the network."""

import asyncio
import http.client
import json
import logging
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message

import pytest

from nmt.batching import QueueFull, RequestBatcher
from nmt.http_guard import GuardMiddleware, allowed_hosts, host_name
from nmt.service import RequestError, ServiceLimits, parse_body, unless_disconnected
from tests.server import running_server
from tests.test_service import JSON_TYPE, SENTENCES, RecordingTranslator, body, post, request

HEADER_TIMEOUT = BODY_TIMEOUT = 3  # seconds, for the server below
MAX_QUEUE = 4


# ------------------------------------------------------------------- request checking
@pytest.mark.parametrize("raw, fragment", [
    (b'{"text": "\\ud800"}', "lone surrogate (\\ud800) at character 0"),
    (b'{"texts": ["Hallo.", "a\\udfffb"]}', '"texts"[1] has a lone surrogate'),
    (b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b'{"text": "a", "beam": 1' + b"0" * 5000 + b"}", "not valid JSON"),
], ids=["surrogate", "surrogate-in-texts", "deep", "huge-integer"])
def test_hostile_bodies_are_400(raw, fragment):
    with pytest.raises(RequestError) as caught:
        parse_body(raw, ServiceLimits())
    assert caught.value.status == 400 and fragment in caught.value.message


def test_host_names():
    assert host_name("localhost:8000") == "localhost" and host_name("[::1]:80") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1" and host_name("::1") == "::1"
    assert allowed_hosts("0.0.0.0", ["Box.lan"]) == {"127.0.0.1", "localhost", "::1",
                                                      "0.0.0.0", "box.lan"}


# ------------------------------------------------------------------------- batching
class PickyTranslator(RecordingTranslator):
    """Fails a whole call when any text in it holds a lone surrogate, as TensorFlow does
    when it builds the batch's string tensor."""

    def translate(self, texts, beam, alpha, batch_size, n_best=1):
        if any("\ud800" in text for text in texts):
            self.calls.append((list(texts), beam))
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return super().translate(texts, beam, alpha, batch_size, n_best)


def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_request_fails(caplog):
    fake = PickyTranslator()
    requests = [[f"satz {i}"] for i in range(5)] + [["\ud800"]]

    async def main():
        batcher = RequestBatcher(fake, window=0.2)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.translate(t, 5) for t in requests),
                                        return_exceptions=True)
        finally:
            await batcher.stop()
    with caplog.at_level(logging.WARNING, logger="nmt.batching"):
        answers = asyncio.run(main())
    assert answers[:5] == [[f"SATZ {i}"] for i in range(5)]
    assert isinstance(answers[5], UnicodeEncodeError)
    assert len(fake.calls[0][0]) == 6 and len(fake.calls) == 7  # one batch, then 6 singles
    assert all(record.exc_info is None for record in caplog.records)  # no tracebacks


def test_a_full_queue_refuses_and_a_gone_client_is_never_decoded():
    fake = RecordingTranslator()

    async def main():
        batcher = RequestBatcher(fake, window=0.0, max_queue=2)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.translate(["eins"], 5))
            while not fake.calls:  # the decoder is busy with the first request
                await asyncio.sleep(0.005)
            gone = asyncio.ensure_future(batcher.translate(["weg"], 5))
            waiting = asyncio.ensure_future(batcher.translate(["zwei"], 5))
            await asyncio.sleep(0)
            with pytest.raises(QueueFull):
                await batcher.translate(["drei"], 5)
            gone.cancel()  # its client disconnected
            return await first, await waiting, batcher.dropped
        finally:
            await batcher.stop()
    first, waiting, dropped = asyncio.run(main())
    assert first == ["EINS"] and waiting == ["ZWEI"] and dropped == 1
    assert all("weg" not in texts for texts, _ in fake.calls)


def test_a_large_request_is_decoded_in_slices_and_a_small_one_gets_a_turn():
    fake = RecordingTranslator()
    large = [f"satz nummer {index:03d}" for index in range(40)]  # (16 + 1) x 5 = 85 each

    async def main():
        batcher = RequestBatcher(fake, window=0.0, call_work=425)  # 5 of them per call
        batcher.start()
        try:
            pending = asyncio.ensure_future(batcher.translate(large, 5))
            while not fake.calls:  # the first slice of the large request is being decoded
                await asyncio.sleep(0.005)
            small = await batcher.translate(["klein"], 5)
            return small, pending.done(), await pending
        finally:
            await batcher.stop()
    small, large_was_done, answer = asyncio.run(main())
    assert small == ["KLEIN"] and not large_was_done  # answered between two slices
    assert answer == [text.upper() for text in large]  # every slice, in order
    assert all(sum((len(text) + 1) * beam for text in texts) <= 425 + 6 * beam
               for texts, beam in fake.calls)
    assert fake.calls[1][0][0] == "klein"  # the very next call starts with it


def test_an_empty_request_is_answered_at_once_and_stalls_nobody():
    fake = RecordingTranslator()

    async def main():
        batcher = RequestBatcher(fake, window=0.01)
        batcher.start()
        try:
            return await asyncio.wait_for(asyncio.gather(
                batcher.translate([], 5), batcher.translate(["eins"], 5)), 30)
        finally:
            await batcher.stop()
    assert asyncio.run(main()) == [[], ["EINS"]]
    assert fake.calls == [(["eins"], 5)]


def test_a_disconnect_cancels_the_work():
    cancelled = []

    async def work():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def receive():
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def main():
        with pytest.raises(RequestError) as caught:
            await unless_disconnected(receive, work())
        await asyncio.sleep(0)
        return caught.value.status
    assert asyncio.run(main()) == 499 and cancelled == [True]


def test_an_unexpected_error_is_one_json_500_and_one_log_line(caplog):
    async def broken(scope, receive, send):
        raise RuntimeError("boom\nsecond line")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "client": ("127.0.0.1", 1),
             "headers": [(b"host", b"localhost:8000")]}
    with caplog.at_level(logging.WARNING, logger="nmt.http_guard"):
        asyncio.run(GuardMiddleware(broken, allowed_hosts("127.0.0.1"))(scope, None, send))
    assert sent[0]["status"] == 500 and json.loads(sent[1]["body"])["error"]["status"] == 500
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None


# ------------------------------------------------------------------ the real server
@pytest.fixture(scope="module")
def server():
    with running_server("--model", "de-en", "--header-timeout", str(HEADER_TIMEOUT),
                        "--body-timeout", str(BODY_TIMEOUT), "--max-queue",
                        str(MAX_QUEUE)) as url:
        yield url


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def raw_answer(connection: socket.socket, seconds: float = 60) -> bytes:
    """Everything the server sends until it closes the connection (or `seconds` pass)."""
    connection.settimeout(seconds)
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def refused(connection: socket.socket) -> bool:
    """Whether the server answered 503 and closed (a reset is what a client sees when the
    server closes with the client's unread headers in its buffer)."""
    try:
        return raw_answer(connection).startswith(b"HTTP/1.1 503 ")
    except ConnectionResetError:
        return True


def test_a_lone_surrogate_among_good_requests_fails_alone(server):
    bad = b'{"text": "Ein \\ud800 Hund."}'
    with ThreadPoolExecutor(MAX_QUEUE) as pool:
        good = pool.map(lambda s: post(server, {"text": s}), SENTENCES * 2)
        status, answer = request(server + "/translate", "POST", bad, JSON_TYPE)
        results = list(good)
    assert status == 400 and "lone surrogate" in answer["error"]["message"]
    assert [status for status, _ in results] == [200] * len(SENTENCES) * 2


@pytest.mark.parametrize("raw", [b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                 b'{"text": "a", "beam": 1' + b"0" * 5000 + b"}"],
                         ids=["deep", "huge-integer"])
def test_deep_json_and_huge_integers_are_json_400(server, raw):
    status, answer = request(server + "/translate", "POST", raw, JSON_TYPE)
    assert status == 400 and answer["error"]["status"] == 400


def test_slow_headers_neither_starve_health_nor_stay_open(server):
    host, port = address(server)
    flood = []
    try:
        for _ in range(1010):  # more than uvicorn's limit_concurrency, from one address
            slow = socket.socket()
            slow.bind(("127.0.0.2", 0))
            slow.connect((host, port))
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            flood.append(slow)
        status, health = request(server + "/health")
        assert status == 200 and health["status"] == "ok"
        started = time.monotonic()
        assert raw_answer(flood[0]) == b""  # closed by the header deadline
        assert time.monotonic() - started < 30
        assert refused(flood[-1])  # beyond the per-address cap
    finally:
        for slow in flood:
            slow.close()


def test_a_body_sent_one_byte_at_a_time_is_timed_out(server):
    connection = socket.create_connection(address(server), timeout=60)
    connection.sendall(b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                       b"application/json\r\nContent-Length: 1000\r\n\r\n")
    connection.settimeout(0.5)
    started, answer = time.monotonic(), b""
    try:
        while not answer and time.monotonic() - started < 60:
            try:
                connection.sendall(b" ")  # one byte every half second, never the whole body
            except OSError:
                pass  # the server has answered and closed: read the answer
            try:
                answer = connection.recv(65536)
            except TimeoutError:
                continue
        answer += raw_answer(connection)  # the rest, up to the server's close
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"status": 408' in answer
    finally:
        connection.close()
    assert post(server, {"text": SENTENCES[0]})[0] == 200


def test_hogs_do_not_slow_normal_clients(server):
    paragraph = " ".join(SENTENCES * 10)[:1000].rsplit(".", 1)[0] + "."
    hog = {"texts": [paragraph] * 64, "beam": 10}  # the largest request parse_body allows
    normal_latencies, hog_statuses, normal_statuses = [], [], []
    stop_at = time.monotonic() + 8

    def client(payload, statuses, latencies=None):
        while time.monotonic() < stop_at:
            started = time.monotonic()
            status, _ = post(server, payload)
            statuses.append(status)
            if latencies is not None:
                latencies.append(time.monotonic() - started)

    with ThreadPoolExecutor(6) as pool:
        for _ in range(2):
            pool.submit(client, hog, hog_statuses)
        for index in range(4):
            pool.submit(client, {"text": SENTENCES[index]}, normal_statuses, normal_latencies)
    assert set(hog_statuses) == {413} and set(normal_statuses) == {200}
    latencies = sorted(normal_latencies)
    assert latencies[int(0.99 * (len(latencies) - 1))] < 8.0  # a hog took 10.8 s alone


def test_a_full_queue_is_503_with_retry_after(server):
    payload = {"texts": SENTENCES * 2, "beam": 10}
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda _: _post_with_headers(server, payload), range(24)))
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
    for status, headers, answer in results:
        if status == 503:
            assert headers["Retry-After"] == "1" and answer["error"]["status"] == 503


def _post_with_headers(url: str, payload) -> tuple[int, Message, dict]:
    req = urllib.request.Request(url + "/translate", body(payload), JSON_TYPE)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_posts_must_be_json(server, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    connection = http.client.HTTPConnection(*address(server), timeout=60)
    connection.request("POST", "/translate", body({"text": "Hallo."}), headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 415 and answer["error"]["status"] == 415
    assert "application/json" in answer["error"]["message"]


def test_only_the_allowed_host_names_are_answered(server):
    host, port = address(server)
    for name, status in [("evil.example", 400), (f"evil.example:{port}", 400),
                         (f"localhost:{port}", 200), (f"127.0.0.1:{port}", 200)]:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        connection.request("GET", "/health", headers={"Host": name})
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == status, name
        if status == 400:
            assert "evil.example" in answer["error"]["message"]


def test_security_headers_and_head(server):
    for path in ("/", "/health", "/static/app.js", "/nothing-here"):
        with _open(server + path) as response:
            policy = response.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/", "/health"):
        with _open(server + path) as got, _open(server + path, "HEAD") as head:
            assert head.status == got.status == 200 and head.read() == b""
            assert head.headers["Content-Type"] == got.headers["Content-Type"]


def _open(url: str, method: str = "GET"):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=60)
    except urllib.error.HTTPError as error:
        return error
