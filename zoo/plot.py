"""Small charts drawn with PIL (no plotting library needed): panels of line and scatter series, saved as PNG.

The evaluation scripts write the curves people look at (quality against tokens, tokens against complexity) beside
their numbers with this, so that no plotting package is a dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


@dataclass
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    kind: str = "line"  # "line" (with markers) or "scatter"
    colour: tuple[int, int, int] | None = None


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xlog: bool = False  # log-scaled x axis (token counts that double), ticks labelled with the x values
    xticks: list[float] | None = None  # explicit x ticks (default: evenly spaced "nice" values)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * step:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _label(v: float, ticks: list[float]) -> str:
    """`v` with as many decimals as the tick spacing needs (15, 15.5, 16 rather than 15, 16, 16)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{v:.{decimals}f}"


def draw_panels(panels: list[Panel], path: str, panel_size: tuple[int, int] = (460, 360)) -> None:
    """Panels side by side; each with its own axes, ticks, legend; saved as PNG."""
    pw, ph = panel_size
    canvas = Image.new("RGB", (pw * len(panels), ph), "white")
    draw = ImageDraw.Draw(canvas)
    for i, panel in enumerate(panels):
        left, right, top, bottom = i * pw + 62, (i + 1) * pw - 16, 34, ph - 48
        fx = math.log if panel.xlog else float

        def shown(x: float, y: float = 0.0, xlog=panel.xlog) -> bool:  # finite, and x > 0 on a log axis
            return math.isfinite(x) and math.isfinite(y) and (x > 0 or not xlog)

        points = [(fx(x), y) for s in panel.series for x, y in zip(s.xs, s.ys) if shown(x, y)]
        if not points:
            continue
        xlo, xhi = min(p[0] for p in points), max(p[0] for p in points)
        ylo, yhi = min(p[1] for p in points), max(p[1] for p in points)
        xm, ym = 0.05 * (xhi - xlo or 1), 0.08 * (yhi - ylo or 1)
        xlo, xhi, ylo, yhi = xlo - xm, xhi + xm, ylo - ym, yhi + ym

        def px(x: float, box=(left, right), lim=(xlo, xhi), fx=fx) -> float:  # a data x -> canvas column
            return box[0] + (fx(x) - lim[0]) / (lim[1] - lim[0]) * (box[1] - box[0])

        def py(y: float, box=(top, bottom), lim=(ylo, yhi)) -> float:  # a data y -> canvas row
            return box[1] - (y - lim[0]) / (lim[1] - lim[0]) * (box[1] - box[0])

        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, 10), panel.title, fill="black")
        xs = sorted({x for s in panel.series for x in s.xs if shown(x)})
        xticks = panel.xticks or (xs if panel.xlog else _nice_ticks(xlo, xhi))
        yticks = _nice_ticks(ylo, yhi)
        for t in xticks:
            tx = px(t)
            draw.line([tx, bottom, tx, bottom + 4], fill="black")
            draw.text((tx - 8, bottom + 7), _label(t, xticks), fill="black")
        for t in yticks:
            ty = py(t)
            draw.line([left - 4, ty, left, ty], fill="black")
            draw.text((left - 40, ty - 6), _label(t, yticks), fill="black")
        draw.text(((left + right) // 2 - 3 * len(panel.xlabel), ph - 22), panel.xlabel, fill="black")
        draw.text((i * pw + 4, top - 16), panel.ylabel, fill="black")
        for k, s in enumerate(panel.series):
            colour = s.colour or PALETTE[k % len(PALETTE)]
            pts = [(px(x), py(y)) for x, y in zip(s.xs, s.ys) if shown(x, y)]
            if s.kind == "line" and len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            r = 4 if s.kind == "line" else 3
            for cx, cy in pts:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            draw.rectangle([right - 150, top + 8 + 14 * k, right - 142, top + 16 + 14 * k], fill=colour)
            draw.text((right - 136, top + 5 + 14 * k), s.label, fill="black")
    canvas.save(path)
