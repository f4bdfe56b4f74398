#!/usr/bin/env python
"""A bounded load test of `translate.py serve` on loopback, with and without batching.

    python bench/bench_serve.py --data-dir ../shared/corpora/multi30k

Starts the server in a subprocess, then runs `--clients` concurrent clients for `--seconds`,
each posting one test_2016_flickr sentence at a time and waiting for the answer. Reports
sentences per second and p50/p95/p99 latency with request batching on and off, and with
batching on while 2 more clients ("hogs") send the heaviest request the server accepts
(the 64 longest test sentences, beam 10; `hog_payload`): the normal clients' p50/p99 there show
whether one client can slow everyone else down (the table's `on, 2 hogs` row gives the
normal clients' numbers; `hog_runs` in the JSON).
Writes bench/results/bench_serve.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, write_results  # noqa: E402

RELEASED = REPO / "checkpoints" / "multi30k-de-en"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(checkpoint: str, *options: str, startup_seconds: float = 180) -> Iterator[str]:
    """A `translate.py serve` subprocess on a free loopback port; yields its base URL and
    stops it with SIGINT afterwards.

    Its stderr goes to a temporary file, not a pipe: the server logs a line per refused
    request (a hog's 413), and once a pipe nobody reads holds 64 KiB of them, the server
    blocks on its next log line and answers nobody."""
    with tempfile.TemporaryFile() as log:
        port = free_port()
        process = subprocess.Popen([sys.executable, str(REPO / "translate.py"), "serve",
                                    "--checkpoint", checkpoint, "--port", str(port), *options],
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield wait_until_healthy(process, f"http://127.0.0.1:{port}", log, startup_seconds)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_healthy(process: subprocess.Popen, url: str, log: IO[bytes],
                       seconds: float) -> str:
    """`url` once its /health answers; RuntimeError with the end of the server's `log` if
    it exits first, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError("the server exited: " + log.read().decode()[-2000:])
        try:
            with urllib.request.urlopen(url + "/health", timeout=5):
                return url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer within {seconds} s") from None
            time.sleep(0.5)


def load(url: str, sentences: list[str], clients: int, seconds: float, beam: int,
         hogs: int = 0, timeout: float = 120.0) -> dict:
    """Closed-loop load: each client sends its next sentence as soon as it has an answer.

    `hogs` more clients send the heaviest request the server accepts (`hog_payload`) the
    same way; the latencies reported are the normal clients', and `hog_answers` counts the
    hogs' HTTP statuses. A request unanswered after `timeout` seconds counts as an error
    (a hog's as "TimeoutError")."""
    latencies: list[float] = []
    errors = [0]
    hog_answers: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    hog_body = hog_payload(sentences)

    def client(offset: int) -> None:
        index = offset
        while time.perf_counter() < stop_at:
            payload = json.dumps({"text": sentences[index % len(sentences)], "beam": beam})
            start = time.perf_counter()
            status = post(url, payload.encode("utf-8"), timeout)
            with lock:
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[0] += 1
            index += clients

    def hog() -> None:
        while time.perf_counter() < stop_at:
            status = str(post(url, hog_body, timeout))
            with lock:
                hog_answers[status] = hog_answers.get(status, 0) + 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads += [threading.Thread(target=hog) for _ in range(hogs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered \
            else float("nan")

    return {"sentences": len(latencies), "errors": errors[0], "seconds": round(elapsed, 2),
            "sentences_per_second": len(latencies) / elapsed, "p50_ms": percentile(50),
            "p95_ms": percentile(95), "p99_ms": percentile(99), "hogs": hogs,
            "hog_answers": hog_answers}


def hog_payload(sentences: list[str]) -> bytes:
    """The heaviest request `serve` accepts by default: the 64 longest test sentences at
    beam 10 (20,090 source tokens x beam, under `--max-work` 24,000). The request the issue
    measured before the bound (64 texts of 1,000 characters at beam 10) is now refused with
    413 before any decoding."""
    longest = sorted(sentences, key=len, reverse=True)[:64]
    return json.dumps({"texts": longest, "beam": 10}).encode("utf-8")


def post(url: str, payload: bytes, timeout: float = 120.0) -> int | str:
    """POST `payload` to /translate and read the answer: its HTTP status, or the name of
    the error when there is none."""
    request = urllib.request.Request(url + "/translate", payload,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError) as error:
        return type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(RELEASED))
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration per setting")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument("--hogs", type=int, default=2,
                        help="clients sending the largest request, beside --clients normal "
                             "ones, in a third run (0: no such run)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a client waits for one answer before counting an error")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)

    from nmt.data import load_split

    sentences = load_split("multi30k", "test_2016_flickr", "de", "en", data_dir=args.data_dir)[0]
    settings = [(True, 0), (False, 0)] + ([(True, args.hogs)] if args.hogs else [])
    results = []
    for batching, hogs in settings:
        options = ["--batch-window-ms", str(args.batch_window_ms)]
        options += [] if batching else ["--no-batching"]
        with server(args.checkpoint, *options) as url:
            load(url, sentences, args.clients, min(args.seconds, 3.0), args.beam,  # warm-up
                 timeout=args.timeout)
            result = load(url, sentences, args.clients, args.seconds, args.beam, hogs,
                          args.timeout)
        results.append({"batching": batching, **result})
        print(f"batching {'on ' if batching else 'off'}"
              f"{f' + {hogs} hogs' if hogs else ''}: {result['sentences_per_second']:.1f} "
              f"sentences/s, p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
              f"p99 {result['p99_ms']:.0f} ms, {result['errors']} errors"
              + (f", hog answers {result['hog_answers']}" if hogs else ""), file=sys.stderr)
    runs, hog_runs = results[:2], results[2:]
    payload = {"checkpoint": Path(args.checkpoint).name, "clients": args.clients,
               "seconds": args.seconds, "beam": args.beam,
               "batch_window_ms": args.batch_window_ms, "runs": runs, "hog_runs": hog_runs}
    rows = [[("on" if r["batching"] else "off") + (f", {r['hogs']} hogs" if r["hogs"] else ""),
             r["sentences_per_second"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["errors"],
             ", ".join(f"{n} x {s}" for s, n in r["hog_answers"].items()) or "-"]
            for r in results]
    write_results("bench_serve", payload, ["request batching", "sentences/s", "p50 ms",
                                           "p95 ms", "p99 ms", "errors", "hog answers"], rows,
                  Path(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
