"""Small charts drawn with PIL (no plotting library in the environment): panels of line and scatter series."""

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


def _label(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2g}"


def draw_panels(panels: list[Panel], path: str, panel_size: tuple[int, int] = (460, 360)) -> None:
    """Panels side by side; each with its own axes, ticks, legend; saved as PNG."""
    pw, ph = panel_size
    canvas = Image.new("RGB", (pw * len(panels), ph), "white")
    draw = ImageDraw.Draw(canvas)
    for i, panel in enumerate(panels):
        left, right, top, bottom = i * pw + 62, (i + 1) * pw - 16, 34, ph - 48
        points = [(x, y) for s in panel.series for x, y in zip(s.xs, s.ys) if math.isfinite(x) and math.isfinite(y)]
        if not points:
            continue
        xlo, xhi = min(p[0] for p in points), max(p[0] for p in points)
        ylo, yhi = min(p[1] for p in points), max(p[1] for p in points)
        xm, ym = 0.05 * (xhi - xlo or 1), 0.08 * (yhi - ylo or 1)
        xlo, xhi, ylo, yhi = xlo - xm, xhi + xm, ylo - ym, yhi + ym

        def at(x: float, y: float, box=(left, right, top, bottom), lim=(xlo, xhi, ylo, yhi)) -> tuple[float, float]:
            (l_, r_, t_, b_), (x0, x1, y0, y1) = box, lim
            return l_ + (x - x0) / (x1 - x0) * (r_ - l_), b_ - (y - y0) / (y1 - y0) * (b_ - t_)

        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, 10), panel.title, fill="black")
        for t in _nice_ticks(xlo, xhi):
            tx, _ = at(t, ylo)
            draw.line([tx, bottom, tx, bottom + 4], fill="black")
            draw.text((tx - 8, bottom + 7), _label(t), fill="black")
        for t in _nice_ticks(ylo, yhi):
            _, ty = at(xlo, t)
            draw.line([left - 4, ty, left, ty], fill="black")
            draw.text((left - 40, ty - 6), _label(t), fill="black")
        draw.text(((left + right) // 2 - 3 * len(panel.xlabel), ph - 22), panel.xlabel, fill="black")
        draw.text((i * pw + 4, top - 16), panel.ylabel, fill="black")
        for k, s in enumerate(panel.series):
            colour = s.colour or PALETTE[k % len(PALETTE)]
            pts = [at(x, y) for x, y in zip(s.xs, s.ys) if math.isfinite(x) and math.isfinite(y)]
            if s.kind == "line" and len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            r = 4 if s.kind == "line" else 3
            for px, py in pts:
                draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
            draw.rectangle([right - 150, top + 8 + 14 * k, right - 142, top + 16 + 14 * k], fill=colour)
            draw.text((right - 136, top + 5 + 14 * k), s.label, fill="black")
    canvas.save(path)
