"""Export a trained model as a TensorFlow SavedModel that maps strings to translations.

    python translate.py export --out models/nmt/1 [--beam 5] [--length-penalty 1.0]

The SavedModel's ``serving_default`` signature takes a batch of sentences (``[batch]``
tf.string, input name ``texts``) and runs everything in the graph: sentencepiece tokenisation
(tensorflow-text), EOS and truncation to ``MAX_SOURCE_TOKENS`` exactly as
`nmt.translator.Translator` does, greedy or beam search with the beam size, length penalty and
length limit fixed at export time, and detokenisation. It returns (a dict of tensors):

    translations    [batch]                            string
    scores          [batch]                            float32 (as Translation.score)
    source_tokens   [batch, source_len]                string pieces, "" padded, EOS included
    target_tokens   [batch, target_len]                string pieces, "" padded, EOS included
    source_lengths  [batch]                            int32 (0 for blank input)
    target_lengths  [batch]                            int32 (0 for blank input)
    attention       [batch, target_len, source_len]    float32, zero padded

Blank (whitespace-only) sentences give an empty translation with no tokens, as the translator
does. The input must be valid UTF-8, and the graph does not check it: sentencepiece reads
invalid bytes as unknown pieces and the model makes up a translation for them, so a client
that may send other bytes must check (or decode) its text first. `translate.py` and the
server take text that Python has decoded already; they also translate lines of control or
zero-width characters as empty (`nmt.sentences.is_blank`), which the SavedModel does not.

Loading needs only ``tensorflow`` and ``tensorflow_text`` (for the sentencepiece ops),
not nmt. The export describes itself: ``loaded.model_info()`` returns the JSON also written to
``nmt_config.json`` next to ``saved_model.pb`` (model config, decoding settings, languages).

The directory is written atomically: the SavedModel goes into a temporary sibling directory
that is renamed into place when complete. TensorFlow Serving wants numbered version
directories, so export to ``models/nmt/1`` and point the server at ``models/nmt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf
import tensorflow_text

from nmt.config import DEFAULT_LENGTH_PENALTY
from nmt.decoding import beam_search, greedy_search
from nmt.errors import NmtError
from nmt.rundir import METRICS_FILE
from nmt.shipped import add_model_options, chosen_directories
from nmt.tokenizer import EOS_ID, PAD_ID
from nmt.translator import MAX_SOURCE_TOKENS, Translator

INFO_FILE = "nmt_config.json"
EXPORT_FORMAT = "nmt-saved-model"
EXPORT_FORMAT_VERSION = 1
# Characters Python's str.isspace() accepts (the translator's blank-line test is
# `not text.strip()`), as an RE2 class: ASCII \t-\r, \x1c-\x1f, NEL and Unicode Z*.
_BLANK = r"[\t-\r\x1c-\x1f\x{85}\p{Z}]*"


class ExportModule(tf.Module):
    """The model, both tokenizers and a `serve` function from strings to translations."""

    def __init__(self, translator: Translator, beam: int = 5, alpha: float = DEFAULT_LENGTH_PENALTY,
                 max_length_ratio: float = 2.0, info: dict | None = None):
        super().__init__(name="nmt_export")
        if beam < 1:
            raise NmtError(f"beam size must be >= 1, received {beam}")
        if max_length_ratio < 0:
            raise NmtError(f"max_length_ratio must be >= 0, received {max_length_ratio}")
        self.model = translator.model
        # Keras tracks some weights only in its own lists (e.g. the attention score's kernel,
        # created on the layer by a plain Python object); list them all so that the SavedModel
        # tracks every variable the graph captures, as keras.export.ExportArchive does.
        self.model_variables = list(translator.model.variables)
        # Each tokenizer's sentencepiece op has a name of its own (see SubwordTokenizer), so
        # the two vocabularies stay apart when the SavedModel is loaded.
        self.source_tokenizer = translator.source_tokenizer
        self.target_tokenizer = translator.target_tokenizer
        self._beam, self._alpha, self._ratio = int(beam), float(alpha), float(max_length_ratio)
        info_json = json.dumps(info or {}, ensure_ascii=False, sort_keys=True)
        self.model_info = tf.function(lambda: tf.constant(info_json), input_signature=[])
        self.serve = tf.function(self._serve,
                                 input_signature=[tf.TensorSpec([None], tf.string, name="texts")])

    def _serve(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        # An empty batch never enters the decoding loop, and greedy search cannot stack zero
        # time steps: answer it with empty outputs instead.
        return tf.cond(tf.size(texts) > 0, lambda: self._translate(texts), _empty_outputs)

    def _translate(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = tf.shape(texts)[0]
        blank = tf.strings.regex_full_match(texts, _BLANK)  # [batch]
        # Source ids exactly as Translator.encode_sources: truncated, then EOS.
        pieces = self.source_tokenizer.tokenize(texts)[:, :MAX_SOURCE_TOKENS - 1]
        eos = tf.RaggedTensor.from_tensor(tf.fill([batch, 1], tf.constant(EOS_ID, tf.int32)))
        source = tf.concat([tf.cast(pieces, tf.int32), eos], axis=1).to_tensor(PAD_ID)
        own_lengths = tf.reduce_sum(tf.cast(tf.not_equal(source, PAD_ID), tf.int32), axis=1)
        # As Translator.search: np.ceil(ratio * length) (float64) + 5, per sentence.
        max_length = tf.cast(tf.math.ceil(self._ratio * tf.cast(own_lengths, tf.float64)),
                             tf.int32) + 5
        if self._beam == 1:
            output = greedy_search(self.model, source, max_length)
            tokens, weights = output["tokens"], output["weights"]
            scores, lengths = output["scores"], output["lengths"]
        else:
            output = beam_search(self.model, source, max_length, self._beam, self._alpha)
            tokens, weights = output["tokens"][:, 0], output["weights"][:, 0]
            scores, lengths = output["scores"][:, 0], output["lengths"][:, 0]
        translations = self.target_tokenizer.detokenize(tokens)

        # Blank input: an empty translation with no tokens, as the translator returns.
        target_lengths = tf.where(blank, 0, lengths)
        source_lengths = tf.where(blank, 0, own_lengths)
        source_width = tf.reduce_max(tf.concat([source_lengths, [0]], axis=0))
        target_width = tf.reduce_max(tf.concat([target_lengths, [0]], axis=0))
        source = source[:, :source_width]
        tokens = tokens[:, :target_width]
        weights = weights[:, :target_width, :source_width]
        source_mask = tf.sequence_mask(source_lengths, source_width)
        target_mask = tf.sequence_mask(target_lengths, target_width)
        attention_mask = target_mask[:, :, None] & source_mask[:, None, :]
        return {
            "translations": tf.where(blank, "", translations),
            "scores": tf.where(blank, 0.0, scores),
            "source_tokens": tf.where(source_mask, self.source_tokenizer.id_to_piece(source), ""),
            "target_tokens": tf.where(target_mask, self.target_tokenizer.id_to_piece(tokens), ""),
            "source_lengths": source_lengths,
            "target_lengths": target_lengths,
            "attention": tf.where(attention_mask, weights, 0.0),
        }


def _empty_outputs() -> dict[str, tf.Tensor]:
    return {
        "translations": tf.zeros([0], tf.string), "scores": tf.zeros([0], tf.float32),
        "source_tokens": tf.zeros([0, 0], tf.string), "target_tokens": tf.zeros([0, 0], tf.string),
        "source_lengths": tf.zeros([0], tf.int32), "target_lengths": tf.zeros([0], tf.int32),
        "attention": tf.zeros([0, 0, 0], tf.float32),
    }


def export_info(translator: Translator, checkpoint: Path, weights: str, beam: int,
                alpha: float, max_length_ratio: float) -> dict:
    """What the export was made from and how it decodes (model_info() and nmt_config.json)."""
    import nmt

    info = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
        "source_language": translator.config.data.src,
        "target_language": translator.config.data.tgt,
        "checkpoint": translator.name, "weights": weights,
        "beam": beam, "length_penalty": alpha, "max_length_ratio": max_length_ratio,
        "max_source_tokens": MAX_SOURCE_TOKENS,
        "signature": {
            "name": "serving_default", "inputs": {"texts": "[batch] string"},
            "outputs": {
                "translations": "[batch] string", "scores": "[batch] float32",
                "source_tokens": "[batch, source_len] string",
                "target_tokens": "[batch, target_len] string",
                "source_lengths": "[batch] int32", "target_lengths": "[batch] int32",
                "attention": "[batch, target_len, source_len] float32",
            },
        },
        "config": translator.config.to_dict(),
        "versions": {"nmt": nmt.__version__, "tensorflow": tf.__version__,
                     "tensorflow_text": tensorflow_text.__version__},
    }
    best = _best_validation(checkpoint) if weights == "best" else None
    if best:
        info["best_validation"] = best
    return info


def _best_validation(checkpoint: Path) -> dict | None:
    try:
        best = json.loads((checkpoint / METRICS_FILE).read_text(encoding="utf-8"))["best"]
        return {key: best[key] for key in ("epoch", "val_bleu", "val_chrf") if key in best}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_saved_model(translator: Translator, out: str | Path, beam: int = 5,
                       alpha: float = DEFAULT_LENGTH_PENALTY, max_length_ratio: float = 2.0,
                       info: dict | None = None, overwrite: bool = False) -> Path:
    """Write the SavedModel to `out` (atomically) and return its path.

    Raises:
        NmtError: if `out` exists and is not empty (without `overwrite`), or is a file, or is
            a non-empty directory that is not a SavedModel (never replaced, even with
            `overwrite`, so a typo cannot delete unrelated files).
    """
    out = Path(out)
    _check_destination(out, overwrite)
    module = ExportModule(translator, beam, alpha, max_length_ratio, info)
    info_json = json.dumps(info or {}, ensure_ascii=False, indent=2) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    # The export keeps the weights, not the translator's precomputed tables.
    tabulated = translator.model.forget_translation_tables()
    try:
        tf.saved_model.save(module, str(temporary),
                            signatures={"serving_default": module.serve.get_concrete_function()})
        (temporary / INFO_FILE).write_text(info_json, encoding="utf-8")
        os.chmod(temporary, 0o755)  # mkdtemp makes it private; a server may run as another user
        _move_into_place(temporary, out, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        if tabulated:
            translator.model.prepare_for_translation()
    return out


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.is_file() or (out.exists() and not out.is_dir()):
        raise NmtError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise NmtError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if not (out / "saved_model.pb").is_file():
        raise NmtError(f"refusing to overwrite {out}: it is not a SavedModel directory "
                       "(no saved_model.pb); choose another --out")


def _move_into_place(temporary: Path, out: Path, overwrite: bool) -> None:
    """Rename `temporary` to `out`; an old export is moved aside first and then deleted."""
    if out.is_dir() and any(out.iterdir()):
        _check_destination(out, overwrite)  # it may have been filled meanwhile
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, old / "export")
        try:
            os.replace(temporary, out)
        except BaseException:
            os.replace(old / "export", out)  # put the previous export back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, out)  # also replaces an empty directory


# ---------------------------------------------------------------------------- command line
def build_parser(prog: str = "translate.py export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a checkpoint as a TensorFlow SavedModel (strings in, translations "
                    "and attention out; tokenisation inside the graph).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, default=argparse.SUPPRESS,
                        help="SavedModel directory to write (for TensorFlow Serving use a "
                             "version directory such as models/nmt/1)")
    add_model_options(parser)
    parser.add_argument("--weights", default="best", choices=["best", "last"],
                        help="which weights of the run directory to use")
    parser.add_argument("--beam", type=int, default=5,
                        help="beam size fixed in the export; 1 = greedy search")
    parser.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY,
                        help="GNMT length penalty alpha (0 = none)")
    parser.add_argument("--max-length-ratio", type=float, default=2.0,
                        help="longest translation, as a multiple of the source length (+5)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export in --out")
    return parser


def run(args: argparse.Namespace, load_translator: Callable[[str, str], Translator]) -> int:
    if args.beam < 1:
        raise NmtError(f"--beam must be >= 1, received {args.beam}")
    if args.max_length_ratio < 0:
        raise NmtError(f"--max-length-ratio must be >= 0, received {args.max_length_ratio}")
    out = Path(args.out)
    _check_destination(out, args.overwrite)  # fail before the slow part
    (checkpoint,) = chosen_directories(args)
    translator = load_translator(str(checkpoint), args.weights)
    info = export_info(translator, checkpoint, args.weights, args.beam,
                       args.length_penalty, args.max_length_ratio)
    export_saved_model(translator, out, args.beam, args.length_penalty, args.max_length_ratio,
                       info, args.overwrite)
    search = "greedy search" if args.beam == 1 else f"beam {args.beam}"
    print(f"Exported {translator.name} ({args.weights} weights, {search}, length penalty "
          f"{args.length_penalty}) to {out}")
    print(f"Inspect: saved_model_cli show --dir {out} --tag_set serve "
          "--signature_def serving_default")
    if out.name.isdigit():  # a version directory, as TensorFlow Serving wants
        print(f"Serve:   docker run -p 8501:8501 -v {out.resolve().parent}:/models/nmt "
              "-e MODEL_NAME=nmt tensorflow/serving")
    else:
        print("Serve:   TensorFlow Serving loads numbered version directories: export to "
              "e.g. models/nmt/1 and run docker run -p 8501:8501 -v $PWD/models/nmt:/models/nmt "
              "-e MODEL_NAME=nmt tensorflow/serving")
    return 0
