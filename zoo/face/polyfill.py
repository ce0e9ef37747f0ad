"""Integer convex hulls and OpenCV-exact convex polygon filling, in numpy (no OpenCV).

TEASER's face-hull mask is `cv2.fillConvexPoly(ones, cv2.convexHull(landmarks.astype(int32)), 0)`. Pixels on the
hull boundary are decided by OpenCV's rasterisation rules, which a plain point-in-polygon test does not reproduce:
`fillConvexPoly` (line type 8, shift 0) draws every edge with an 8-connected Bresenham line and fills each row
between the two active edges, walked in 16.16 fixed point with half-pixel rounding. `fill_convex_poly` follows
those rules; the tests compare it with masks made by the official code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["convex_hull", "fill_convex_poly", "hull_mask"]

_SHIFT = 16
_ONE = 1 << _SHIFT
_HALF = _ONE >> 1


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices `[K, 2]` of the convex hull of integer points `[N, 2]` (monotone chain, collinear points dropped)."""
    pts = sorted({(int(x), int(y)) for x, y in np.asarray(points).reshape(-1, 2)})
    if len(pts) < 3:
        return np.asarray(pts, dtype=np.int64).reshape(-1, 2)

    def cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[int, int]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[int, int]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.int64)


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _clip_line(width: int, height: int, x1: int, y1: int, x2: int, y2: int) -> tuple[bool, int, int, int, int]:
    """OpenCV's `clipLine` (integer Cohen-Sutherland): (visible, clipped end points)."""
    right, bottom = width - 1, height - 1

    def code(x: int, y: int, with_y: bool = True) -> int:
        return (x < 0) + (x > right) * 2 + ((y < 0) * 4 + (y > bottom) * 8 if with_y else 0)

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += _cdiv((a - y1) * (x2 - x1), y2 - y1)
            y1, c1 = a, code(x1, 0, False)
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += _cdiv((a - y2) * (x2 - x1), y2 - y1)
            y2, c2 = a, code(x2, 0, False)
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += _cdiv((a - x1) * (y2 - y1), x2 - x1)
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += _cdiv((a - x2) * (y2 - y1), x2 - x1)
                x2, c2 = a, 0
    return (c1 | c2) == 0, x1, y1, x2, y2


def _line(mask: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], value: int) -> None:
    """An 8-connected line as OpenCV's `LineIterator` draws it: clipped to the image, then walked left to right."""
    height, width = mask.shape
    (x0, y0), (x1, y1) = p0, p1
    if not (0 <= x0 < width and 0 <= x1 < width and 0 <= y0 < height and 0 <= y1 < height):
        visible, x0, y0, x1, y1 = _clip_line(width, height, x0, y0, x1, y1)
        if not visible:
            return
    if x1 < x0:
        x0, y0, x1, y1 = x1, y1, x0, y0
    dx, dy = x1 - x0, y1 - y0
    step_y = -1 if dy < 0 else 1
    dy = abs(dy)
    major_is_x = dx >= dy
    major, minor = (dx, dy) if major_is_x else (dy, dx)
    err = major - 2 * minor
    x, y = x0, y0
    for _ in range(major + 1):
        mask[y, x] = value
        diagonal = err < 0
        err += -2 * minor + (2 * major if diagonal else 0)
        if major_is_x:
            x += 1
            y += step_y if diagonal else 0
        else:
            y += step_y
            x += 1 if diagonal else 0


def fill_convex_poly(mask: np.ndarray, polygon: np.ndarray, value: int) -> np.ndarray:
    """`cv2.fillConvexPoly(mask, polygon, value)` for integer vertices (line type 8, no shift), in place."""
    v = [(int(x), int(y)) for x, y in np.asarray(polygon).reshape(-1, 2)]
    n = len(v)
    if n == 0:
        return mask
    height, width = mask.shape
    for i in range(n):
        _line(mask, v[i - 1], v[i], value)
    xs, ys = [p[0] for p in v], [p[1] for p in v]
    if n < 3 or max(xs) < 0 or max(ys) < 0 or min(xs) >= width or min(ys) >= height:
        return mask
    top = min(range(n), key=lambda i: (ys[i], i))
    y = ys[top]
    y_end = min(max(ys), height - 1)
    # two edge walkers leave the top vertex in opposite directions: [vertex index, step, x, dx, y_end]
    walkers = [[top, 1, -_ONE, 0, y], [top, n - 1, -_ONE, 0, y]]
    remaining = n
    while True:
        for walker in walkers:
            if y < walker[4]:
                continue
            start = walker[0]
            index = (start + walker[1]) % n
            while True:  # OpenCV's `for (; edges-- > 0; )`: the failing test decrements too
                more = remaining > 0
                remaining -= 1
                if not more:
                    break
                if ys[index] > y:
                    x_start, x_stop = xs[start] << _SHIFT, xs[index] << _SHIFT
                    span = ys[index] - y
                    # C integer division truncates towards zero
                    numerator = (x_stop - x_start) * 2 + span
                    denominator = 2 * span
                    quotient = abs(numerator) // denominator
                    walker[3] = quotient if numerator >= 0 else -quotient
                    walker[2], walker[4], walker[0] = x_start, ys[index], index
                    break
                start, index = index, (index + walker[1]) % n
        if remaining < 0:
            break
        if y >= 0:
            left, right = sorted((walkers[0][2], walkers[1][2]))
            x_left, x_right = (left + _HALF) >> _SHIFT, (right + _HALF) >> _SHIFT
            if x_right >= 0 and x_left < width:
                mask[y, max(x_left, 0):min(x_right, width - 1) + 1] = value
        walkers[0][2] += walkers[0][3]
        walkers[1][2] += walkers[1][3]
        y += 1
        if y > y_end:
            break
    return mask


def hull_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """TEASER's `create_mask`: uint8 `[H, W]`, 1 outside the convex hull of `points` (float pixel coordinates
    `[N, 2]`, x then y, truncated towards zero as `astype(int32)`), 0 on and inside it."""
    points = np.asarray(points, dtype=np.float64)[..., :2]
    if not np.isfinite(points).all():
        raise ValueError("face landmarks for the hull mask must be finite")
    mask = np.ones((height, width), dtype=np.uint8)
    return fill_convex_poly(mask, convex_hull(np.trunc(points).astype(np.int64)), 0)
