"""The HTTP service: request checking, request batching, and every endpoint of a real server
running the released model in a subprocess (bad requests included)."""

import asyncio
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from nmt.config import Config
from nmt.service import RequestBatcher, RequestError, ServiceLimits, check_host, parse_body
from tests.server import free_port, running_server

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.",
             "Eine Frau in einem roten Kleid singt auf einer Bühne.", "Kinder spielen.",
             "Ein Junge springt in einen See.", "Drei Männer arbeiten auf einer Baustelle.",
             "Ein schwarzer Hund rennt über eine grüne Wiese.", "Eine Gruppe von Menschen."]


# ------------------------------------------------------------------- request checking
def body(value) -> bytes:
    return json.dumps(value).encode("utf-8")


@pytest.mark.parametrize("raw, status, fragment", [
    (b"\xff\xfe{}", 400, "UTF-8"),
    (b'{"text": "Hallo"', 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (body(["Hallo"]), 422, "JSON object"),
    (body({}), 422, "exactly one"),
    (body({"text": "a", "texts": ["b"]}), 422, "exactly one"),
    (body({"text": 5}), 422, "must be a string"),
    (body({"text": None}), 422, "must be a string"),
    (body({"texts": "Hallo"}), 422, "list of strings"),
    (body({"texts": ["a", 3]}), 422, "list of strings"),
    (body({"texts": []}), 422, "is empty"),
    (body({"text": "   "}), 422, "is empty"),
    (body({"texts": ["Hallo", ""]}), 422, '"texts"[1] is empty'),
    (body({"text": "Hallo", "lang": "de"}), 422, "unknown field(s) ['lang']"),
    (body({"text": "Hallo", "beam": 0}), 422, '"beam" must be an integer from 1 to 10'),
    (body({"text": "Hallo", "beam": 11}), 422, "from 1 to 10"),
    (body({"text": "Hallo", "beam": 2.5}), 422, "from 1 to 10"),
    (body({"text": "Hallo", "beam": True}), 422, "not true"),
    (body({"text": "Hallo", "beam": 2, "n_best": 3}), 422,
     '"n_best" must be an integer from 1 to 2'),
    (body({"text": "Hallo", "n_best": 0}), 422, '"n_best" must be an integer'),
    (body({"text": "Hallo", "split": "yes"}), 422, '"split" must be true or false'),
    (body({"text": "x" * 1001}), 413, "1001 characters; at most 1000"),
    (body({"texts": ["Hallo"] * 65}), 413, "65 sentences; at most 64"),
    (b'{"text": "' + b"x" * (256 * 1024) + b'"}', 413, "over 262144 bytes"),
])
def test_bad_bodies_name_the_problem(raw, status, fragment):
    with pytest.raises(RequestError) as caught:
        parse_body(raw, ServiceLimits())
    assert caught.value.status == status
    assert fragment in caught.value.message


def test_good_bodies():
    limits = ServiceLimits()
    assert parse_body(body({"text": "Ein Hund."}), limits) == (
        ["Ein Hund."], 5, None, True, 1, False)
    assert parse_body(body({"texts": ["a", "b"], "beam": 1}), limits) == (
        ["a", "b"], 1, None, True, 1, False)
    assert parse_body("{\"text\": \"Grüße\"}".encode(), limits) == (
        ["Grüße"], 5, None, True, 1, False)
    assert parse_body(body({"text": "a", "beam": 3, "n_best": 3, "split": False,
                            "heads": True}), limits) == (["a"], 3, None, False, 3, True)
    assert parse_body(body({"texts": ["x" * 1000] * 64}), limits)[0] == ["x" * 1000] * 64


def test_only_loopback_is_quiet():
    assert check_host("127.0.0.1") is None and check_host("::1") is None
    assert "no authentication" in check_host("0.0.0.0")


# ------------------------------------------------------------------------- batching
class RecordingTranslator:
    """Stands in for `Translator` to observe how requests are grouped into decoder calls:
    it 'translates' a sentence to its upper-case form, slowly enough for requests to queue."""

    def __init__(self):
        self.calls: list[tuple[list[str], int]] = []

    def translate(self, texts, beam, alpha, batch_size, n_best=1):
        self.calls.append((list(texts), beam))
        time.sleep(0.05)
        return [text.upper() for text in texts]


def run_clients(batcher: RequestBatcher, requests: list[tuple[list[str], int]]):
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.translate(t, b) for t, b in requests))
        finally:
            await batcher.stop()
    return asyncio.run(main())


