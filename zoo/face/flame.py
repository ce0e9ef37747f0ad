"""FLAME 2020 (Li et al. 2017, https://flame.is.tue.mpg.de) as TEASER uses it, loaded from the user's own files.

    shape (300) + expression (50) blend shapes -> joints (root, neck, jaw, 2 eyes) -> pose blend shapes
    -> linear blend skinning -> eyelid blend shapes (after skinning, as TEASER) -> landmarks by barycentric embedding:
       68 FAN points (17 pose-dependent contour points + 51 static), 68 "3D" points, 105 MediaPipe points,
       and the 203-point embedding when the face model has it (TEASER's training loss)

The numerics follow the official `src/FLAME/FLAME.py` / `lbs.py` (SMPL-X style `lbs`), quirks included: the
Rodrigues angle is `|r + 1e-8|`, and the contour row is chosen from `atan2(-R[2,0], ...)` of root x neck, *without*
the extra minus sign of the unused `lbs.find_dynamic_lmk_idx_and_bcoords`.

`FLAME.from_file(path)` reads the official `generic_model.pkl` + TEASER assets folder, or a FLAME-format safetensors
file (`zoo.face.flame_files`); nothing pickled is executed. All tables are non-persistent buffers: a tokenizer
that holds a FLAME never writes FLAME data into its own weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.face.flame_files import FLAME_SHAPE_COMPONENTS, read_face_model

__all__ = ["FLAME", "batch_rodrigues", "lbs", "vertices2landmarks"]

NECK_JOINT = 1
CONTOUR_ROWS_POSITIVE = 39  # rows 0..39: yaw 0..39 degrees; rows 40..78: yaw -1..-39 and beyond


def batch_rodrigues(rot_vecs: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """Axis-angle `[N, 3]` -> rotation matrices `[N, 3, 3]` (the official `1e-8` is added before the norm)."""
    angle = torch.norm(rot_vecs + epsilon, dim=1, keepdim=True)
    direction = rot_vecs / angle
    cos = torch.cos(angle)[:, :, None]
    sin = torch.sin(angle)[:, :, None]
    rx, ry, rz = torch.split(direction, 1, dim=1)
    zeros = torch.zeros_like(rx)
    skew = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)[None]
    return eye + sin * skew + (1 - cos) * torch.bmm(skew, skew)


def _rigid_transforms(rot_mats: torch.Tensor, joints: torch.Tensor, parents: list[int]) -> torch.Tensor:
    """Per-joint world transforms relative to the rest pose, `[B, J, 4, 4]` (`batch_rigid_transform`)."""
    joints = joints[..., None]  # [B, J, 3, 1]
    rel = joints.clone()
    rel[:, 1:] = rel[:, 1:] - joints[:, parents[1:]]
    local = torch.cat([F.pad(rot_mats, [0, 0, 0, 1]), F.pad(rel, [0, 0, 0, 1], value=1)], dim=3)
    chain = [local[:, 0]]
    for i in range(1, len(parents)):
        chain.append(torch.matmul(chain[parents[i]], local[:, i]))
    world = torch.stack(chain, dim=1)
    rest = F.pad(joints, [0, 0, 0, 1])
    return world - F.pad(torch.matmul(world, rest), [3, 0, 0, 0, 0, 0, 0, 0])


def lbs(betas: torch.Tensor, pose: torch.Tensor, v_template: torch.Tensor, shapedirs: torch.Tensor,
        posedirs: torch.Tensor, j_regressor: torch.Tensor, parents: list[int], weights: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: betas `[B, L]`, axis-angle pose `[B, 3J]` -> vertices `[B, V, 3]`."""
    batch = betas.shape[0]
    v_shaped = v_template[None] + torch.einsum("bl,mkl->bmk", betas, shapedirs)
    joints = torch.einsum("bik,ji->bjk", v_shaped, j_regressor)
    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).view(batch, -1, 3, 3)
    eye = torch.eye(3, dtype=betas.dtype, device=betas.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(batch, -1)
    v_posed = torch.matmul(pose_feature, posedirs).view(batch, -1, 3) + v_shaped
    transforms = _rigid_transforms(rot_mats, joints, parents)
    per_vertex = torch.matmul(weights[None].expand(batch, -1, -1), transforms.view(batch, len(parents), 16))
    per_vertex = per_vertex.view(batch, -1, 4, 4)
    homogeneous = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], dim=2)
    return torch.matmul(per_vertex, homogeneous[..., None])[:, :, :3, 0]


