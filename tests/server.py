"""Run `python translate.py serve` in a subprocess for tests that need a real server.

    from tests.server import running_server

    with running_server() as url:            # the released model on a free loopback port
        urllib.request.urlopen(url + "/health")

The server is started on a free port, awaited through `GET /health` (the test fails with the
server's output if it dies or does not come up in time) and stopped with SIGINT, the way a
person stops it with Ctrl-C; a clean stop (exit code 0 within `STOP_TIMEOUT` seconds) is
asserted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120.0  # seconds for the model to load and warm up
STOP_TIMEOUT = 20.0  # seconds for a clean exit after SIGINT


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it for a socket bound to 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _option(args: tuple[str, ...], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in `args` (the last one wins)."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _client_host(server_host: str) -> str:
    """Where a client on this machine reaches a server listening on `server_host`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(server_host,
                                                                              server_host)
    return f"[{host}]" if ":" in host else host


def _output(stdout, stderr) -> str:
    stdout.seek(0)
    stderr.seek(0)
    return f"--- stdout ---\n{stdout.read()}\n--- stderr ---\n{stderr.read()}"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return response.status == 200 and json.loads(response.read())["status"] == "ok"
    except (OSError, ValueError, KeyError):  # not listening yet, or not answering yet
        return False


@contextmanager
def running_server(*extra_args: str, checkpoint: str | os.PathLike | None = None) -> Iterator[str]:
    """Serve `checkpoint` (default: the released model) and yield the base URL, such as
    `http://127.0.0.1:41234` (no trailing slash). `extra_args` go to `translate.py serve`
    (e.g. `"--no-batching"`); a `--port` is chosen here unless one is given."""
    args = tuple(str(arg) for arg in extra_args)
    port = _option(args, "--port")
    if port is None:
        port = str(free_port())
        args += ("--port", port)
    if checkpoint is not None:
        args += ("--checkpoint", str(checkpoint))
    url = f"http://{_client_host(_option(args, '--host') or '127.0.0.1')}:{port}"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    # Files, not pipes: a server that writes a lot can never block on a full pipe.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stdout, \
            tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        process = subprocess.Popen([sys.executable, "translate.py", "serve", *args], cwd=REPO,
                                   stdout=stdout, stderr=stderr, env=env, text=True)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _healthy(url):
                if process.poll() is not None:
                    pytest.fail(f"the server exited with code {process.returncode} before it "
                                f"was ready\n{_output(stdout, stderr)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer {url}/health within "
                                f"{START_TIMEOUT:.0f} s\n{_output(stdout, stderr)}")
                time.sleep(0.5)
        except BaseException:
            _kill(process)
            raise
        try:
            yield url
        except BaseException:
            _kill(process)  # the test failed: its error matters, not how the server stops
            raise
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill(process)
            pytest.fail(f"the server did not stop within {STOP_TIMEOUT:.0f} s of SIGINT\n"
                        f"{_output(stdout, stderr)}")
        assert process.returncode == 0, (f"the server exited with code {process.returncode} "
                                         f"after SIGINT\n{_output(stdout, stderr)}")


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
