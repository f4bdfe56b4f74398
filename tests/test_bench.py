"""The benchmark scripts run end to end in a tiny mode and write readable results."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import bench_quality, bench_serve, bench_train, bench_translate, profile_train
from tests.helpers import REPO

TATOEBA = REPO.parent / "shared" / "corpora" / "tatoeba-deu-eng"


def read_results(directory, name):
    payload = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    table = (directory / f"{name}.md").read_text(encoding="utf-8")
    return payload, table


def test_bench_train_tiny_writes_json_and_markdown(tmp_path, multi30k_dir):
    code = bench_train.main(["--tiny", "--xla", "off", "--data-dir", str(multi30k_dir),
                             "--results-dir", str(tmp_path)])
    assert code == 0
    payload, table = read_results(tmp_path, "bench_train")
    mixed, plain = payload["runs"]
    assert mixed["precision"] in ("mixed_bfloat16", "mixed_float16")
    assert plain["precision"] == "float32"
    for run in (mixed, plain):
        assert run["jit_compile"] is False and run["target_tokens_per_second"] > 0
        assert 0 < run["hardware_fraction"] < 1
    assert 0 < payload["padding_fraction"] < 1 and payload["matmul_peak_gflops"] > 0
    assert payload["matmul_peak_bfloat16_gflops"] > 0
    assert payload["flops_per_target_token"] > 0 and payload["machine"]["cores"] >= 1
    assert table.startswith("| XLA | precision | target tokens/s")
    assert "| off | float32 |" in table and f"| off | {mixed['precision']} |" in table


def test_profile_train_splits_a_real_steps_op_time_by_kind(tmp_path, multi30k_dir):
    code = profile_train.main(["--tiny", "--steps", "3", "--data-dir", str(multi30k_dir),
                               "--results-dir", str(tmp_path)])
    assert code == 0
    payload, table = read_results(tmp_path, "profile_train")
    kinds = payload["kinds"]
    assert payload["steps"] == 3 and payload["wall_ms_per_step"] > 0
    # a GRU step multiplies and steps through time
    assert {"matmul", "loops, calls and the executor"} <= set(kinds)
    assert kinds["matmul"]["ops"] > 0 and "MatMul" in " ".join(kinds["matmul"]["top_types"])
    assert sum(entry["share"] for entry in kinds.values()) == pytest.approx(1.0)
    assert sum(entry["ms_per_step"] for entry in kinds.values()) == pytest.approx(
        payload["op_ms_per_step"])
    assert table.startswith("| kind of op | ms per step (both cores) | share of op time |")


def test_nested_events_give_their_time_to_the_event_they_run_in():
    # a loop of 10 from 0 running two ops (2 and 3 long), then an op of its own
    events = [(0, 10, "While"), (1, 2, "MatMul"), (4, 3, "Tanh"), (10, 5, "Cast")]
    assert profile_train.exclusive_times(events) == [("While", 5), ("MatMul", 2),
                                                      ("Tanh", 3), ("Cast", 5)]
    nested = [(0, 10, "Process"), (0, 8, "While"), (2, 2, "MatMul")]
    assert profile_train.exclusive_times(nested) == [("Process", 2), ("While", 6),
                                                      ("MatMul", 2)]
    outlasting = [(0, 4, "Process"), (3, 5, "Send")]  # only 1 of its 5 inside the parent
    assert profile_train.exclusive_times(outlasting) == [("Process", 3), ("Send", 5)]


def test_kinds_of_ops():
    assert profile_train.kind_of("MatMul") == "matmul"
    assert profile_train.kind_of("_MklFusedMatMul") == "matmul"
    assert profile_train.kind_of("Cast") == "cast (mixed precision)"
    assert profile_train.kind_of("TensorListSetItem") == "tensor arrays (per-step outputs)"
    assert profile_train.kind_of("While") == "loops, calls and the executor"
    assert profile_train.kind_of("SomethingNew") == "other"


def test_bench_train_rejects_unknown_settings(tmp_path):
    with pytest.raises(SystemExit, match="expected a comma-separated list of on, off"):
        bench_train.main(["--tiny", "--xla", "yes", "--results-dir", str(tmp_path)])


def test_bench_quality_scores_every_test_set(tmp_path, tiny_run, multi30k_dir):
    code = bench_quality.main(["--checkpoint", str(tiny_run),
                               "--data-dir", f"multi30k={multi30k_dir}",
                               "--data-dir", f"tatoeba={TATOEBA}", "--limit", "20",
                               "--beams", "1,2", "--results-dir", str(tmp_path)])
    assert code == 0
    payload, table = read_results(tmp_path, "bench_quality")
    assert [(r["test_set"], r["beam"]) for r in payload["runs"]] == [
        (test_set, beam) for test_set in ("multi30k val", "multi30k test_2016_flickr",
                                          "tatoeba dev", "tatoeba test") for beam in (1, 2)]
    assert all(r["sentences"] == 20 and 0 <= r["bleu"] <= 100 for r in payload["runs"])
    assert all(r["direction"] == "de-en" for r in payload["runs"])
    assert "case:mixed" in payload["bleu_signature"] and "| tatoeba test |" in table

    # The same sentences through translate.py give the same score.
    from nmt.data import load_split
    from nmt.evaluation import corpus_scores
    from nmt.translator import Translator

    sources, references = load_split("tatoeba", "test", "de", "en", data_dir=TATOEBA)
    hypotheses = [t.text for t in Translator.load(tiny_run).translate(sources[:20], beam=2)]
    bleu = corpus_scores(hypotheses, references[:20])["bleu"]
    assert payload["runs"][-1]["bleu"] == pytest.approx(bleu)

    everyday, table = read_results(tmp_path, "bench_everyday")
    rows = everyday["sentences"]
    assert [r["index"] for r in rows] == [167 * i for i in range(12)]
    assert [r["source"] for r in rows] == [sources[167 * i] for i in range(12)]
    assert all(r[tiny_run.name] for r in rows) and table.count("| de→en |") == 12

    # --merge rescores the models given and keeps the others' records
    payload["runs"] = [dict(r, model="other") for r in payload["runs"][:2]] + payload["runs"]
    payload["models"] = ["other", tiny_run.name]
    (tmp_path / "bench_quality.json").write_text(json.dumps(payload))
    assert bench_quality.main(["--checkpoint", str(tiny_run), "--merge",
                               "--data-dir", f"multi30k={multi30k_dir}",
                               "--data-dir", f"tatoeba={TATOEBA}", "--limit", "5",
                               "--beams", "1", "--results-dir", str(tmp_path)]) == 0
    merged, table = read_results(tmp_path, "bench_quality")
    assert merged["models"] == ["other", tiny_run.name]
    assert [r["model"] for r in merged["runs"]] == ["other"] * 2 + [tiny_run.name] * 4
    assert all(r["sentences"] == 5 for r in merged["runs"][2:]) and "| other |" in table


# Model fields added by issue 21 (after the old code of bench_translate): the old code
# refuses config fields it does not know.
TRANSFORMER_ERA_FIELDS = ("architecture", "cell", "layers", "model_dim", "heads", "ffn_dim",
                          "positions", "max_positions", "share_embeddings", "alignment_layer")


def as_written_before_the_transformer(run_dir, folder):
    """A copy of an RNN run directory whose config.json lacks the fields added since (all at
    their defaults), as the old code wrote run directories."""
    from nmt.config import ModelConfig

    copy = shutil.copytree(run_dir, folder)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    for name in TRANSFORMER_ERA_FIELDS:
        assert config["model"].pop(name) == getattr(ModelConfig(), name), name
    (copy / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy


def test_bench_translate_compares_old_and_new_code(tmp_path, tiny_run, multi30k_dir):
    checkpoint = as_written_before_the_transformer(tiny_run, tmp_path / "run")
    code = bench_translate.main(["--checkpoint", str(checkpoint), "--data-dir", str(multi30k_dir),
                                 "--limit", "16", "--document-sentences", "20", "--repeats", "2",
                                 "--cold-repeats", "1", "--results-dir", str(tmp_path)])
    assert code == 0
    payload, table = read_results(tmp_path, "bench_translate")
    for side in ("old", "new", bench_translate.FLOAT32):
        assert {(r["beam"], r["batch_size"]) for r in payload["runs"][side]} == {
            (1, 1), (1, 64), (5, 1), (5, 64)}
        for run in payload["runs"][side]:
            assert len(run["passes"]) == 2 and run["sentences_per_second"] == max(run["passes"])
        assert payload["document"]["seconds"][side] > 0
    for side in ("old", "new"):
        assert payload["cold_start_seconds"][side] > 0
        assert payload["parts"][side]["load the model"] > 0
    differ = payload["document"]["lines_that_differ"]
    assert differ[bench_translate.FLOAT32] == 0  # float32: the same translations
    assert 0 <= differ["new"] <= 20
    assert payload["baseline"] == bench_translate.BASELINE
    assert table.startswith("| measure | old | new | new / old | new, float32 | float32 / old | "
                            "floor | met by |")
    assert "| beam 5, batch 64 (sentences/s) |" in table and "| cold start, 1 sentence" in table


def test_bench_serve_loads_the_server_with_and_without_batching(tmp_path, tiny_run,
                                                                multi30k_dir):
    code = bench_serve.main(["--checkpoint", str(tiny_run), "--data-dir", str(multi30k_dir),
                             "--clients", "3", "--seconds", "2", "--beam", "2",
                             "--results-dir", str(tmp_path)])
    assert code == 0
    payload, table = read_results(tmp_path, "bench_serve")
    assert [r["batching"] for r in payload["runs"]] == [True, False]
    for run in payload["runs"]:
        assert run["errors"] == 0 and run["sentences"] > 0
        assert 0 < run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"]
    assert table.startswith("| request batching | sentences/s") and "| off |" in table
    # The third run: 2 hogs send the heaviest request the shipped model accepts; with the
    # tiny model's smaller vocabulary it may be over --max-work (413). Either way every hog
    # request is answered, and the normal clients still get theirs.
    [hog_run] = payload["hog_runs"]
    assert hog_run["hogs"] == 2 and hog_run["hog_answers"]
    assert set(hog_run["hog_answers"]) <= {"200", "413"}
    assert hog_run["errors"] == 0 and hog_run["sentences"] > 0 and "| on, 2 hogs |" in table
