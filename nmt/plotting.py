"""Attention heatmaps: one sentence per figure, or several model runs side by side.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot, no global
state, no GUI backend), so plotting is safe in servers, threads and tests.
Every figure is written to a temporary file next to its destination and moved into
place with `os.replace`, so a reader never sees half a file; an existing file is
never overwritten (choose a new name with `unique_path`).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from nmt.alignment import attention_matrix
from nmt.errors import NmtError
from nmt.files import atomic_path

logger = logging.getLogger(__name__)

FORMATS = ("png", "svg", "pdf")
PNG_DPI = 150
COLOUR_MAP = "viridis"

# Layout: about INCHES_PER_TOKEN per token, never smaller than MIN_INCHES and never
# larger than MAX_INCHES along an axis; label fonts shrink from 10 pt to 6 pt as
# sentences grow (and further only if the size cap squeezes the cells).
INCHES_PER_TOKEN = 0.3
MIN_INCHES = 4.0
MAX_INCHES = 24.0
MARGIN_INCHES = 1.5
MAX_FONT_SIZE = 10.0
MIN_FONT_SIZE = 6.0

SLUG_LENGTH = 40
# Letters that NFKD does not reduce to ASCII (casefold already turns ß into ss).
_LETTERS_WITHOUT_DECOMPOSITION = str.maketrans(
    {"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)

# (subtitle, weights [target, source], source tokens, target tokens)
Panel = tuple[str, np.ndarray, Sequence[str], Sequence[str]]


def plot_attention(
    weights: np.ndarray,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    fmt: str | None = None,
) -> Path:
    """Draw one attention matrix as a heatmap and write it to `path`.

    Soft and hard (one-hot rows) attention are drawn the same way, on a fixed 0..1
    colour scale so figures of different sentences and models compare directly.

    Args:
        weights: attention weights `[len(target_tokens), len(source_tokens)]`, in 0..1;
            row j is the distribution over source tokens when producing target token j.
        source_tokens: labels of the x axis (top), e.g. SentencePiece pieces.
        target_tokens: labels of the y axis (left).
        path: destination file; must not exist yet.
        title: figure title (callers put the score function and mode here).
        fmt: "png", "svg" or "pdf"; by default taken from the suffix of `path`.

    Returns:
        The path written.

    Raises:
        NmtError: `path` exists, the format is unknown, or `weights` does not have
            the shape `[len(target_tokens), len(source_tokens)]`.
    """
    return _save(_attention_figure(weights, source_tokens, target_tokens, title), path, fmt)


def attention_png(weights: np.ndarray, source_tokens: Sequence[str],
                  target_tokens: Sequence[str], title: str = "", dpi: int = 80) -> bytes:
    """The heatmap of `plot_attention` as PNG bytes (for TensorBoard images)."""
    import io

    buffer = io.BytesIO()
    _attention_figure(weights, source_tokens, target_tokens, title).savefig(
        buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _attention_figure(weights: np.ndarray, source_tokens: Sequence[str],
                      target_tokens: Sequence[str], title: str) -> Figure:
    """One attention matrix [target, source] as a heatmap figure with a colour bar."""
    matrix = attention_matrix(weights, source_tokens, target_tokens)
    n_target, n_source = matrix.shape
    figure = Figure(
        figsize=(_axis_inches(n_source) + MARGIN_INCHES, _axis_inches(n_target)),
        layout="constrained",
    )
    axes = figure.add_subplot()
    font_size = _font_size(max(n_source, n_target))
    image = _draw_heatmap(axes, matrix, source_tokens, target_tokens, font_size)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8)
    if title:
        figure.suptitle(_escape(title))
    return figure


def plot_attention_grid(
    panels: Sequence[Panel],
    path: str | os.PathLike[str],
    title: str = "",
    fmt: str | None = None,
    columns: int | None = None,
    dpi: int = PNG_DPI,
) -> Path:
    """Draw several attention matrices side by side, e.g. one per model run.

    Each panel has its own tokens, so runs with different translations of the same
    source sentence can be compared; all panels share one 0..1 colour bar.

    Args:
        panels: `(subtitle, weights, source_tokens, target_tokens)` per panel, with
            `weights` of shape `[len(target_tokens), len(source_tokens)]`.
        path: destination file; must not exist yet.
        title: figure title above all panels.
        fmt: "png", "svg" or "pdf"; by default taken from the suffix of `path`.
        columns: panels per row (default: all in one row); more panels wrap to new rows.
        dpi: resolution of a PNG.

    Returns:
        The path written.

    Raises:
        NmtError: no panels, a panel's shape mismatch (naming the panel), `path`
            exists, or the format is unknown.
    """
    if not panels:
        raise NmtError(f"Cannot plot an attention grid without panels: {path}")
    matrices = _panel_matrices(panels)
    columns = len(panels) if columns is None else max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    widths = [max(_axis_inches(m.shape[1]) for m in matrices[c::columns]) for c in range(columns)]
    heights = [max(_axis_inches(m.shape[0]) for m in matrices[r * columns:(r + 1) * columns])
               for r in range(rows)]
    figure = Figure(figsize=(sum(widths) + MARGIN_INCHES, sum(heights) + 0.5 * rows),
                    layout="constrained")
    grid = figure.add_gridspec(rows, columns, width_ratios=widths, height_ratios=heights)
    image = None
    all_axes = []
    for index, ((subtitle, _, source_tokens, target_tokens), matrix) in enumerate(
        zip(panels, matrices, strict=True)
    ):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        font_size = _font_size(max(matrix.shape))
        drawn = _draw_heatmap(axes, matrix, source_tokens, target_tokens, font_size)
        image = drawn if drawn is not None else image
        axes.set_title(_escape(subtitle), fontsize=MAX_FONT_SIZE)
        all_axes.append(axes)
    if image is not None:
        figure.colorbar(image, ax=all_axes, shrink=0.8)
    if title:
        figure.suptitle(_escape(title))
    return _save(figure, path, fmt, dpi)


def _panel_matrices(panels: Sequence[Panel]) -> list[np.ndarray]:
    """Each panel's checked weights [tt, ts]; a mismatch names its panel."""
    matrices = []
    for index, (subtitle, weights, source_tokens, target_tokens) in enumerate(panels):
        try:
            matrices.append(attention_matrix(weights, source_tokens, target_tokens))
        except NmtError as error:
            raise NmtError(f"Panel {index} ({subtitle!r}): {error}") from None
    return matrices


