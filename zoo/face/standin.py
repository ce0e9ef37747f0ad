"""A procedural stand-in with FLAME's file layout: an ellipsoid "head" for tests and smoke runs, not a face model.

FLAME cannot be shipped, yet the tiny TEASER variant must run encode -> FLAME -> render -> generate anywhere. This
module builds, from a seed and nothing else, a face model in the FLAME-format layout of `zoo.face.flame_files`:

* mesh: a latitude-longitude ellipsoid (semi-axes 8 x 11 x 9 cm, FLAME's metric scale), faces counter-clockwise
  seen from outside (outward normals, as FLAME);
* joints root, neck, jaw, left eye, right eye (FLAME's kinematic tree); skinning weights bind the lower front to
  the jaw, small patches to the eyes, the rest to the neck (root near the bottom);
* 300 shape and 100 expression blend shapes: smooth random radial fields (low-order polynomials of the position,
  decaying amplitudes; expression fields fade out towards the back of the head); small pose correctives;
* eyelid blend shapes: downward offsets of two patches around the eyes;
* landmark embeddings (51 static + 79 x 17 pose-dependent contour rows + 68 "3D" + 105 MediaPipe-like points) by
  casting the points of a schematic face layout onto the front of the mesh (the contour rows turned by their yaw);
* the "face" region: the front half of the head above the neck.

Everything is deterministic given `seed`. It has the layout of FLAME and none of its statistics: a network trained
on it learns nothing about real faces.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stand_in_face_model"]

AXES = (0.08, 0.11, 0.09)
JOINTS = np.array([[0.0, -0.09, -0.01], [0.0, -0.06, -0.01], [0.0, -0.025, 0.02], [0.032, 0.025, 0.06],
                   [-0.032, 0.025, 0.06]])
PARENTS = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
EYES = JOINTS[3:5]


def _ellipsoid(rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]  # polar angle from +y (top)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)  # azimuth, 0 = front (+z)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring_pts = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring_pts, [[0, -1, 0]]]) * np.asarray(AXES)
    top, bottom = 0, len(verts) - 1
    faces = []

    def idx(r: int, s: int) -> int:
        return 1 + r * segments + s % segments

    for s in range(segments):
        faces.append([top, idx(0, s + 1), idx(0, s)])
        faces.append([bottom, idx(rings - 2, s), idx(rings - 2, s + 1)])
        for r in range(rings - 2):
            a, b, c, d = idx(r, s), idx(r, s + 1), idx(r + 1, s), idx(r + 1, s + 1)
            faces += [[a, b, c], [b, d, c]]
    faces = np.asarray(faces, dtype=np.int64)
    v0, v1, v2 = (verts[faces[:, k]] for k in range(3))
    outward = (np.cross(v1 - v0, v2 - v0) * (v0 + v1 + v2)).sum(-1) > 0
    faces[~outward] = faces[~outward][:, [0, 2, 1]]
    return verts, faces


def _smooth_fields(verts: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` smooth scalar fields on the vertices (random cubic polynomials of the normalised position)."""
    q = verts / np.asarray(AXES)
    terms = [np.ones(len(q))]
    for i in range(3):
        terms.append(q[:, i])
        for j in range(i, 3):
            terms.append(q[:, i] * q[:, j])
            for k in range(j, 3):
                terms.append(q[:, i] * q[:, j] * q[:, k])
    basis = np.stack(terms, 1)  # [V, 20]
    return basis @ rng.normal(size=(basis.shape[1], count)) / np.sqrt(basis.shape[1])