def vertices2landmarks(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                       bary: torch.Tensor) -> torch.Tensor:
    """Barycentric landmarks: `face_idx` `[B, L]`, `bary` `[B, L, 3]` -> `[B, L, 3]`."""
    batch, num_verts = vertices.shape[:2]
    corners = faces[face_idx.reshape(-1)].view(batch, -1, 3)
    corners = corners + torch.arange(batch, device=vertices.device).view(-1, 1, 1) * num_verts
    points = vertices.reshape(-1, 3)[corners].view(batch, -1, 3, 3)
    return torch.einsum("blfi,blf->bli", points, bary)


def _param(params: dict[str, Any], name: str, width: int, batch: int, like: torch.Tensor) -> torch.Tensor:
    """`params[name]` as `[B, width]` (zero-padded like the official forward; absent -> zeros)."""
    value = params.get(name)
    if value is None:
        return like.new_zeros(batch, width)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"FLAME parameter {name!r} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2 or value.shape[0] != batch:
        raise ValueError(f"FLAME parameter {name!r} must be [B={batch}, n], got {tuple(value.shape)}")
    if value.shape[1] > width:
        raise ValueError(f"FLAME parameter {name!r} has {value.shape[1]} values; this face model takes at most {width}")
    value = value.to(like.dtype)
    return value if value.shape[1] == width else F.pad(value, (0, width - value.shape[1]))