def test_concurrent_requests_share_one_decoder_call_and_get_their_own_answers():
    fake = RecordingTranslator()
    requests = [([f"satz {i}", f"noch {i}"], 5) for i in range(6)] + [(["greedy"], 1)]
    answers = run_clients(RequestBatcher(fake, window=0.2, max_batch=64), requests)
    assert answers == [[t.upper() for t in texts] for texts, _ in requests]
    # One call per beam size: all beam-5 requests together, the greedy one alone.
    assert sorted(beam for _, beam in fake.calls) == [1, 5]
    assert [len(texts) for texts, beam in fake.calls if beam == 5] == [12]


def test_batches_respect_max_batch():
    fake = RecordingTranslator()
    requests = [([f"s{i}"] * 3, 5) for i in range(5)]
    answers = run_clients(RequestBatcher(fake, window=0.2, max_batch=6), requests)
    assert answers == [[t.upper() for t in texts] for texts, _ in requests]
    assert all(len(texts) <= 6 for texts, _ in fake.calls) and len(fake.calls) >= 3


def test_without_batching_every_request_is_its_own_call():
    fake = RecordingTranslator()
    requests = [([f"satz {i}"], 5) for i in range(4)]
    answers = run_clients(RequestBatcher(fake, window=0.2, enabled=False), requests)
    assert answers == [[f"SATZ {i}"] for i in range(4)]
    assert len(fake.calls) == 4


def test_a_failing_call_answers_every_waiting_client_with_the_error():
    class Broken(RecordingTranslator):
        def translate(self, texts, beam, alpha, batch_size, n_best=1):
            raise RuntimeError("decoder exploded")

    async def main():
        batcher = RequestBatcher(Broken(), window=0.1)
        batcher.start()
        results = await asyncio.gather(batcher.translate(["a"], 5), batcher.translate(["b"], 5),
                                       return_exceptions=True)
        await batcher.stop()
        return results
    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


