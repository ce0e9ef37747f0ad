"""zoo.plot: the PIL charts the evaluation scripts write beside their numbers."""

import math

import numpy as np
from PIL import Image

from zoo.plot import Panel, Series, _label, _nice_ticks, draw_panels


def test_draw_panels_writes_lines_scatter_and_skips_non_finite(tmp_path):
    path = tmp_path / "chart.png"
    panels = [Panel("quality", "tokens", "PSNR", [Series("a", [1, 2, 4], [15.0, 16.5, float("nan")]),
                                                  Series("b", [1, 2, 4], [14.0, 15.0, 15.5], kind="scatter")]),
              Panel("empty", "x", "y", [Series("nan only", [1.0], [math.nan])])]
    draw_panels(panels, str(path), panel_size=(300, 240))
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (240, 600, 3)
    left, right = image[:, :300], image[:, 300:]
    blue = np.all(left == (31, 119, 180), axis=-1).sum()
    red = np.all(left == (214, 39, 40), axis=-1).sum()
    assert blue > 50 and red > 20  # both series drawn in their palette colours
    assert (right == 255).all()  # a panel with no finite point stays blank


def test_tick_labels_have_the_decimals_the_spacing_needs():
    ticks = _nice_ticks(14.9, 16.6)
    labels = [_label(t, ticks) for t in ticks]
    assert len(set(labels)) == len(labels), labels  # 15.0, 15.5, ... not 15, 16, 16
    assert _label(200.0, [0.0, 100.0, 200.0]) == "200"


def test_log_x_axis_and_explicit_ticks(tmp_path):
    """Token counts that double sit evenly on a log axis; explicit ticks replace the automatic ones."""
    path = tmp_path / "log.png"
    ks = [1, 2, 4, 8, 16, 32]
    draw_panels([Panel("k curve", "tokens k", "PSNR", [Series("PSNR", ks, [15.0, 15.5, 16.0, 16.5, 17.0, 17.5])],
                       xlog=True),
                 Panel("depth", "depth", "cos", [Series("c", [1, 2, 3], [0.1, 0.2, 0.3])], xticks=[1, 2, 3])],
                str(path), panel_size=(300, 240))
    image = np.asarray(Image.open(path).convert("RGB"))[:, :300]
    mask = np.all(image == (31, 119, 180), axis=-1)
    mask[40:54, 130:146] = False  # the legend swatch (top right of the frame)
    rows, cols = np.nonzero(mask)
    # a straight line on a log axis: equal PSNR steps per doubling -> the blue pixels lie near one line
    fit = np.polyfit(cols, rows, 1)
    assert np.abs(np.polyval(fit, cols) - rows).mean() < 4.0
