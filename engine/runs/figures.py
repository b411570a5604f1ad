"""Figures: charts drawn by matplotlib (the `plot` extra, imported only when a chart is drawn, so
the core install stays lean) and a labelled grid of image tiles drawn by PIL.

A chart makes one claim: curves over steps are lines with the round boundaries marked (the
paper's Fig. 2), categorical comparisons are grouped bars with the categories named on the axis.
The chart functions return a matplotlib `Figure` (inspectable before it is saved); `save_png`
writes one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ilo.errors import IloError, InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_EXTRA = 'pip install "ilo-engine[plot]"'
DPI = 100  # a figure of size (w, h) in pixels is (w / DPI, h / DPI) inches
MIN_TILE_SIDE = 128  # tiles are upscaled to at least this, so a caption is not wider than its tile
PAD = 6


def require_matplotlib() -> None:
    """Fail with one line naming the extra where matplotlib is missing; callers check before
    any work whose result would then be lost."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise IloError(f"charts need matplotlib, which the core install leaves out: {PLOT_EXTRA}") from None


def _figure(size: tuple[int, int]) -> Figure:
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")


def save_png(figure: Figure, target: str | Path | IO[bytes], metadata: Mapping[str, str] | None = None) -> None:
    """The figure as a PNG of its own pixel size, with `metadata` as PNG text fields."""
    figure.savefig(target, format="png", dpi=DPI, metadata=dict(metadata or {}))


