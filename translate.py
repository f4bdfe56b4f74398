#!/usr/bin/env python
"""Translate with a trained model and see where it attended.

    python translate.py "Ein Mann fährt Fahrrad." "Zwei Hunde spielen."
    python translate.py -i test.de -o test.en.hyp --ref test.en --plot-dir plots/
    cat sentences.txt | python translate.py --json
    python translate.py --model en-de "A man is riding a bike."
    python translate.py serve --model de-en --model en-de   # JSON API and web page
    python translate.py export --out models/nmt/1   # SavedModel for TensorFlow Serving

With no sentences and no -i, it reads standard input one sentence per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter off the console

from nmt.config import DEFAULT_LENGTH_PENALTY  # noqa: E402  (no TensorFlow import)
from nmt.shipped import add_model_options, chosen_directories  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Translate sentences with a trained nmt checkpoint.",
        epilog="sub-command: `translate.py export --out DIR` writes a TensorFlow SavedModel "
               "(see `translate.py export --help`)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: stdin)")
    parser.add_argument("-i", "--input", help="file with one sentence per line")
    parser.add_argument("-o", "--output", help="write translations here instead of stdout")
    add_model_options(parser)
    parser.add_argument("--weights", default="best", choices=["best", "last"],
                        help="which weights of the run directory to use")
    parser.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy search")
    parser.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY,
                        help="GNMT length penalty alpha (0 = none)")
    parser.add_argument("--max-length-ratio", type=float, default=2.0,
                        help="longest translation, as a multiple of the source length (+5)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--n-best", type=int, default=1,
                        help="print the K best candidates as 'index ||| text ||| score'")
    parser.add_argument("--plot-dir", help="write one attention heatmap per sentence here")
    parser.add_argument("--plot-format", default="png", choices=["png", "svg", "pdf"])
    parser.add_argument("--alignments", action="store_true",
                        help="append word alignments in Pharaoh format: 'text ||| 0-0 1-2'")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per sentence: tokens, attention, score")
    parser.add_argument("--ref", help="reference translations: report BLEU and chrF")
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    from nmt.service import ServiceLimits

    limits = ServiceLimits()
    parser = argparse.ArgumentParser(
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
    return parser


def serve_main(argv: list[str]) -> int:
    from nmt.errors import NmtError
    from nmt.service import ServiceLimits, check_host, ensure_port_free, serve

    args = build_serve_parser().parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise NmtError(f"--port must be from 1 to 65535, received {args.port}")
    for name in ("max_sentences", "max_chars", "max_body_bytes", "beam"):
        if getattr(args, name) < 1:
            raise NmtError(f"--{name.replace('_', '-')} must be >= 1")
    limits = ServiceLimits(max_body_bytes=args.max_body_bytes, max_sentences=args.max_sentences,
                           max_sentence_chars=args.max_chars,
                           max_beam=max(ServiceLimits.max_beam, args.beam),
                           default_beam=args.beam)
    warning = check_host(args.host)
    if warning:
        print(warning, file=sys.stderr)
    directories = chosen_directories(args)
    ensure_port_free(args.host, args.port)
    translators = {}
    for directory in directories:
        translator = load_translator(str(directory), args.weights)
        if translator.name in translators:
            raise NmtError(f"two models are named {translator.name}; serve run directories "
                           "with different names")
        translators[translator.name] = translator
    serve(translators, args.host, args.port, limits, args.batch_window_ms / 1000.0,
          batching=not args.no_batching,
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

    try:
        if argv and argv[0] == "serve":
            return serve_main(argv[1:])
        if argv and argv[0] == "export":
            return export_main(argv[1:])
        return run(build_parser().parse_args(argv))
    except NmtError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def run(args: argparse.Namespace) -> int:
    from nmt.errors import NmtError
    from nmt.textio import read_sentences, stream_batches

    if args.sentences and args.input:
        raise NmtError("give sentences on the command line or -i FILE, not both")
    if args.n_best > 1 and (args.json or args.alignments):
        raise NmtError("--n-best cannot be combined with --json or --alignments")
    if args.n_best > args.beam:
        raise NmtError(f"--n-best ({args.n_best}) cannot exceed the beam size ({args.beam})")
    references = read_sentences(args.ref) if args.ref else None
    (directory,) = chosen_directories(args)
    translator = load_translator(str(directory), args.weights)
    if args.sentences:
        batches = iter([args.sentences])
    elif args.input:
        batches = iter([read_sentences(args.input)])
    else:
        batches = stream_batches(sys.stdin.fileno(), args.batch_size)
    output = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    hypotheses: list[str] = []
    try:
        for texts in batches:
            for chunk in translator.translate_batches(
                    texts, beam=args.beam, alpha=args.length_penalty,
                    max_length_ratio=args.max_length_ratio, batch_size=args.batch_size,
                    n_best=args.n_best, first_index=len(hypotheses)):
                for translation in chunk:
                    write_translation(output, translation, len(hypotheses), args)
                    if args.plot_dir:
                        write_plot(translator, translation, len(hypotheses), args)
                    hypotheses.append(translation.text)
                output.flush()
    finally:
        if args.output:
            output.close()
    if references is not None:
        report_scores(hypotheses, references)
    return 0


def load_translator(checkpoint: str, weights: str):
    from nmt.translator import BEST_WEIGHTS_FILE, LAST_WEIGHTS_FILE, Translator

    return Translator.load(Path(checkpoint),
                           BEST_WEIGHTS_FILE if weights == "best" else LAST_WEIGHTS_FILE)


def write_translation(output, translation, index: int, args) -> None:
    from nmt.alignment import align, to_pharaoh
    from nmt.tokenizer import EOS_PIECE

    if args.json:
        output.write(json.dumps(translation.to_json(), ensure_ascii=False) + "\n")
    elif args.n_best > 1:
        for text, score in translation.n_best or [("", 0.0)]:  # an empty line: one empty entry
            output.write(f"{index} ||| {text} ||| {score:.4f}\n")
    elif args.alignments:
        source = [i for i, piece in enumerate(translation.source_tokens) if piece != EOS_PIECE]
        target = [i for i, piece in enumerate(translation.target_tokens) if piece != EOS_PIECE]
        weights = translation.attention[target][:, source]
        pairs = align(weights, [translation.source_tokens[i] for i in source],
                      [translation.target_tokens[i] for i in target])
        output.write(f"{translation.text} ||| {to_pharaoh(pairs)}\n")
    else:
        output.write(translation.text + "\n")


def write_plot(translator, translation, index: int, args) -> None:
    from nmt.plotting import plot_attention, plot_filename, unique_path

    config = translator.config.model
    title = f"{config.score} attention ({config.attention_mode}), {translator.name}"
    path = unique_path(Path(args.plot_dir) / plot_filename(index, translation.source,
                                                           args.plot_format))
    plot_attention(translation.attention, translation.source_tokens, translation.target_tokens,
                   path, title=title, fmt=args.plot_format)


def report_scores(hypotheses: list[str], references: list[str]) -> None:
    from nmt.evaluation import corpus_scores, format_scores

    print(format_scores(corpus_scores(hypotheses, references)), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