# ------------------------------------------------------------------ the real server
def request(url: str, method: str = "GET", data: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of one HTTP request; error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


JSON_TYPE = {"Content-Type": "application/json"}


def post(url: str, payload) -> tuple[int, dict]:
    return request(url + "/translate", "POST", body(payload), JSON_TYPE)


@pytest.fixture(scope="module")
def server():
    with running_server("--model", "de-en", "--model", "en-de") as url:
        yield url


def test_health_and_info(server):
    # The checkpoint's config.json as a Config: fields added since it was written take their
    # defaults, as when the service loaded it.
    saved = {name: Config.load(REPO / f"checkpoints/{name}/config.json").to_dict()
             for name in ("de-en", "en-de")}
    status, health = request(server + "/health")
    assert status == 200
    assert health == {"status": "ok", "model_loaded": True, "checkpoint": "de-en",
                      "score": saved["de-en"]["model"]["score"],
                      "attention_mode": saved["de-en"]["model"]["attention_mode"],
                      "models": ["de-en", "en-de"]}
    assert health["score"] in ("dot", "scaled_dot", "general", "cosine", "additive")
    status, info = request(server + "/info")
    assert status == 200 and info["config"] == saved["de-en"] and info["default_model"] == "de-en"
    assert [(m["name"], m["source_language"], m["target_language"]) for m in info["models"]] == [
        ("de-en", "de", "en"), ("en-de", "en", "de")]
    for model in info["models"]:
        config = saved[model["name"]]
        assert model["config"] == config
        assert model["attention"] == {"architecture": "rnn", "layers": None, "heads": None,
                                      "alignment_layer": None}
        assert model["vocab_sizes"] == {"source": config["model"]["src_vocab_size"],
                                        "target": config["model"]["tgt_vocab_size"]}
        metrics = json.loads((REPO / f"checkpoints/{model['name']}/metrics.json").read_text())
        assert model["metrics"]["val_bleu"] == metrics["best"]["val_bleu"]
    assert info["limits"]["max_sentences"] == 64


def test_requests_choose_the_model(server):
    status, german = post(server, {"text": "The weather is very nice today.", "model": "en-de"})
    assert status == 200 and german["model"] == "en-de"
    status, english = post(server, {"text": german["translations"][0]["translation"]})
    assert status == 200 and english["model"] == "de-en"  # the first model is the default
    assert "weather" in english["translations"][0]["translation"].lower()
    status, refusal = post(server, {"text": "Hallo.", "model": "fr-en"})
    assert status == 422
    assert refusal["error"]["message"] == \
        "\"model\" must be one of ['de-en', 'en-de'], not \"fr-en\""


def test_translate_matches_the_command_line(server):
    status, answer = post(server, {"texts": SENTENCES[:3], "beam": 5})
    assert status == 200 and answer["beam"] == 5
    cli = subprocess.run([sys.executable, "translate.py", "--beam", "5", *SENTENCES[:3]],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert [t["translation"] for t in answer["translations"]] == cli.stdout.splitlines()
    for item, source in zip(answer["translations"], SENTENCES[:3], strict=True):
        weights = np.array(item["attention"])
        assert item["source"] == source
        assert weights.shape == (len(item["target_tokens"]), len(item["source_tokens"]))
        assert item["source_tokens"][-1] == "</s>"
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-3)


def test_single_text_and_default_beam(server):
    status, answer = post(server, {"text": SENTENCES[0]})
    assert status == 200 and answer["beam"] == 5 and len(answer["translations"]) == 1
    status, greedy = post(server, {"text": SENTENCES[0], "beam": 1})
    assert status == 200 and greedy["beam"] == 1 and greedy["translations"][0]["translation"]


def test_a_paragraph_is_translated_sentence_by_sentence(server):
    paragraph = "Ein Hund rennt. Dr. Müller liest z. B. ein Buch. Zwei Kinder spielen."
    status, answer = post(server, {"texts": [paragraph, SENTENCES[0]], "beam": 1})
    assert status == 200
    records = answer["translations"]
    assert [(r["line"], r["sentence"]) for r in records] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert [r["source"] for r in records[:3]] == [
        "Ein Hund rennt.", "Dr. Müller liest z. B. ein Buch.", "Zwei Kinder spielen."]
    assert [line["source"] for line in answer["lines"]] == [paragraph, SENTENCES[0]]
    assert answer["lines"][0]["translation"] == " ".join(r["translation"] for r in records[:3])
    status, whole = post(server, {"text": paragraph, "beam": 1, "split": False})
    assert status == 200 and len(whole["translations"]) == 1
    assert whole["translations"][0]["source"] == paragraph


def test_n_best_lists_the_candidates_of_every_sentence(server):
    status, answer = post(server, {"text": "Ein Hund rennt. Eine Katze schläft.", "beam": 4,
                                   "n_best": 3})
    assert status == 200
    for record in answer["translations"]:
        candidates = record["n_best"]
        assert len(candidates) == 3 and candidates[0]["translation"] == record["translation"]
        scores = [candidate["score"] for candidate in candidates]
        assert scores == sorted(scores, reverse=True)
    status, plain = post(server, {"text": "Ein Hund rennt.", "beam": 4})
    assert status == 200 and "n_best" not in plain["translations"][0]


def test_concurrent_clients_get_the_answers_of_single_requests(server):
    singles = {}
    for sentence in SENTENCES:
        status, answer = post(server, {"text": sentence, "beam": 5})
        assert status == 200
        singles[sentence] = answer["translations"][0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda s: post(server, {"text": s, "beam": 5}), SENTENCES * 3))
    for sentence, (status, answer) in zip(SENTENCES * 3, results, strict=True):
        assert status == 200
        together = answer["translations"][0]
        assert together["translation"] == singles[sentence]["translation"]
        assert together["target_tokens"] == singles[sentence]["target_tokens"]
        np.testing.assert_allclose(together["attention"], singles[sentence]["attention"],
                                   atol=1e-3)