class FLAME(nn.Module):
    """FLAME forward pass (`forward(params) -> {"vertices", "landmarks_fan", "landmarks_fan_3d", "landmarks_mp"}`).

    Args:
        arrays: a FLAME-format face model (`zoo.face.flame_files`).
        n_shape, n_exp: shape and expression parameters the model takes (TEASER: 300, 50); the face model must have
            at least that many components.
        shape_components: how many of the `shapedirs` columns are shape (the rest are expression; 300 in FLAME).
    """

    def __init__(self, arrays: dict[str, np.ndarray], n_shape: int = 300, n_exp: int = 50,
                 shape_components: int = FLAME_SHAPE_COMPONENTS) -> None:
        super().__init__()
        dirs = np.asarray(arrays["model.shapedirs"])
        available_exp = dirs.shape[2] - shape_components
        if shape_components < n_shape or available_exp < n_exp:
            raise ValueError(
                f"the face model has {shape_components} shape and {available_exp} expression components; the encoder "
                f"predicts {n_shape} and {n_exp}"
            )
        self.n_shape, self.n_exp = n_shape, n_exp
        f32 = torch.float32

        def buffer(name: str, value: Any, dtype: torch.dtype = f32) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value)).to(dtype).contiguous(), persistent=False)

        buffer("faces", np.asarray(arrays["model.f"]).astype(np.int64), torch.long)
        buffer("v_template", arrays["model.v_template"])
        buffer("shapedirs", np.concatenate(
            [dirs[:, :, :n_shape], dirs[:, :, shape_components:shape_components + n_exp]], axis=2))
        posedirs = np.asarray(arrays["model.posedirs"])
        buffer("posedirs", posedirs.reshape(-1, posedirs.shape[-1]).T)
        buffer("j_regressor", arrays["model.J_regressor"])
        buffer("lbs_weights", arrays["model.weights"])
        parents = np.asarray(arrays["model.kintree_table"])[0].astype(np.int64)
        parents[0] = -1
        self.parents = [int(p) for p in parents]
        chain, joint = [], NECK_JOINT
        while joint != -1:
            chain.append(joint)
            joint = self.parents[joint]
        self.neck_chain = chain
        buffer("l_eyelid", arrays["l_eyelid"])
        buffer("r_eyelid", arrays["r_eyelid"])
        buffer("static_faces", arrays["lmk.static_lmk_faces_idx"], torch.long)
        buffer("static_bary", arrays["lmk.static_lmk_bary_coords"])
        buffer("dynamic_faces", arrays["lmk.dynamic_lmk_faces_idx"], torch.long)
        buffer("dynamic_bary", arrays["lmk.dynamic_lmk_bary_coords"])
        buffer("full_faces", arrays["lmk.full_lmk_faces_idx"], torch.long)
        buffer("full_bary", arrays["lmk.full_lmk_bary_coords"])
        buffer("mp_faces", np.asarray(arrays["mp.lmk_face_idx"]).astype(np.int64), torch.long)
        buffer("mp_bary", arrays["mp.lmk_b_coords"])
        self.has_203 = "lmk203.lmk_face_idx" in arrays and "lmk203.lmk_b_coords" in arrays
        if self.has_203:
            buffer("lmk203_faces", np.asarray(arrays["lmk203.lmk_face_idx"]).astype(np.int64), torch.long)
            buffer("lmk203_bary", arrays["lmk203.lmk_b_coords"])
        self.num_contour_rows = int(self.dynamic_faces.shape[0])

    @classmethod
    def from_file(cls, path: str | Path, assets: str | Path | None = None, n_shape: int = 300,
                  n_exp: int = 50) -> FLAME:
        """Read a face model (`zoo.face.flame_files.read_face_model`) and build its FLAME."""
        arrays, meta = read_face_model(path, assets)
        return cls(arrays, n_shape, n_exp, int(meta.get("shape_components", FLAME_SHAPE_COMPONENTS)))

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def contour_rows(self, full_pose: torch.Tensor) -> torch.Tensor:
        """Row of the dynamic contour tables for each sample, from the yaw of root x neck (`[B]` long)."""
        batch = full_pose.shape[0]
        axis_angles = full_pose.view(batch, -1, 3)[:, self.neck_chain]
        rots = batch_rodrigues(axis_angles.reshape(-1, 3)).view(batch, -1, 3, 3)
        rel = torch.eye(3, dtype=full_pose.dtype, device=full_pose.device)[None].expand(batch, -1, -1)
        for i in range(len(self.neck_chain)):
            rel = torch.bmm(rots[:, i], rel)
        sy = torch.sqrt(rel[:, 0, 0] * rel[:, 0, 0] + rel[:, 1, 0] * rel[:, 1, 0])
        yaw = torch.atan2(-rel[:, 2, 0], sy)
        deg = torch.round(torch.clamp(yaw * 180.0 / np.pi, max=CONTOUR_ROWS_POSITIVE)).long()
        negative = 39 - deg
        negative = torch.where(deg < -CONTOUR_ROWS_POSITIVE, torch.full_like(deg, 2 * CONTOUR_ROWS_POSITIVE), negative)
        return torch.where(deg < 0, negative, deg)

    def forward(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        """FLAME parameters -> mesh and landmarks.

        `params` holds `shape_params` [B, <=n_shape] and `expression_params` [B, <=n_exp] (zero-padded), and
        optionally `pose_params` [B, 3] (global rotation), `jaw_params` [B, 3], `eyelid_params` [B, 2],
        `eye_pose_params` [B, 6], `neck_pose_params` [B, 3] (absent: zeros); other keys (e.g. `cam`, `tokens`) are
        ignored. Returns `vertices` [B, V, 3], `landmarks_fan` [B, 68, 3] (pose-dependent contour),
        `landmarks_fan_3d` [B, 68, 3], `landmarks_mp` [B, 105, 3], and `landmarks_203` [B, 203, 3] when the face
        model has that embedding.
        """
        if not isinstance(params, dict):
            raise TypeError(f"FLAME takes a dict of parameters (e.g. Tokens.meta), got {type(params).__name__}")
        for name in ("shape_params", "expression_params"):
            if not isinstance(params.get(name), torch.Tensor):
                raise ValueError(f"FLAME parameters need {name!r} (a [B, n] tensor); got keys {sorted(params)}")
        like = self.v_template
        batch = params["shape_params"].shape[0]
        shape = _param(params, "shape_params", self.n_shape, batch, like)
        expression = _param(params, "expression_params", self.n_exp, batch, like)
        pose = _param(params, "pose_params", 3, batch, like)
        jaw = _param(params, "jaw_params", 3, batch, like)
        eyes = _param(params, "eye_pose_params", 6, batch, like)
        neck = _param(params, "neck_pose_params", 3, batch, like)
        betas = torch.cat([shape, expression], dim=1)
        full_pose = torch.cat([pose, neck, jaw, eyes], dim=1)
        vertices = lbs(betas, full_pose, self.v_template, self.shapedirs, self.posedirs, self.j_regressor,
                       self.parents, self.lbs_weights)
        eyelids = params.get("eyelid_params")
        if eyelids is not None:
            eyelids = _param(params, "eyelid_params", 2, batch, like)
            vertices = vertices + self.r_eyelid[None] * eyelids[:, 1:2, None]
            vertices = vertices + self.l_eyelid[None] * eyelids[:, 0:1, None]
        rows = self.contour_rows(full_pose)
        fan_faces = torch.cat([self.dynamic_faces[rows], self.static_faces[None].expand(batch, -1)], dim=1)
        fan_bary = torch.cat([self.dynamic_bary[rows], self.static_bary[None].expand(batch, -1, -1)], dim=1)
        out = {
            "vertices": vertices,
            "landmarks_fan": vertices2landmarks(vertices, self.faces, fan_faces, fan_bary),
            "landmarks_fan_3d": vertices2landmarks(vertices, self.faces, self.full_faces.expand(batch, -1),
                                                   self.full_bary.expand(batch, -1, -1)),
            "landmarks_mp": vertices2landmarks(vertices, self.faces, self.mp_faces[None].expand(batch, -1),
                                               self.mp_bary[None].expand(batch, -1, -1)),
        }
        if self.has_203:
            out["landmarks_203"] = vertices2landmarks(vertices, self.faces, self.lmk203_faces[None].expand(batch, -1),
                                                      self.lmk203_bary[None].expand(batch, -1, -1))
        return out
