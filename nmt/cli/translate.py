#!/usr/bin/env python
"""Translate with a trained model and see where it attended.

    python translate.py "Ein Mann fährt Fahrrad." "Zwei Hunde spielen."
    python translate.py -i test.de -o test.en.hyp --ref test.en --plot-dir plots/
    cat sentences.txt | python translate.py --json
    python translate.py --model en-de "A man is riding a bike."
    python translate.py serve --model de-en --model en-de   # JSON API and web page
    python translate.py export --out models/nmt/1   # SavedModel for TensorFlow Serving

With no text and no -i, it reads standard input line by line. Every line is cut into
sentences (`--no-split`: not), and its translation is one output line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

# None of these imports TensorFlow: arguments are checked before it loads (nmt.quiet).
from nmt.alignment import sentence_alignment, to_pharaoh
from nmt.cli import ArgumentParser, exit_at_once
from nmt.config import DEFAULT_LENGTH_PENALTY, check_search_options
from nmt.precision import DEFAULT_DTYPE, DTYPES, SERVE_DTYPE
from nmt.quiet import load_tensorflow
from nmt.rundir import CONFIG_FILE
from nmt.sentences import join_sentences, translate_lines
from nmt.shipped import add_model_options, chosen_directories
from nmt.xla_cache import enable_xla_cache


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="translate.py",
        description="Translate text with a shipped model or a run directory, and see where "
                    "the model attended. Each line is cut into sentences, every sentence is "
                    "translated, and the line comes back as one line.",
        epilog="sub-commands: `translate.py serve` runs the JSON API and web page, "
               "`translate.py export --out DIR` writes a TensorFlow SavedModel (each has "
               "its own --help)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = parser.add_argument_group("input and output")
    io.add_argument("sentences", nargs="*", metavar="TEXT",
                    help="text to translate, one line each (default: -i FILE or stdin)")
    io.add_argument("-i", "--input", metavar="FILE", help="file with one line of text per line")
    io.add_argument("-o", "--output", metavar="FILE",
                    help="write the translations here instead of stdout (never the input file)")
    io.add_argument("--ref", metavar="FILE",
                    help="reference translations, one per line: report BLEU and chrF")
    io.add_argument("--no-split", dest="split", action="store_false",
                    help="translate every line as one sentence instead of sentence by sentence")
    model = parser.add_argument_group("model")
    add_model_options(model)
    model.add_argument("--weights", default="best", choices=["best", "last"],
                       help="which weights of the run directory to use")
    search = parser.add_argument_group("decoding")
    search.add_argument("--beam", type=int, default=5, metavar="SIZE",
                        help="beam size; 1 = greedy search")
    search.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY,
                        metavar="ALPHA", help="GNMT length penalty alpha (0 = none)")
    search.add_argument("--max-length-ratio", type=float, default=2.0, metavar="RATIO",
                        help="longest translation, as a multiple of the source length (+5)")
    search.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="sentences per batch")
    add_speed_options(search)
    search.add_argument("--n-best", type=int, default=1, metavar="K",
                        help="print the K best candidates of every sentence as "
                             "'LINE ||| text ||| score' (LINE.SENTENCE for a line of several)")
    show = parser.add_argument_group("what to show")
    show.add_argument("--plot-dir", metavar="DIR",
                      help="write one attention heatmap per sentence here, named "
                           "LINE-SENTENCE-words.FORMAT")
    show.add_argument("--plot-format", default="png", choices=["png", "svg", "pdf"],
                      help="file format of the heatmaps")
    show.add_argument("--plot-heads", action="store_true",
                      help="Transformer: with --plot-dir, draw every layer and head of the "
                           "cross-attention in one grid per sentence (default: the "
                           "head-average of the model's alignment layer)")
    show.add_argument("--alignments", action="store_true",
                      help="append word alignments in Pharaoh format: 'text ||| 0-0 1-2'")
    show.add_argument("--json", action="store_true",
                      help="one JSON object per sentence: line, sentence, tokens, attention, "
                           "score")
    show.add_argument("--heads", action="store_true",
                      help="Transformer: with --json, add \"heads\", the cross-attention of "
                           "every layer and head [layers][heads][target][source]")
    show.add_argument("--quiet", action="store_true", help="no progress bar")
    show.add_argument("--verbose", action="store_true",
                      help="show TensorFlow's start-up messages")
    return parser


def add_speed_options(group, dtype: str = DEFAULT_DTYPE) -> None:
    """--dtype (default `dtype`) and --no-xla, for translating and for serving."""
    group.add_argument("--dtype", default=dtype, choices=DTYPES,
                       help="compute dtype of the search. float32: exact, and each "
                            "sentence's translation independent of its batch. bfloat16: "
                            "weights and matmuls in bfloat16 (softmax and scores stay "
                            "float32), about 1.4x faster at batch 64 where the CPU has it, "
                            "slower for one sentence; 3-5%% of translations change, see "
                            "README. auto: float32, and bfloat16 for searches of 64 or more "
                            "hypotheses (sentences x beam) on a CPU with AVX512-BF16 or AMX")
    group.add_argument("--no-xla", dest="xla", action="store_false",
                       help="run the search as a plain TensorFlow graph instead of compiling "
                            "it with XLA (slower; for comparison)")


def build_serve_parser() -> argparse.ArgumentParser:
    from nmt.service import ServiceLimits

    limits = ServiceLimits()
    parser = ArgumentParser(
        prog="translate.py serve",
        description="Serve one or more models over HTTP: POST /translate, GET /health, "
                    "GET /info, and a web page of attention heatmaps at /.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(parser, several=True)
    parser.add_argument("--weights", default="best", choices=["best", "last"])
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on; anything but loopback is reachable from "
                             "other machines, and there is no authentication")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="how long to collect concurrent requests into one decoder call")
    parser.add_argument("--no-batching", action="store_true",
                        help="translate every request on its own (for comparison)")
    parser.add_argument("--max-sentences", type=int, default=limits.max_sentences,
                        help="most sentences per request")
    parser.add_argument("--max-chars", type=int, default=limits.max_sentence_chars,
                        help="most characters per sentence")
    parser.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes)
    parser.add_argument("--beam", type=int, default=limits.default_beam,
                        help="beam size when a request gives none")
    # float32: an answer must not depend on which other requests shared its batch
    add_speed_options(parser, dtype=SERVE_DTYPE)
    guard = parser.add_argument_group("reliability (see README: Reliability of serve)")
    guard.add_argument("--max-work", type=int, default=limits.max_work,
                       help="most source tokens x beam per request (over it: 413)")
    guard.add_argument("--max-queue", type=int, default=limits.max_queue,
                       help="most requests waiting for the decoder (beyond: 503, Retry-After)")
    guard.add_argument("--header-timeout", type=float, default=limits.header_timeout,
                       help="seconds a client has to send its request headers")
    guard.add_argument("--body-timeout", type=float, default=limits.body_timeout,
                       help="seconds a client has to send its request body (then 408)")
    guard.add_argument("--max-connections-per-client", type=int,
                       default=limits.max_connections_per_client,
                       help="most open connections of one client address")
    guard.add_argument("--max-connections", type=int, default=limits.max_connections,
                       help="most open connections in all (beyond: 503)")
    guard.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host header names NAME (repeatable; "
                            "'*': any); loopback names and --host are always allowed")
    return parser


def serve_main(argv: list[str]) -> int:
    from nmt.errors import NmtError
    from nmt.service import ServiceLimits, check_host, ensure_port_free, serve

    args = build_serve_parser().parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise NmtError(f"--port must be from 1 to 65535, received {args.port}")
    for name in ("max_sentences", "max_chars", "max_body_bytes", "beam", "max_work",
                 "max_queue", "max_connections_per_client", "max_connections"):
        if getattr(args, name) < 1:
            raise NmtError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("header_timeout", "body_timeout"):
        if not 0 < getattr(args, name) < float("inf"):
            raise NmtError(f"--{name.replace('_', '-')} must be a positive number of seconds, "
                           f"received {getattr(args, name)}")
    limits = ServiceLimits(max_body_bytes=args.max_body_bytes, max_sentences=args.max_sentences,
                           max_sentence_chars=args.max_chars,
                           max_beam=max(ServiceLimits.max_beam, args.beam),
                           default_beam=args.beam, max_work=args.max_work,
                           max_queue=args.max_queue, header_timeout=args.header_timeout,
                           body_timeout=args.body_timeout,
                           max_connections_per_client=args.max_connections_per_client,
                           max_connections=args.max_connections)
    warning = check_host(args.host)
    if warning:
        print(warning, file=sys.stderr)
    directories = chosen_directories(args)
    ensure_port_free(args.host, args.port)
    translators = {}
    for directory in directories:
        translator = load_translator(str(directory), args.weights, args.dtype, args.xla)
        if translator.name in translators:
            raise NmtError(f"two models are named {translator.name}; serve run directories "
                           "with different names")
        translators[translator.name] = translator
    serve(translators, args.host, args.port, limits, args.batch_window_ms / 1000.0,
          batching=not args.no_batching, allow_hosts=args.allow_host,
          checkpoints={t.name: str(d) for t, d in zip(translators.values(), directories,
                                                       strict=True)})
    return 0


def export_main(argv: list[str]) -> int:
    """`translate.py export --out DIR ...`: write a TensorFlow SavedModel (see nmt/export.py)."""
    from nmt.export import build_parser as build_export_parser
    from nmt.export import run as run_export

    return run_export(build_export_parser().parse_args(argv), load_translator)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    from nmt.errors import NmtError
    from nmt.files import storage_errors

    try:
        with storage_errors():  # a full, read-only or forbidden disk: one line
            if argv and argv[0] in ("serve", "export"):
                verbose = "--verbose" in argv
                enable_xla_cache()
                load_tensorflow(verbose=verbose)
                rest = [arg for arg in argv[1:] if arg != "--verbose"]
                return serve_main(rest) if argv[0] == "serve" else export_main(rest)
            return run(build_parser().parse_args(argv))
    except NmtError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def console_main() -> NoReturn:
    """The `nmt-translate` program (and `python translate.py`): `main`, then a quick exit."""
    exit_at_once(main())


def check_arguments(args: argparse.Namespace) -> Path:
    """Everything that can be checked before TensorFlow loads; returns the run directory.

    Raises:
        NmtError: one clear line naming the problem.
    """
    from nmt.errors import NmtError

    if args.sentences and args.input:
        raise NmtError("give text on the command line or -i FILE, not both")
    for flag, value, least in (("--beam", args.beam, 1), ("--batch-size", args.batch_size, 1),
                               ("--n-best", args.n_best, 1)):
        if value < least:
            raise NmtError(f"{flag} must be at least {least}, received {value}")
    if args.n_best > args.beam:
        raise NmtError(f"--n-best ({args.n_best}) cannot exceed --beam ({args.beam})")
    if args.n_best > 1 and (args.json or args.alignments):
        raise NmtError("--n-best cannot be combined with --json or --alignments")
    check_search_options(args.length_penalty, args.max_length_ratio,
                         names=("--length-penalty", "--max-length-ratio"))
    for flag, path in (("-i", args.input), ("--ref", args.ref)):
        if path is not None and not Path(path).is_file():
            raise NmtError(f"{flag}: file not found: {path}")
    if args.output is not None:
        check_output(args.output, args.input)
    if args.plot_dir is not None and Path(args.plot_dir).exists() \
            and not Path(args.plot_dir).is_dir():
        raise NmtError(f"--plot-dir {args.plot_dir} is a file, not a folder")
    if args.plot_heads and args.plot_dir is None:
        raise NmtError("--plot-heads draws into --plot-dir: give --plot-dir DIR as well")
    if args.heads and not args.json:
        raise NmtError("--heads adds the weights to the JSON output: give --json as well")
    (directory,) = chosen_directories(args)
    check_run_directory(directory)
    return directory


def check_output(output: str, input_path: str | None) -> None:
    """-o must name a new or existing file in an existing, writable folder, and not -i."""
    from nmt.errors import NmtError

    path = Path(output)
    folder = path.parent if str(path.parent) else Path(".")
    if input_path is not None and Path(input_path).exists() and path.exists() \
            and path.samefile(input_path):
        raise NmtError(f"-o {output} is the input file; refusing to write over an input")
    if path.is_dir():
        raise NmtError(f"-o {output} is a folder; give a file name")
    if not folder.is_dir():
        raise NmtError(f"-o {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise NmtError(f"-o {output}: folder {folder} is not writable")


def check_run_directory(directory: Path) -> None:
    from nmt.errors import CheckpointError

    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"{directory} is not a run directory: {CONFIG_FILE} is missing")


def run(args: argparse.Namespace) -> int:
    from nmt.errors import NmtError
    from nmt.textio import read_sentences, stream_batches

    directory = check_arguments(args)
    references = read_sentences(args.ref) if args.ref else None
    if args.xla:
        enable_xla_cache()
    load_tensorflow(verbose=args.verbose)
    translator = load_translator(str(directory), args.weights, args.dtype, args.xla)
    if (args.plot_heads or args.heads) and not translator.has_heads:
        flag = "--plot-heads" if args.plot_heads else "--heads"
        raise NmtError(f"{flag}: {directory} is an RNN with one attention; layers and heads "
                       "need a Transformer checkpoint")
    if args.sentences or args.input:
        lines = args.sentences or read_sentences(args.input)
        batches, total = iter([lines]), len(lines)
    else:
        batches, total = stream_batches(sys.stdin.fileno(), args.batch_size), None
    hypotheses: list[str] = []
    with output_stream(args.output) as output, progress_bar(total, args.quiet) as progress:
        for lines in batches:
            for sentences in translate_lines(
                    translator, lines, split=args.split, beam=args.beam,
                    alpha=args.length_penalty, max_length_ratio=args.max_length_ratio,
                    batch_size=args.batch_size, n_best=args.n_best,
                    heads=args.plot_heads or args.heads):
                write_line(output, sentences, len(hypotheses), args)
                if args.plot_dir:
                    write_plots(translator, sentences, len(hypotheses), args)
                hypotheses.append(join_sentences([t.text for t in sentences]))
                progress.update(1)
            output.flush()
    if references is not None:
        report_scores(hypotheses, references)
    return 0


@contextlib.contextmanager
def output_stream(path: str | None) -> Iterator:
    """stdout, or a temporary file beside `path` renamed onto it when everything is written
    (an interrupted run leaves any earlier file of that name as it was)."""
    if path is None:
        yield sys.stdout
        return
    from nmt.files import atomic_path

    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as output:
        yield output


@contextlib.contextmanager
def progress_bar(total: int | None, quiet: bool) -> Iterator:
    """A tqdm bar on stderr (lines done, lines/s, ETA) when stderr is a terminal and the
    input is longer than a screenful; otherwise an object whose `update` does nothing."""
    screen = shutil.get_terminal_size().lines
    if quiet or total is None or total <= screen or not sys.stderr.isatty():
        yield _NoProgress()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="line", file=sys.stderr, leave=False) as bar:
        yield bar


class _NoProgress:
    def update(self, count: int) -> None:
        """Nothing to draw."""


def load_translator(checkpoint: str, weights: str, dtype: str = DEFAULT_DTYPE,
                    xla: bool = True):
    from nmt.rundir import weights_file
    from nmt.translator import Translator

    return Translator.load(Path(checkpoint), weights_file(weights), dtype=dtype, jit_compile=xla)


def write_line(output, sentences: list, line: int, args) -> None:
    """The translation of one input line (several sentences: one line, or one JSON object
    and one n-best list per sentence)."""
    if args.json:
        for number, translation in enumerate(sentences):
            record = {"line": line, "sentence": number,
                      **translation.to_json(heads=args.heads)}
            output.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif args.n_best > 1:
        for number, translation in enumerate(sentences):
            index = f"{line}.{number}" if len(sentences) > 1 else str(line)
            for text, score in translation.n_best or [("", 0.0)]:  # empty line: one entry
                output.write(f"{index} ||| {text} ||| {score:.4f}\n")
    elif args.alignments:
        text = join_sentences([t.text for t in sentences])
        output.write(f"{text} ||| {to_pharaoh(line_alignment(sentences))}\n")
    else:
        output.write(join_sentences([t.text for t in sentences]) + "\n")


def line_alignment(sentences: list) -> list[tuple[int, int]]:
    """Word alignments of a line's sentences, with word numbers counted over the line."""
    pairs, source_offset, target_offset = [], 0, 0
    for translation in sentences:
        sentence_pairs, source_words, target_words = sentence_alignment(translation)
        pairs += [(s + source_offset, t + target_offset) for s, t in sentence_pairs]
        source_offset, target_offset = source_offset + source_words, target_offset + target_words
    return pairs