@pytest.mark.parametrize("payload, status, fragment", [
    ({"text": 5}, 422, "must be a string"),
    ({"text": ""}, 422, "is empty"),
    ({"text": "Hallo", "extra": 1}, 422, "unknown field"),
    ({"texts": ["Hallo"] * 65}, 413, "at most 64"),
    ({"text": "x" * 1001}, 413, "at most 1000"),
    ({"text": "Hallo", "beam": 50}, 422, "beam"),
    ({"text": "Hallo", "heads": True}, 422, "need a Transformer"),
    ({"text": "Hallo", "heads": 1}, 422, '"heads" must be true or false'),
])
def test_bad_requests_get_json_errors(server, payload, status, fragment):
    got, answer = post(server, payload)
    assert got == status
    assert answer["error"]["status"] == status and fragment in answer["error"]["message"]


def test_malformed_bodies_and_methods(server):
    for raw, status in [(b'{"text": "Hal', 400), (b"\xc3\x28\xa0\xa1", 400)]:
        got, answer = request(server + "/translate", "POST", raw, JSON_TYPE)
        assert got == status and answer["error"]["status"] == status
    got, answer = request(server + "/translate")
    assert got == 405 and answer["error"]["status"] == 405
    got, answer = request(server + "/nothing-here")
    assert got == 404 and answer["error"]["status"] == 404


def test_oversized_bodies_are_refused_before_being_read(server):
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/translate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(10 * 1024 * 1024))
    connection.endheaders()
    connection.send(b'{"text": "')  # the rest is never sent: the server must not wait for it
    response = connection.getresponse()
    assert response.status == 413 and b"over 262144 bytes" in response.read()
    connection.close()
    # A chunked body without Content-Length is counted as it arrives.
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (b"x" * 65536 for _ in range(8))
    connection.request("POST", "/translate", body=chunks, headers=JSON_TYPE,
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    connection.close()
    status, _ = post(server, {"text": "Ein Hund."})  # and the server still serves
    assert status == 200


def test_a_stalled_client_does_not_block_others(server):
    host, port = server.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)), timeout=30)
    stalled.sendall(b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"te")
    try:
        status, answer = post(server, {"text": SENTENCES[1]})
        assert status == 200 and answer["translations"][0]["translation"]
    finally:
        stalled.close()


def test_page_and_static_files_are_served(server):
    with urllib.request.urlopen(server + "/", timeout=30) as response:
        page = response.read().decode("utf-8")
        assert response.status == 200 and "text/html" in response.headers["Content-Type"]
    assert "<html" in page.lower()
    status, schema = request(server + "/openapi.json")
    body_schema = schema["paths"]["/translate"]["post"]["requestBody"]["content"]
    assert status == 200 and set(body_schema["application/json"]["schema"]["properties"]) == {
        "text", "texts", "beam", "model", "split", "n_best", "heads"}
    for name in ("app.js", "style.css"):
        with urllib.request.urlopen(f"{server}/static/{name}", timeout=30) as response:
            assert response.status == 200 and len(response.read()) > 100


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "translate.py", "serve", "--port", str(port)],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_server_cleanly():
    port = free_port()
    process = subprocess.Popen([sys.executable, "translate.py", "serve", "--port", str(port),
                                "--host", "0.0.0.0"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                status, _ = request(f"http://127.0.0.1:{port}/health")
                if status == 200:
                    break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                time.sleep(0.5)
        else:
            pytest.fail("the server did not come up within 180 s")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "no authentication" in err  # listening beyond loopback warns
    assert f"http://0.0.0.0:{port}/" in out
    assert "Traceback" not in err