def plot_heads(
    heads: np.ndarray,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    fmt: str | None = None,
) -> Path:
    """Draw a Transformer's cross-attention per layer and head: one row per layer, one
    column per head, all on one 0..1 colour bar.

    Args:
        heads: [layers, heads, len(target_tokens), len(source_tokens)] weights.
        path, title, fmt: as for `plot_attention`.
    Returns:
        The path written.
    """
    heads = np.asarray(heads)
    if heads.ndim != 4:
        raise NmtError(f"Cannot plot heads of shape {heads.shape}: expected [layers, heads, "
                       "target, source]")
    layers, per_layer = heads.shape[:2]
    panels = [(f"layer {layer + 1}, head {head + 1}", heads[layer, head], source_tokens,
               target_tokens) for layer in range(layers) for head in range(per_layer)]
    return plot_attention_grid(panels, path, title=title, fmt=fmt, columns=per_layer)


def plot_filename(index: int, source_text: str, fmt: str = "png",
                  sentence: int | None = None) -> str:
    """Build a file name from a sentence number and a short ASCII slug of the source.

    Example: `plot_filename(3, "Ein Mann fährt Fahrrad.")` is
    `"0003-ein-mann-fahrt-fahrrad.png"`; with `sentence=1` it is
    `"0003-01-ein-mann-fahrt-fahrrad.png"` (the second sentence of line 3).

    Args:
        index: 0-based sentence number, zero-padded to four digits.
        source_text: the source sentence; accents are stripped, anything that is not
            an ASCII letter or digit becomes "-", and the slug is cut to about 40
            characters at a word boundary ("sentence" if nothing is left).
        fmt: "png", "svg" or "pdf".
        sentence: 0-based sentence number within the line, zero-padded to two digits
            (None: no sentence number).

    Raises:
        NmtError: a negative index or sentence number, or an unknown format.
    """
    if index < 0 or (sentence is not None and sentence < 0):
        raise NmtError(f"Plot index must be 0 or more, got {index} (sentence {sentence})")
    number = f"{index:04d}" if sentence is None else f"{index:04d}-{sentence:02d}"
    return f"{number}-{_slug(source_text)}.{_check_format(fmt)}"