def _embed(verts: np.ndarray, faces: np.ndarray, points: np.ndarray, yaw_deg: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Cast 2D points (x, y) along -z onto the front of the mesh turned by `yaw_deg`: (face index, barycentrics)."""
    a = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = verts @ rot.T
    tri = turned[faces]  # [F, 3, 3]
    idx, bary = [], []
    for x, y in points:
        (x0, y0), (x1, y1), (x2, y2) = tri[:, 0, :2].T, tri[:, 1, :2].T, tri[:, 2, :2].T
        det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        safe = np.where(np.abs(det) > 1e-12, det, 1.0)
        w0 = ((y1 - y2) * (x - x2) + (x2 - x1) * (y - y2)) / safe
        w1 = ((y2 - y0) * (x - x2) + (x0 - x2) * (y - y2)) / safe
        w = np.stack([w0, w1, 1 - w0 - w1], 1)
        hit = (np.abs(det) > 1e-12) & (w >= -1e-9).all(1)
        depth = np.where(hit, (w * tri[:, :, 2]).sum(1), -np.inf)
        best = int(np.argmax(depth))
        if not np.isfinite(depth[best]):
            raise ValueError(f"landmark ({x:.3f}, {y:.3f}) misses the stand-in mesh")
        idx.append(best)
        bary.append(np.clip(w[best], 0, 1) / np.clip(w[best], 0, 1).sum())
    return np.asarray(idx, dtype=np.int64), np.asarray(bary)


def _layout() -> dict[str, np.ndarray]:
    """A schematic face layout in metres (x = subject's left, y up): jaw contour, brows, nose, eyes, mouth."""
    t = np.linspace(-1, 1, 17)
    jaw = np.stack([0.062 * np.sin(t * 1.35), -0.005 - 0.075 * np.cos(t * 1.1)], 1)
    brows = np.concatenate([np.stack([s * np.linspace(0.012, 0.05, 5), 0.05 + 0.004 * np.sin(np.linspace(0, 3, 5))], 1)
                            for s in (-1, 1)])
    nose = np.concatenate([np.stack([np.zeros(4), np.linspace(0.035, 0.0, 4)], 1),
                           np.stack([np.linspace(-0.012, 0.012, 5), np.full(5, -0.005)], 1)])
    ring = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eyes = np.concatenate([np.stack([c[0] + 0.011 * np.cos(ring), c[1] + 0.004 * np.sin(ring)], 1) for c in EYES])
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    mouth = np.concatenate([np.stack([0.024 * np.cos(outer), -0.035 + 0.01 * np.sin(outer)], 1),
                            np.stack([0.014 * np.cos(inner), -0.035 + 0.004 * np.sin(inner)], 1)])
    static = np.concatenate([brows, nose, eyes, mouth])  # 10 + 9 + 12 + 20 = 51
    gx, gy = np.meshgrid(np.linspace(-0.05, 0.05, 15), np.linspace(-0.05, 0.055, 7))
    mp = np.stack([gx.ravel(), gy.ravel()], 1)  # 105
    return {"jaw": jaw, "static": static, "mp": mp}


def stand_in_face_model(rings: int = 18, segments: int = 28, seed: int = 0) -> dict[str, np.ndarray]:
    """The stand-in face model (see the module docstring) as FLAME-format arrays."""
    rng = np.random.default_rng(seed)
    verts, faces = _ellipsoid(rings, segments)
    num = len(verts)
    normals = verts / np.asarray(AXES) ** 2
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    front = np.clip(verts[:, 2] / AXES[2], 0, 1)
    scale = 0.002 / (1 + np.arange(300) / 20)
    shape = _smooth_fields(verts, 300, rng) * scale
    expr = _smooth_fields(verts, 100, rng) * (0.003 / (1 + np.arange(100) / 10)) * front[:, None]
    shapedirs = normals[:, :, None] * np.concatenate([shape, expr], 1)[:, None, :]
    posedirs = normals[:, :, None] * _smooth_fields(verts, 36, rng)[:, None, :] * 1e-3
    # skinning: root below the neck, jaw for the lower front, eyes for small patches, neck elsewhere
    weights = np.zeros((num, 5))
    jaw = np.clip((-0.01 - verts[:, 1]) / 0.03, 0, 1) * np.clip(verts[:, 2] / 0.03, 0, 1)
    root = np.clip((-0.085 - verts[:, 1]) / 0.02, 0, 1)
    eye = [np.exp(-np.sum((verts - c) ** 2, 1) / (2 * 0.012**2)) * (verts[:, 2] > 0) for c in EYES]
    weights[:, 0] = root
    weights[:, 2] = jaw * (1 - root)
    weights[:, 3], weights[:, 4] = eye[0] * (1 - root), eye[1] * (1 - root)
    weights[:, 1] = np.clip(1 - weights.sum(1), 0, None)
    weights /= weights.sum(1, keepdims=True)
    regressor = np.zeros((5, num))
    for j, joint in enumerate(JOINTS):
        nearest = np.argsort(np.sum((verts - joint) ** 2, 1))[:4]
        regressor[j, nearest] = 0.25
    lids = [np.exp(-np.sum((verts[:, :2] - c[:2]) ** 2, 1) / (2 * 0.01**2)) * (verts[:, 2] > 0.04) for c in EYES]
    layout = _layout()
    static_idx, static_bary = _embed(verts, faces, layout["static"])
    rows = [float(r) if r <= 39 else -float(r - 39) for r in range(79)]
    dynamic = [_embed(verts, faces, layout["jaw"] * [0.9, 1.0], yaw) for yaw in rows]
    mp_idx, mp_bary = _embed(verts, faces, layout["mp"])
    face_mask = np.nonzero((verts[:, 2] > 0) & (verts[:, 1] > -0.09))[0]
    return {
        "model.f": faces,
        "model.v_template": verts,
        "model.shapedirs": shapedirs.astype(np.float32),
        "model.posedirs": posedirs.astype(np.float32),
        "model.J_regressor": regressor,
        "model.kintree_table": PARENTS,
        "model.weights": weights,
        "lmk.static_lmk_faces_idx": static_idx,
        "lmk.static_lmk_bary_coords": static_bary,
        "lmk.dynamic_lmk_faces_idx": np.stack([d[0] for d in dynamic]),
        "lmk.dynamic_lmk_bary_coords": np.stack([d[1] for d in dynamic]).astype(np.float32),
        "lmk.full_lmk_faces_idx": np.concatenate([dynamic[0][0], static_idx])[None],
        "lmk.full_lmk_bary_coords": np.concatenate([dynamic[0][1], static_bary])[None].astype(np.float32),
        "mp.lmk_face_idx": mp_idx,
        "mp.lmk_b_coords": mp_bary,
        "l_eyelid": np.stack([np.zeros(num), -0.009 * lids[0], np.zeros(num)], 1),
        "r_eyelid": np.stack([np.zeros(num), -0.009 * lids[1], np.zeros(num)], 1),
        "face_mask": face_mask,
    }
