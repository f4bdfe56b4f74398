"""Tests for nmt.plotting: real files on real paths, checked with Pillow."""

import numpy as np
import pytest
from PIL import Image

from nmt.errors import NmtError
from nmt.plotting import plot_attention, plot_attention_grid, plot_filename, unique_path

SOURCE = ["▁Ein", "▁Mann", "▁fähr", "t", "▁Fahr", "rad", "."]
TARGET = ["▁A", "▁man", "▁rides", "▁a", "▁bike", ".", "</s>"]


def soft_weights(n_target: int, n_source: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(n_source), size=n_target)


def tokens(prefix: str, count: int) -> list[str]:
    return [f"▁{prefix}{index}" for index in range(count)]


def test_png_written_readable_and_not_blank(tmp_path):
    path = plot_attention(
        soft_weights(7, 7), SOURCE, TARGET, tmp_path / "a.png", title="dot / soft"
    )
    assert path == tmp_path / "a.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    assert [entry.name for entry in tmp_path.iterdir()] == ["a.png"]  # no temporary left


def test_hard_attention_png(tmp_path):
    path = plot_attention(np.eye(7), SOURCE, TARGET, tmp_path / "hard.png", title="hard")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


def test_figure_grows_with_token_count(tmp_path):
    small = plot_attention(
        soft_weights(5, 5), tokens("s", 5), tokens("t", 5), tmp_path / "small.png"
    )
    large = plot_attention(
        soft_weights(45, 45), tokens("s", 45), tokens("t", 45), tmp_path / "large.png"
    )
    with Image.open(small) as small_image, Image.open(large) as large_image:
        assert large_image.width > small_image.width
        assert large_image.height > small_image.height


@pytest.mark.parametrize(
    ("name", "fmt", "magic"),
    [
        ("a.svg", None, (b"<?xml", b"<svg")),
        ("a.pdf", None, (b"%PDF",)),
        ("a.out", "svg", (b"<?xml",)),
    ],
)
def test_vector_formats(tmp_path, name, fmt, magic):
    path = plot_attention(soft_weights(7, 7), SOURCE, TARGET, tmp_path / name, fmt=fmt)
    assert path.read_bytes().startswith(magic)


def test_unknown_format(tmp_path):
    with pytest.raises(NmtError, match="png, svg, pdf"):
        plot_attention(soft_weights(7, 7), SOURCE, TARGET, tmp_path / "a.gif")
    with pytest.raises(NmtError, match="does not match"):
        plot_attention(soft_weights(7, 7), SOURCE, TARGET, tmp_path / "a.png", fmt="pdf")


def test_existing_file_is_not_overwritten(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"keep me")
    with pytest.raises(NmtError, match="a.png"):
        plot_attention(soft_weights(7, 7), SOURCE, TARGET, path)
    assert path.read_bytes() == b"keep me"
    assert unique_path(path) == tmp_path / "a-1.png"
    (tmp_path / "a-1.png").write_bytes(b"")
    assert unique_path(path) == tmp_path / "a-2.png"
    assert unique_path(tmp_path / "free.png") == tmp_path / "free.png"


def test_shape_mismatch_names_expected_and_received(tmp_path):
    with pytest.raises(NmtError, match=r"\[7, 7\], got \[7, 6\]"):
        plot_attention(soft_weights(7, 6), SOURCE, TARGET, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_empty_translation_still_plots(tmp_path):
    path = plot_attention(np.zeros((0, 7)), SOURCE, [], tmp_path / "empty.png")
    assert path.stat().st_size > 0


@pytest.mark.parametrize(
    ("index", "text", "expected"),
    [
        (3, "Ein Mann fährt Fahrrad.", "0003-ein-mann-fahrt-fahrrad.png"),
        (12, "Über Straßen & Brücken!", "0012-uber-strassen-brucken.png"),
        (0, "…!?", "0000-sentence.png"),
        (7, "", "0007-sentence.png"),
    ],
)
def test_plot_filename(index, text, expected):
    assert plot_filename(index, text) == expected


def test_plot_filename_is_short_and_takes_the_format():
    name = plot_filename(
        1, "Zwei junge weiße Männer sind draußen in der Nähe vieler Büsche.", "svg"
    )
    slug = name.removeprefix("0001-").removesuffix(".svg")
    assert name.endswith(".svg")
    assert 0 < len(slug) <= 40
    assert slug == "zwei-junge-weisse-manner-sind-draussen"


def test_grid_written(tmp_path):
    panels = [
        ("dot / soft", soft_weights(7, 7), SOURCE, TARGET),
        ("concat / hard", np.eye(6, 7), SOURCE, TARGET[:6]),
        ("general / soft", soft_weights(3, 7, seed=1), SOURCE, ["▁A", "▁man", "."]),
    ]
    path = plot_attention_grid(panels, tmp_path / "grid.png", title="Ein Mann fährt Fahrrad.")
    single = plot_attention(soft_weights(7, 7), SOURCE, TARGET, tmp_path / "single.png")
    with Image.open(path) as grid_image, Image.open(single) as single_image:
        assert grid_image.width > 2 * single_image.width
        assert np.asarray(grid_image.convert("RGB")).std() > 0


def test_grid_wraps_into_rows_at_the_given_resolution(tmp_path):
    panels = [(f"run {i}", soft_weights(7, 7, seed=i), SOURCE, TARGET) for i in range(5)]
    one_row = plot_attention_grid(panels, tmp_path / "row.png", dpi=60)
    wrapped = plot_attention_grid(panels, tmp_path / "wrapped.png", columns=2, dpi=60)
    sharper = plot_attention_grid(panels, tmp_path / "sharp.png", columns=2, dpi=120)
    with Image.open(one_row) as row, Image.open(wrapped) as grid, Image.open(sharper) as sharp:
        assert row.width > row.height and grid.height > grid.width  # 1 x 5 against 3 x 2
        assert grid.width < row.width / 2
        assert abs(sharp.width / grid.width - 2) < 0.1


def test_grid_shape_mismatch_names_the_panel(tmp_path):
    panels = [("ok", np.eye(7), SOURCE, TARGET), ("bad", np.eye(3), SOURCE, TARGET)]
    with pytest.raises(NmtError, match=r"Panel 1 \('bad'\)"):
        plot_attention_grid(panels, tmp_path / "grid.png")
    with pytest.raises(NmtError, match="without panels"):
        plot_attention_grid([], tmp_path / "grid.png")
