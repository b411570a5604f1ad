"""Figures drawn with PIL alone (the core package carries no plotting library): a labelled grid
of image tiles, for comparing methods side by side, and a line chart, for loss curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ilo.errors import InputError

# Tab10: distinct for the few series a chart holds, and readable on white.
COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
MIN_TILE_SIDE = 128  # tiles are upscaled to at least this, so a caption is not wider than its tile
PAD = 6


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
    if not rows:
        raise InputError("labelled_grid: no rows of tiles")
    if len(row_labels) != len(rows):
        raise InputError(f"labelled_grid: {len(row_labels)} row labels for {len(rows)} rows")
    for r, row in enumerate(rows):
        if len(row) != len(col_labels):
            raise InputError(f"labelled_grid: row {r} has {len(row)} tiles for {len(col_labels)} column labels")
    if captions is not None:
        captions = [list(row) for row in captions]
        if [len(row) for row in captions] != [len(row) for row in rows]:
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
    if scale is None:
        scale = max(1, math.ceil(MIN_TILE_SIDE / max(h, w)))
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
            caption = captions[r][c] if captions is not None else None
            if caption:
                centred(caption, x0 + tw / 2, y0 + th + PAD / 2)
    return image


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    log_y: bool = True,
    vlines: Sequence[tuple[float, str]] | None = None,
    size: tuple[int, int] = (720, 420),
    font_size: int = 13,
) -> Image.Image:
    """Lines through (x, y) points, one colour each, with axes, ticks and a legend on the right.

    series: label -> (xs, ys), in legend order. Points with a NaN or infinite coordinate (and,
    with `log_y`, a y of 0 or less) are left out and break their line there; a point with no
    neighbour is drawn as a dot. log_y: a log-scale y axis with a tick at each power of ten.
    vlines: (x, label) pairs drawn as dashed vertical lines with their labels (e.g. where a
    round begins)."""
    if not series:
        raise InputError("line_chart: no series to draw")
    vlines = list(vlines or [])
    for x, label in vlines:
        if not math.isfinite(x):
            raise InputError(f"line_chart: the vertical line '{label}' is at {x}, not a finite x")
    runs: dict[str, list[list[tuple[float, float]]]] = {}  # per series, its unbroken stretches
    for label, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise InputError(f"line_chart: series '{label}' has {len(xs)} x values and {len(ys)} y values")
        stretches: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(xs, ys):
            x, y = float(x), float(y)
            if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y):
                stretches[-1].append((x, math.log10(y) if log_y else y))
            elif stretches[-1]:
                stretches.append([])
        runs[label] = [s for s in stretches if s]
    points = [p for stretches in runs.values() for s in stretches for p in s]
    x_lo, x_hi = _span([p[0] for p in points] + [x for x, _ in vlines], pad=0.0)
    stride = 1  # decades per major tick (log axis)
    if log_y:
        ys = [p[1] for p in points] or [0.0]
        y_lo, y_hi = math.floor(min(ys)), math.ceil(max(ys))
        y_hi = max(y_hi, y_lo + 1)
        stride = max(1, math.ceil((y_hi - y_lo) / 8))  # at most about 8 decade ticks
        y_ticks = [(float(e), _decade_label(e)) for e in range(y_lo, y_hi + 1, stride)]
    else:
        y_lo, y_hi = _span([p[1] for p in points], pad=0.05)
        y_ticks = [(v, f"{v:g}") for v in _nice_ticks(y_lo, y_hi)]
    x_ticks = [(v, f"{v:g}") for v in _nice_ticks(x_lo, x_hi)]

    font = _font(font_size)
    width, height = size
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    text_h = _text_size(draw, "Ag", font)[1]
    legend_w = max(_text_size(draw, label, font)[0] for label in series) + 44
    tick_w = max(_text_size(draw, label, font)[0] for _, label in y_ticks)
    left = PAD + text_h + PAD + tick_w + PAD  # the y label, turned on its side, then the tick labels
    right = width - legend_w - 2 * PAD
    top = PAD + text_h + 2 * PAD + (text_h + PAD if vlines else 0)  # title, then the vertical lines' labels
    bottom = height - (PAD + 2 * text_h + 3 * PAD)  # tick labels, then the x label
    if right - left < 20 or bottom - top < 20:
        raise InputError(f"line_chart: {width}x{height} is too small for its labels")

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    for v, label in y_ticks:
        draw.line([(left, py(v)), (right, py(v))], fill=(225, 225, 225))
        draw.line([(left - 4, py(v)), (left, py(v))], fill="black")
        draw.text((left - 6 - _text_size(draw, label, font)[0], py(v) - text_h / 2), label, fill="black", font=font)
    if log_y and stride == 1 and y_hi - y_lo <= 4:  # minor ticks at 2..9 x each power of ten
        for e in range(int(y_lo), int(y_hi)):
            for m in range(2, 10):
                draw.line([(left - 2, py(e + math.log10(m))), (left, py(e + math.log10(m)))], fill="black")
    for v, label in x_ticks:
        draw.line([(px(v), bottom), (px(v), bottom + 4)], fill="black")
        draw.text((px(v) - _text_size(draw, label, font)[0] / 2, bottom + 6), label, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")

    shelf = top - text_h - PAD  # the vertical lines' labels, each moved right of the previous one
    last_end = -math.inf
    for x, label in sorted(vlines):
        _dashed_vline(draw, px(x), top, bottom, (90, 90, 90))
        x_text = max(px(x) + 3, last_end + PAD)
        draw.text((x_text, shelf), label, fill=(60, 60, 60), font=font)
        last_end = x_text + _text_size(draw, label, font)[0]

    for i, (label, stretches) in enumerate(runs.items()):
        colour = COLOURS[i % len(COLOURS)]
        for stretch in stretches:
            xy = [(px(x), py(y)) for x, y in stretch]
            if len(xy) == 1:
                ((cx, cy),) = xy
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
            else:
                draw.line(xy, fill=colour, width=2)
        ly = top + PAD + i * (text_h + PAD) + text_h / 2
        draw.line([(right + 2 * PAD, ly), (right + 2 * PAD + 24, ly)], fill=colour, width=3)
        draw.text((right + 2 * PAD + 30, ly - text_h / 2), label, fill="black", font=font)
    if not points:
        draw.text((left + PAD, top + PAD), "no finite values to draw", fill=(200, 0, 0), font=font)

    title_w = _text_size(draw, title, font)[0]
    draw.text(((left + right - title_w) / 2, PAD), title, fill="black", font=font)
    xlabel_w = _text_size(draw, xlabel, font)[0]
    draw.text(((left + right - xlabel_w) / 2, height - PAD - text_h), xlabel, fill="black", font=font)
    _draw_vertical_text(image, ylabel, font, (PAD, (top + bottom) / 2))
    return image


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


def _span(values: list[float], pad: float) -> tuple[float, float]:
    """The range of `values`, widened by `pad` of itself; one value (or none) gets a unit range."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi == lo:
        half = max(abs(lo) * 0.1, 0.5)
        return lo - half, hi + half
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    raw = (hi - lo) / target
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12) + 0.0)  # + 0.0: no '-0' label
        k += 1
    return ticks


def _decade_label(exponent: int) -> str:
    return f"{10.0**exponent:g}" if -2 <= exponent <= 3 else f"1e{exponent}"


def _dashed_vline(draw: ImageDraw.ImageDraw, x: float, top: float, bottom: float, colour, dash: int = 5) -> None:
    y = top
    while y < bottom:
        draw.line([(x, y), (x, min(y + dash, bottom))], fill=colour, width=1)
        y += 2 * dash


def _draw_vertical_text(image: Image.Image, text: str, font, left_middle: tuple[float, float]) -> None:
    """Text turned a quarter left (reading upwards), its middle at the given height."""
    measure = ImageDraw.Draw(image)
    w, h = _text_size(measure, text, font)
    if not w or not h:
        return
    label = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(label).text((0, 0), text, fill="black", font=font)
    label = label.rotate(90, expand=True)
    x, y_mid = left_middle
    image.paste(label, (int(x), int(max(0, y_mid - label.height / 2))))
