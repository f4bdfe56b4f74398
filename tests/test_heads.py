"""A Transformer's cross-attention per layer and head, end to end: train.py's Transformer
flags, translate.py --plot-heads and --json --heads, the HTTP API's "heads", the web page's
layer · head menu (in headless Chromium), and one-line refusals for an RNN checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from nmt.cli import translate
from tests.browser import CELLS_SCRIPT, WAIT
from tests.helpers import MULTI30K, REPO, assert_clean_error
from tests.server import running_server
from tests.test_service import post, request

LAYERS, HEADS = 2, 2
SENTENCE = "Ein Mann fährt Fahrrad."


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory, multi30k_dir) -> Path:
    """A tiny Transformer trained for one epoch by train.py (in a process of its own, so
    that its reseeding touches no tokenizer of this process)."""
    run_dir = tmp_path_factory.mktemp("transformer") / "run"
    command = [sys.executable, "train.py", "--data-dir", MULTI30K, "--run-dir", run_dir,
               "--train-limit", 1500, "--valid-limit", 20, "--src-vocab-size", 600,
               "--tgt-vocab-size", 600, "--max-length", 48, "--epochs", 1,
               "--architecture", "transformer", "--layers", LAYERS, "--model-dim", 32,
               "--heads", HEADS, "--ffn-dim", 64, "--batch-tokens", 1024,
               "--no-mixed-precision", "--quiet"]
    done = subprocess.run([str(part) for part in command], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    config = json.loads((run_dir / "config.json").read_text())["model"]
    assert (config["architecture"], config["layers"], config["heads"]) == (
        "transformer", LAYERS, HEADS)
    return run_dir


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = translate.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_heads_carry_every_layer_and_head(capsys, transformer_run):
    code, out, err = run_cli(capsys, "--checkpoint", transformer_run, "--json", "--heads",
                             "--beam", 2, SENTENCE, "")
    assert code == 0, err
    record, empty = (json.loads(line) for line in out.splitlines())
    heads = np.array(record["heads"])
    shape = (len(record["target_tokens"]), len(record["source_tokens"]))
    assert heads.shape == (LAYERS, HEADS, *shape)
    np.testing.assert_allclose(heads.sum(axis=-1), 1.0, atol=1e-4)
    # the plain matrix is the head-average of the default (penultimate) layer
    np.testing.assert_allclose(heads[LAYERS - 2].mean(axis=0), record["attention"], atol=1e-4)
    assert empty["heads"] == [] and empty["translation"] == ""
    code, out, err = run_cli(capsys, "--checkpoint", transformer_run, "--json", SENTENCE)
    assert code == 0 and "heads" not in json.loads(out), err


def test_plot_heads_draws_one_grid_of_every_layer_and_head(capsys, tmp_path, transformer_run):
    pictures = {}
    for name, flags in (("average", []), ("grid", ["--plot-heads"])):
        code, _, err = run_cli(capsys, "--checkpoint", transformer_run, "--plot-dir",
                               tmp_path / name, *flags, SENTENCE)
        assert code == 0, err
        (path,) = (tmp_path / name).iterdir()
        pictures[name] = imread(path)
    # LAYERS rows and HEADS columns of heatmaps: larger both ways than one heatmap
    assert pictures["grid"].shape[0] > pictures["average"].shape[0]
    assert pictures["grid"].shape[1] > pictures["average"].shape[1]


@pytest.mark.parametrize("flags", [["--plot-dir", "plots", "--plot-heads"],
                                   ["--json", "--heads"]])
def test_an_rnn_checkpoint_refuses_heads_in_one_line(capsys, tmp_path, tiny_run, flags):
    flags = [str(tmp_path / f) if f == "plots" else f for f in flags]
    code, out, err = run_cli(capsys, "--checkpoint", tiny_run, *flags, SENTENCE)
    assert_clean_error(code, out, err, flags[-1], "Transformer")
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--plot-heads"], "--plot-dir"), (["--heads"], "--json")])
def test_heads_options_need_their_output(capsys, flags, fragment):
    code, out, err = run_cli(capsys, *flags, SENTENCE)
    assert_clean_error(code, out, err, flags[0], fragment)


def test_the_api_gives_heads_when_asked(transformer_run):
    with running_server(checkpoint=transformer_run) as url:
        _, info = request(url + "/info")
        assert info["attention"] == {"architecture": "transformer", "layers": LAYERS,
                                     "heads": HEADS, "alignment_layer": LAYERS - 2}
        status, answer = post(url, {"texts": [SENTENCE, "Ein Hund. Eine Katze."],
                                    "heads": True, "beam": 3})
        assert status == 200, answer
        assert len(answer["translations"]) == 3
        for record in answer["translations"]:
            heads = np.array(record["heads"])
            shape = (len(record["target_tokens"]), len(record["source_tokens"]))
            assert heads.shape == (LAYERS, HEADS, *shape)
            np.testing.assert_allclose(heads[LAYERS - 2].mean(axis=0), record["attention"],
                                       atol=1e-4)
        status, answer = post(url, {"text": SENTENCE})
        assert status == 200 and "heads" not in answer["translations"][0]


def test_the_page_draws_the_chosen_layer_and_head(browser, transformer_run):
    """The web page's layer · head menu (shown for a Transformer only): every choice redraws
    the heatmap with that layer's head, or that layer's average over heads, of the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def drawn() -> np.ndarray:
        cells = browser.execute_script(CELLS_SCRIPT)
        matrix = np.zeros((max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1))
        for row, col, _, _, weight, *_ in cells:
            matrix[row, col] = weight
        return matrix

    with running_server(checkpoint=transformer_run) as url:
        wait, find = WebDriverWait(browser, WAIT), browser.find_element
        browser.get(url + "/")
        wait.until(lambda d: find(By.ID, "status").get_attribute("data-state") == "ready")
        assert find(By.ID, "view-choice").get_attribute("hidden") is None  # a Transformer
        menu = Select(find(By.ID, "view-select"))
        assert [o.get_attribute("value") for o in menu.options] == ["default"] + [
            value for layer in range(LAYERS)
            for value in (str(layer), *(f"{layer}.{head}" for head in range(HEADS)))]
        find(By.ID, "source").clear()
        find(By.ID, "source").send_keys(SENTENCE)
        find(By.ID, "translate").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap .cell")
                   and not d.find_element(By.ID, "translate").get_attribute("disabled"))
        assert find(By.ID, "view-choice").is_displayed()  # beside the drawn heatmap
        _, info = request(url + "/info")
        status, answer = post(url, {"text": SENTENCE, "heads": True,
                                    "beam": info["limits"]["default_beam"]})
        assert status == 200, answer
        expected = answer["translations"][0]
        assert find(By.ID, "translation").text == expected["translation"]
        heads = np.array(expected["heads"])  # [layers, heads, tt, ts]
        np.testing.assert_allclose(drawn(), expected["attention"], atol=1e-6)
        for value, matrix in (("1.1", heads[1, 1]), ("0.0", heads[0, 0]),
                              ("1", heads[1].mean(axis=0)),
                              ("default", np.array(expected["attention"]))):
            menu.select_by_value(value)
            np.testing.assert_allclose(drawn(), matrix, atol=1e-6, err_msg=value)
        assert not np.allclose(heads[1, 1], heads[1, 0], atol=1e-3)  # the heads differ