def write_plots(translator, sentences: list, line: int, args) -> None:
    """One heatmap per sentence (with --plot-heads a grid of every layer and head)."""
    from nmt.plotting import plot_attention, plot_filename, plot_heads, unique_path

    title = plot_title(translator, grid=args.plot_heads)
    for number, translation in enumerate(sentences):
        name = plot_filename(line, translation.source, args.plot_format, sentence=number)
        path = unique_path(Path(args.plot_dir) / name)
        if args.plot_heads and translation.heads is not None:
            plot_heads(translation.heads, translation.source_tokens, translation.target_tokens,
                       path, title=title, fmt=args.plot_format)
        else:
            plot_attention(translation.attention, translation.source_tokens,
                           translation.target_tokens, path, title=title, fmt=args.plot_format)


def plot_title(translator, grid: bool = False) -> str:
    """"dot attention (soft), NAME"; a Transformer's also names the plotted layer (or, for a
    grid of every layer and head, says so)."""
    config = translator.config.model
    title = f"{config.score} attention ({config.attention_mode}), {translator.name}"
    if config.architecture == "transformer" and grid:
        title += ", cross-attention of every layer and head"
    elif config.architecture == "transformer":
        title += f", cross-attention layer {translator.model.alignment_layer + 1}"
    return title


def report_scores(hypotheses: list[str], references: list[str]) -> None:
    from nmt.evaluation import corpus_scores, format_scores

    print(format_scores(corpus_scores(hypotheses, references)), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
