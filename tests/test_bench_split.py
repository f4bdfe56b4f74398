"""bench/bench_split.py: the segmenter comparison behind nmt.sentences runs on real data."""

import json
from pathlib import Path

from bench import bench_split

TATOEBA_ZIP = (Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tatoeba-deu-eng"
               / "deu-eng.zip")


def test_the_hand_split_lines_are_well_formed():
    gold = bench_split.read_gold()
    assert len(gold) >= 50
    assert {language for language, _ in gold} == {"de", "en"}
    assert all(sentences and all(sentences) for _, sentences in gold)


def test_bench_split_compares_every_candidate(tmp_path):
    assert bench_split.main(["--tatoeba", str(TATOEBA_ZIP), "--results-dir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "bench_split.json").read_text(encoding="utf-8"))
    assert payload["tatoeba_pairs"] > 2000  # pairs with sentence punctuation inside a line
    names = [run["segmenter"] for run in payload["runs"]]
    assert names == list(bench_split.candidates())
    for run in payload["runs"]:
        assert 0.5 < run["gold_exact"] <= 1 and 0.5 < run["tatoeba_agree"] <= 1
    # the one nmt uses is the best on the hand-split lines
    chosen = next(r for r in payload["runs"] if r["segmenter"].startswith("sentence-splitter"))
    assert chosen["gold_exact"] == max(r["gold_exact"] for r in payload["runs"])
    assert "| segmenter |" in (tmp_path / "bench_split.md").read_text(encoding="utf-8")