def rounds_in_sequence(rounds: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Per-round curves laid end to end: the steps, the values, and the step each round starts at."""
    xs: list[float] = []
    ys: list[float] = []
    starts: list[float] = []
    for curve in rounds:
        starts.append(float(len(xs)))
        xs += [float(x) for x in range(len(xs), len(xs) + len(curve))]
        ys += [float(y) for y in curve]
    return xs, ys, starts


def _drawable(ys: Sequence[float], log_y: bool) -> np.ndarray:
    """NaN where a value cannot be drawn (not finite, or not positive on a log axis): a gap."""
    values = np.asarray(ys, dtype=float)
    bad = ~np.isfinite(values) | ((values <= 0) if log_y else False)
    return np.where(bad, np.nan, values)


def loss_chart(
    curves: Mapping[str, Sequence[Sequence[float]]],
    title: str,
    ylabel: str,
    xlabel: str = "step (rounds one after another)",
    log_y: bool = True,
    size: tuple[int, int] = (720, 420),
    colours: Mapping[str, str] | None = None,
) -> Figure:
    """Loss against step, in the style of the paper's Fig. 2.

    curves: label -> that series' loss per round (a list of per-step values for each round),
    laid end to end; the rounds of the first series with more than one are marked by dashed
    vertical lines. Values that cannot be drawn (NaN, infinite, or not positive on the log
    axis) leave a gap; a point with no neighbour shows as a dot. colours: label -> matplotlib
    colour, to keep a series' colour across figures (else matplotlib's cycle)."""
    if not curves:
        raise InputError("loss_chart: no curves to draw")
    figure = _figure(size)
    ax = figure.add_subplot()
    drawn = 0
    for label, rounds in curves.items():
        xs, ys, _ = rounds_in_sequence(rounds)
        values = _drawable(ys, log_y)
        finite = np.isfinite(values)
        drawn += int(finite.sum())
        (line,) = ax.plot(xs, values, label=label, linewidth=1.5, color=(colours or {}).get(label))
        # a point whose neighbours are gaps has no line through it: a dot shows it
        padded = np.pad(finite, 1)
        alone = finite & ~padded[:-2] & ~padded[2:]
        ax.plot(np.asarray(xs)[alone], values[alone], "o", color=line.get_color(), markersize=3)
    marked = next(((label, r) for label, r in curves.items() if len(r) > 1), None)
    if marked is not None:
        prefix = f"{marked[0]} " if len(curves) > 1 else ""
        for k, start in enumerate(rounds_in_sequence(marked[1])[2]):
            ax.axvline(start, color="0.45", linestyle="--", linewidth=1, gid="round boundary")
            ax.annotate(
                f"{prefix}round {k}",
                (start, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="0.3",
            )
    if drawn and log_y:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, not 5 x 10^-1
        lo, hi = ax.get_ylim()
        ax.yaxis.set_major_formatter(plain)  # the 2..9 ticks named only where few powers of ten show
        ax.yaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())
    if not drawn:
        ax.text(0.5, 0.5, "no finite values to draw", transform=ax.transAxes, ha="center", color="tab:red")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    ax.legend(loc="lower left", fontsize=8)  # the round labels run along the top
    return figure


def grouped_bars(
    panels: Mapping[str, Mapping[str, Mapping[str, float]]],
    ylabel: str,
    title: str,
    colours: Mapping[str, str] | None = None,
    reference: float | None = None,
    size: tuple[int, int] = (1000, 460),
) -> Figure:
    """Categorical comparisons as grouped bars, the categories named on the axis.

    panels: panel title -> category (e.g. the task) -> series (e.g. the method) -> value, the
    panels side by side on one y scale. Each series has one colour in every panel (`colours`:
    series -> matplotlib colour, to keep it across figures; else in order of appearance); a
    series with no value for a category leaves its slot empty. reference: a value marked by a
    horizontal line with the bars drawn from zero (e.g. 1 for speed-ups); without it the axis
    starts just under the lowest bar, so differences of a few tenths show."""
    if not panels or not any(panels.values()):
        raise InputError("grouped_bars: no categories to draw")
    series = list(dict.fromkeys(s for cats in panels.values() for values in cats.values() for s in values))
    palette = dict(colours or {})
    for i, s in enumerate(x for x in series if x not in palette):
        palette[s] = f"C{i % 10}"
    panels = {
        p: {c: {s: v for s, v in by.items() if math.isfinite(v)} for c, by in cats.items()}
        for p, cats in panels.items()
    }
    values = [v for cats in panels.values() for by in cats.values() for v in by.values()]
    if not values:
        raise InputError("grouped_bars: no finite value to draw")
    figure = _figure(size)
    ratios = [max(1, len(c)) for c in panels.values()]  # a bar is as wide in every panel
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False, width_ratios=ratios)[0]
    width = 0.8 / len(series)
    for ax, (panel, categories) in zip(axes, panels.items()):
        for j, s in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * width for i, by in enumerate(categories.values()) if s in by]
            ys = [by[s] for by in categories.values() if s in by]
            ax.bar(xs, ys, width, color=palette[s], label=s)
        ax.set_xticks(range(len(categories)), list(categories), rotation=15, ha="right", rotation_mode="anchor")
        ax.set_title(panel)
        ax.grid(axis="y", alpha=0.3)
        if reference is not None:
            ax.axhline(reference, color="black", linewidth=1)
    lo, hi = min(values), max(values)
    margin = 0.08 * (hi - lo) + 0.5
    axes[0].set_ylim(0 if reference is not None else lo - margin, hi + margin)
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    figure.legend(unique.values(), unique.keys(), loc="outside right upper", fontsize=8)
    figure.suptitle(title)
    return figure


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    try:
        _, _, right, bottom = draw.textbbox((0, 0), text, font=font)
        return round(right), round(bottom)
    except (ValueError, AttributeError):  # Pillow < 9.2: no bounding boxes for bitmap fonts
        return font.getsize(text)


def _tile_shape(rows: list[list[np.ndarray | None]], row_labels, col_labels, captions) -> tuple[int, int]:
    """The one (H, W) every tile has; InputError for grids that are not shaped as promised."""
    if not rows:
        raise InputError("labelled_grid: no rows of tiles")
    if len(row_labels) != len(rows):
        raise InputError(f"labelled_grid: {len(row_labels)} row labels for {len(rows)} rows")
    for r, row in enumerate(rows):
        if len(row) != len(col_labels):
            raise InputError(f"labelled_grid: row {r} has {len(row)} tiles for {len(col_labels)} column labels")
    if captions is not None and [len(row) for row in captions] != [len(row) for row in rows]:
        raise InputError("labelled_grid: captions must be shaped like the tiles (one per cell, None for none)")
    shapes = set()
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            if tile is None:
                continue
            if not isinstance(tile, np.ndarray) or tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3:
                raise InputError(f"labelled_grid: the tile at row {r}, column {c} is not an [H, W, 3] uint8 array")
            shapes.add(tile.shape)
    if not shapes:
        raise InputError("labelled_grid: every tile is blank")
    if len(shapes) > 1:
        sizes = ", ".join(f"{s[1]}x{s[0]}" for s in sorted(shapes))
        raise InputError(f"labelled_grid: tiles of different sizes ({sizes})")
    ((h, w, _),) = shapes
    return h, w


def labelled_grid(
    tiles: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    captions: Sequence[Sequence[str | None]] | None = None,
    scale: int | None = None,
    font_size: int = 14,
) -> Image.Image:
    """Image tiles in rows and columns, black text on white.

    tiles: rows of [H, W, 3] uint8 arrays, all of one size, or None for a blank cell.
    row_labels: one per row, on the left (e.g. the task); col_labels: one per column, on top
    (e.g. the method). captions: optional, shaped like tiles, a line under each tile (e.g.
    '27.31 dB'; None for none). scale: the integer factor tiles are enlarged by (nearest
    neighbour, so pixels stay sharp); default: the least that makes a side at least 128 px."""
    rows = [list(row) for row in tiles]
    captions = None if captions is None else [list(row) for row in captions]
    h, w = _tile_shape(rows, row_labels, col_labels, captions)
    scale = max(1, math.ceil(MIN_TILE_SIDE / max(h, w))) if scale is None else scale
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InputError(f"labelled_grid: scale must be a whole number of at least 1, got {scale}")
    th, tw = h * scale, w * scale
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = max(_text_size(measure, s, font)[1] for s in ["Ag", *row_labels, *col_labels])
    label_w = max(_text_size(measure, s, font)[0] for s in row_labels) + 2 * PAD if any(row_labels) else 0
    caption_h = text_h + PAD if captions is not None and any(c for row in captions for c in row) else 0
    header_h = text_h + 2 * PAD
    cell_w, cell_h = tw + PAD, th + caption_h + PAD
    image = Image.new("RGB", (PAD + label_w + cell_w * len(col_labels), header_h + cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(image)

    def centred(text: str, x_mid: float, y: float) -> None:
        draw.text((x_mid - _text_size(draw, text, font)[0] / 2, y), text, fill="black", font=font)

    for c, label in enumerate(col_labels):
        centred(label, PAD + label_w + c * cell_w + tw / 2, PAD)
    for r, row in enumerate(rows):
        y0 = header_h + r * cell_h
        draw.text((PAD, y0 + (th - text_h) / 2), row_labels[r], fill="black", font=font)
        for c, tile in enumerate(row):
            x0 = PAD + label_w + c * cell_w
            if tile is not None:
                image.paste(Image.fromarray(tile).resize((tw, th), Image.Resampling.NEAREST), (x0, y0))
            if captions is not None and captions[r][c]:
                centred(captions[r][c], x0 + tw / 2, y0 + th + PAD / 2)
    return image