def unique_path(path: str | os.PathLike[str]) -> Path:
    """Return `path` if it is free, else the first free `stem-1.ext`, `stem-2.ext`, ...

    Only the name is chosen here; another process may still take it before it is
    written, in which case `plot_attention` refuses to overwrite it.
    """
    path = Path(path)
    candidate = path
    number = 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _axis_inches(n_tokens: int) -> float:
    """Length of a heatmap axis for `n_tokens` labels, in inches."""
    return float(np.clip(INCHES_PER_TOKEN * n_tokens + MARGIN_INCHES, MIN_INCHES, MAX_INCHES))


def _font_size(n_tokens: int) -> float:
    """Tick label size in points: 10 for up to 10 tokens, down to 6 from 50 tokens on."""
    size = max(MIN_FONT_SIZE, MAX_FONT_SIZE - max(0, n_tokens - 10) / 10)
    # Past the size cap cells shrink below INCHES_PER_TOKEN; keep labels inside them.
    cell_points = 72 * MAX_INCHES / max(n_tokens, 1)
    return float(max(min(size, 0.8 * cell_points), 3.0))


def _draw_heatmap(
    axes: Axes,
    matrix: np.ndarray,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    font_size: float,
) -> AxesImage | None:
    """Draw `matrix` `[target, source]` on `axes`; return the image, or None if empty."""
    if matrix.size == 0:
        axes.text(0.5, 0.5, "(no tokens)", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return None
    image = axes.imshow(
        matrix, cmap=COLOUR_MAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    axes.set_xticks(range(len(source_tokens)), [_escape(token) for token in source_tokens])
    axes.set_yticks(range(len(target_tokens)), [_escape(token) for token in target_tokens])
    axes.tick_params(axis="both", labelsize=font_size, length=0)
    axes.tick_params(
        axis="x", top=True, labeltop=True, bottom=False, labelbottom=False, labelrotation=90
    )
    axes.set_xlabel("source", fontsize=font_size)
    axes.xaxis.set_label_position("top")
    axes.set_ylabel("target", fontsize=font_size)
    return image


def _escape(text: str) -> str:
    """Show "$" literally instead of starting matplotlib mathtext."""
    return str(text).replace("$", r"\$")


def _check_format(fmt: str) -> str:
    """Normalise a format name ("PNG", ".png" -> "png") or raise NmtError."""
    name = fmt.lower().lstrip(".")
    if name not in FORMATS:
        raise NmtError(f"Unknown plot format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return name


def _save(figure: Figure, path: str | os.PathLike[str], fmt: str | None,
          dpi: int = PNG_DPI) -> Path:
    """Write `figure` to a temporary file beside `path`, then move it into place."""
    path = Path(path)
    if fmt is None:
        if not path.suffix:
            raise NmtError(f"Cannot tell the plot format of {path}; use a suffix like .png")
        fmt = path.suffix
    fmt = _check_format(fmt)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS and suffix != fmt:
        raise NmtError(f"Plot format {fmt!r} does not match the file name {path}")
    if path.exists():
        raise NmtError(f"Refusing to overwrite existing plot {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Drop timestamps so the same figure gives the same bytes.
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=fmt, dpi=dpi, metadata=metadata)
    logger.debug("Wrote attention plot %s", path)
    return path


def _slug(text: str) -> str:
    """Lowercase ASCII slug of `text`, at most SLUG_LENGTH characters, never empty."""
    folded = text.casefold().translate(_LETTERS_WITHOUT_DECOMPOSITION)  # casefold: ß -> ss
    ascii_text = unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    if len(slug) > SLUG_LENGTH:
        cut = slug[: SLUG_LENGTH + 1]
        slug = cut[: cut.rfind("-")] if "-" in cut else slug[:SLUG_LENGTH]
    return slug.strip("-") or "sentence"
