"""nmt.xla_cache: translate.py keeps its compiled searches on disk and reuses them."""

import os
import subprocess
import sys

from nmt import xla_cache
from tests.helpers import REPO, tiny_config


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NMT_XLA_CACHE", str(tmp_path / "mine"))
    assert xla_cache.cache_directory().parent == tmp_path / "mine"
    assert xla_cache.cache_directory().name.startswith("tensorflow-")
    monkeypatch.setenv("NMT_XLA_CACHE", "off")
    assert xla_cache.cache_directory() is None
    monkeypatch.delenv("NMT_XLA_CACHE")  # opt-in: unset means no cache
    assert xla_cache.cache_directory() is None
    monkeypatch.setenv("NMT_XLA_CACHE", "on")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert xla_cache.cache_directory().parent == tmp_path / "xdg" / "nmt" / "xla"


def test_enabling_adds_the_flag_once_and_keeps_the_users_own(monkeypatch, tmp_path):
    monkeypatch.setenv("NMT_XLA_CACHE", str(tmp_path))
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    directory = xla_cache.enable_xla_cache()
    assert directory.is_dir()
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {xla_cache.FLAG}={directory}"
    assert xla_cache.enable_xla_cache() is None  # named already: left alone
    assert os.environ["TF_XLA_FLAGS"].count(xla_cache.FLAG) == 1


def test_a_folder_that_cannot_be_made_means_no_cache(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("NMT_XLA_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    assert xla_cache.enable_xla_cache() is None
    assert "TF_XLA_FLAGS" not in os.environ


def test_a_second_run_loads_what_the_first_compiled(tiny_run, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "NMT_XLA_CACHE": str(cache)}
    env.pop("TF_XLA_FLAGS", None)
    document = tmp_path / "document.de"  # 20 sentences at beam 5: compiled, not eager
    document.write_text("Ein Mann fährt Fahrrad.\nZwei Hunde spielen im Schnee.\n" * 10,
                        encoding="utf-8")

    def translate(*arguments):  # float32: --dtype auto would search 16 x 5 in bfloat16's graph
        completed = subprocess.run(
            [sys.executable, str(REPO / "translate.py"), "--checkpoint", str(tiny_run),
             "--dtype", "float32", *arguments], capture_output=True, text=True, env=env,
            timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        return completed.stdout, sorted(path.name for path in cache.rglob("*.pb"))

    first, compiled = translate("-i", str(document))
    second, after = translate("-i", str(document))
    assert compiled and after == compiled  # loaded, not compiled again
    assert second == first
    # One sentence is searched eagerly (nmt.compiled_search): nothing new to compile.
    one, after_one = translate("Ein Mann fährt Fahrrad.")
    assert after_one == compiled and one == first.splitlines(keepends=True)[0]


def test_an_xla_training_keeps_its_compiled_step_and_a_second_seed_loads_it(tmp_path):
    """train.py honours NMT_XLA_CACHE too: a second run of the same model with another seed
    (as the study's seeds are) compiles nothing new."""
    cache = tmp_path / "cache"
    env = {**os.environ, "NMT_XLA_CACHE": str(cache)}
    env.pop("TF_XLA_FLAGS", None)

    def train(seed: int) -> list[str]:
        config = tmp_path / f"config-{seed}.json"
        settings = tiny_config(epochs=1, jit_compile=True, seed=seed, bucket_boundaries=[48])
        settings.data.train_limit, settings.data.valid_limit = 300, 10  # one shape to compile
        config.write_text(settings.to_json(), encoding="utf-8")
        completed = subprocess.run(
            [sys.executable, "train.py", "--config", str(config), "--run-dir",
             str(tmp_path / f"run-{seed}"), "--quiet"],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
        assert completed.returncode == 0, completed.stderr[-2000:]
        return sorted(path.name for path in cache.rglob("*.pb"))

    compiled = train(1)
    assert compiled  # the training step of each batch shape, on disk
    assert train(2) == compiled
