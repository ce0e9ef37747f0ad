"""TEASER's renderer in pure torch: orthographic camera, z-buffer rasteriser, flat-grey Lambertian shading, and the
face-hull masking of the generator input. No PyTorch3D.

Conventions (official `src/renderer/renderer.py`, `util.py`, `utils/masking.py`, `datasets/base_dataset.py`):

* camera `cam = [s, tx, ty]`: FLAME point (x, y, z) -> `(s(x+tx), -s(y+ty), -s z)`, "screen" coordinates with x
  right and y down in [-1, 1]; pixel (row i, col j) has its centre at `((2j+1)/W - 1, (2i+1)/H - 1)`.
* only the face region is drawn: faces whose three vertices are all in the face mask, re-indexed (3408 of FLAME's
  9976 faces). The depth is `-s z + 10` (PyTorch3D's near plane is 0) and the nearest face (smallest depth) wins;
  a pixel is covered when all three barycentric coordinates are > 0 (PyTorch3D's rule with blur 0; no culling).
* attributes per face corner (grey albedo 180/255, area-weighted vertex normals of the un-projected mesh) are
  interpolated with the barycentric coordinates (not perspective-corrected; normals not re-normalised), empty pixels
  are 0; shading = mean over 5 directional lights of `clamp(n . l, 0, 1) * 1.7`.

Differentiable: the barycentric coordinates of the covered pixels are recomputed with autograd from the projected
vertices, so gradients reach the vertices (and camera) through interpolation and through the normals; coverage
itself is a step function (as PyTorch3D with blur 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.face.polyfill import hull_mask

__all__ = [
    "ALBEDO",
    "LIGHT_DIRECTIONS",
    "LIGHT_INTENSITY",
    "FaceRenderer",
    "Fragments",
    "directional_shading",
    "face_hull_mask",
    "interpolate",
    "mask_background",
    "orthographic_project",
    "rasterize",
    "subset_faces",
    "vertex_normals",
]

ALBEDO = 180.0 / 255.0
LIGHT_DIRECTIONS = ((-1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (-1.0, -1.0, 1.0), (1.0, -1.0, 1.0), (0.0, 0.0, 1.0))
LIGHT_INTENSITY = 1.7
DEPTH_OFFSET = 10.0
_AREA_EPS = 1e-8  # PyTorch3D's kEpsilon, added to the signed area as there


def orthographic_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """FLAME points `[B, N, 3]` and `cam` `[B, 3]` = (s, tx, ty) -> screen coordinates `[B, N, 3]` (x right, y
    down, z = -s z)."""
    cam = cam.reshape(-1, 1, 3)
    shifted = torch.cat([points[..., :2] + cam[..., 1:], points[..., 2:]], dim=-1)
    projected = cam[..., :1] * shifted
    return torch.cat([projected[..., :1], -projected[..., 1:]], dim=-1)


def subset_faces(faces: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The faces whose three vertices are all in `keep`, re-indexed into `sorted(unique(keep))`."""
    keep = torch.unique(keep.long())
    size = max(int(faces.max()) + 1, int(keep.max()) + 1)
    new_index = torch.full((size,), -1, dtype=torch.long, device=faces.device)
    new_index[keep.to(faces.device)] = torch.arange(keep.numel(), device=faces.device)
    mapped = new_index[faces.long()]
    return mapped[(mapped != -1).all(dim=1)]


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals `[B, V, 3]` (sum of the face cross products at each corner)."""
    batch, num_verts = vertices.shape[:2]
    corners = vertices[:, faces.long()]  # [B, F, 3, 3]
    v0, v1, v2 = corners.unbind(dim=2)
    normals = vertices.new_zeros(batch, num_verts, 3)
    for index, (a, b, c) in ((1, (v2, v1, v0)), (2, (v0, v2, v1)), (0, (v1, v0, v2))):
        normals = normals.index_add(1, faces[:, index].long(), torch.cross(a - b, c - b, dim=-1))
    return F.normalize(normals, eps=1e-6, dim=-1)


def directional_shading(normals: torch.Tensor, directions=LIGHT_DIRECTIONS,
                        intensity: float = LIGHT_INTENSITY) -> torch.Tensor:
    """`[B, N, 3]` normals -> `[B, N, 3]` RGB shading: mean over lights of `clamp(n . l_hat, 0, 1) * intensity`
    (the official `add_directionlight` with its 5 white lights)."""
    lights = F.normalize(torch.as_tensor(directions, dtype=normals.dtype, device=normals.device), dim=-1)
    dots = torch.clamp((normals[:, None] * lights[None, :, None]).sum(dim=-1), 0.0, 1.0)  # [B, L, N]
    return (dots[..., None] * intensity).expand(-1, -1, -1, 3).mean(dim=1)


class Fragments(NamedTuple):
    """Rasteriser output: `pix_to_face` `[B, H, W]` (-1 where empty), `bary` `[B, H, W, 3]` (0 where empty,
    differentiable), `depth` `[B, H, W]` (-1 where empty)."""

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


def _edge(px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor,
          by: torch.Tensor) -> torch.Tensor:
    """PyTorch3D's edge function of point p against the edge a -> b."""
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def _barycentric(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles `[..., 3, 3]` and pixel centres -> (barycentric `[..., 3]`, signed area `[...]`)."""
    (x0, y0), (x1, y1), (x2, y2) = (tri[..., k, 0:2].unbind(-1) for k in range(3))
    area = _edge(x2, y2, x0, y0, x1, y1) + _AREA_EPS
    w0 = _edge(px, py, x1, y1, x2, y2) / area
    w1 = _edge(px, py, x2, y2, x0, y0) / area
    w2 = _edge(px, py, x0, y0, x1, y1) / area
    return torch.stack([w0, w1, w2], dim=-1), area


def _pixel_range(low: torch.Tensor, high: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel indices whose centres can lie in [low, high] (one pixel of margin; the exact test comes later)."""
    first = torch.floor((low + 1) * size / 2 - 0.5).long() - 1
    last = torch.ceil((high + 1) * size / 2 - 0.5).long() + 1
    return first.clamp(0, size - 1), last.clamp(-1, size - 1)


_CANDIDATES_PER_CHUNK = 1 << 22  # (face, pixel) pairs tested at once; bounds memory for meshes covering the image


def _nearest_faces(tri: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Face index of the nearest covering face per pixel, `[B * H * W]` (F where empty), for screen triangles
    `[B, F, 3, 3]` (no autograd)."""
    batch, num_faces = tri.shape[:2]
    device = tri.device
    _, area = _barycentric(tri, tri.new_zeros(()), tri.new_zeros(()))
    usable = ((area - _AREA_EPS).abs() > _AREA_EPS) & (tri[..., 2].amax(dim=-1) >= 0)
    j0, j1 = _pixel_range(tri[..., 0].amin(-1), tri[..., 0].amax(-1), width)
    i0, i1 = _pixel_range(tri[..., 1].amin(-1), tri[..., 1].amax(-1), height)
    cols, rows = (j1 - j0 + 1).clamp(min=0).reshape(-1), (i1 - i0 + 1).clamp(min=0).reshape(-1)
    counts = torch.where(usable.reshape(-1), cols * rows, torch.zeros_like(cols))
    ends = torch.cumsum(counts, 0)
    total = batch * height * width
    best_depth = torch.full((total,), float("inf"), device=device)
    best_face = torch.full((total,), num_faces, dtype=torch.long, device=device)
    flat_tri, j0, i0 = tri.reshape(-1, 3, 3), j0.reshape(-1), i0.reshape(-1)
    start = 0
    while start < counts.numel():  # chunks of whole faces, in face order (earlier chunks win ties)
        limit = (ends[start - 1] if start else 0) + _CANDIDATES_PER_CHUNK
        stop = max(int(torch.searchsorted(ends, limit, right=True)), start + 1)
        chunk = counts[start:stop]
        owner = torch.repeat_interleave(torch.arange(start, stop, device=device), chunk)
        offset = torch.arange(owner.numel(), device=device) - torch.repeat_interleave(torch.cumsum(chunk, 0) - chunk,
                                                                                     chunk)
        span = cols[owner].clamp(min=1)
        col = j0[owner] + offset % span
        row = i0[owner] + torch.div(offset, span, rounding_mode="floor")
        cand = flat_tri[owner]
        bary, _ = _barycentric(cand, (2 * col + 1).float() / width - 1, (2 * row + 1).float() / height - 1)
        depth = (bary * cand[..., 2]).sum(-1)
        inside = (bary > 0).all(dim=-1) & (depth >= 0)
        owner, depth = owner[inside], depth[inside]
        pixel = (torch.div(owner, num_faces, rounding_mode="floor") * height + row[inside]) * width + col[inside]
        face = owner % num_faces
        chunk_depth = torch.full((total,), float("inf"), device=device).scatter_reduce(0, pixel, depth, "amin")
        winner = depth == chunk_depth[pixel]
        chunk_face = torch.full((total,), num_faces, dtype=torch.long, device=device).scatter_reduce(
            0, pixel[winner], face[winner], "amin")
        closer = chunk_depth < best_depth
        best_depth = torch.where(closer, chunk_depth, best_depth)
        best_face = torch.where(closer, chunk_face, best_face)
        start = stop
    return best_face


def rasterize(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> Fragments:
    """Nearest-face rasterisation of `screen` vertices `[B, V, 3]` (x, y in [-1, 1], x right, y down; z = depth,
    smaller is nearer) with `faces` `[F, 3]`.

    Candidate (face, pixel) pairs come from each face's bounding box; a pixel is covered by a face when its three
    barycentric coordinates are > 0 and the interpolated depth is >= 0 (faces of zero area or wholly behind 0 are
    skipped); the face of smallest depth wins, the lowest face index on ties.
    """
    batch = screen.shape[0]
    faces = faces.long().to(screen.device)
    num_faces = faces.shape[0]
    with torch.no_grad():
        best_face = _nearest_faces(screen.detach().float()[:, faces], height, width)
        covered = best_face < num_faces
        pix_to_face = torch.where(covered, best_face, torch.full_like(best_face, -1))
    # barycentric coordinates of the winners, with autograd through the projected vertices
    total = batch * height * width
    where = covered.nonzero().squeeze(1)
    image = torch.div(where, height * width, rounding_mode="floor")
    row = torch.div(where % (height * width), width, rounding_mode="floor")
    col = where % width
    tri = screen[image[:, None], faces[pix_to_face[where]]]  # [P, 3, 3]
    bary_win, _ = _barycentric(tri, (2 * col + 1).to(screen.dtype) / width - 1,
                               (2 * row + 1).to(screen.dtype) / height - 1)
    bary = screen.new_zeros(total, 3).index_put((where,), bary_win)
    depth = screen.new_full((total,), -1.0).index_put((where,), (bary_win * tri[..., 2]).sum(-1))
    return Fragments(pix_to_face.view(batch, height, width), bary.view(batch, height, width, 3),
                     depth.view(batch, height, width))


def interpolate(fragments: Fragments, corner_values: torch.Tensor) -> torch.Tensor:
    """Per-corner attributes `[B, F, 3, D]` -> image `[B, D, H, W]` (barycentric mix of the pixel's face, 0 where
    empty)."""
    batch, height, width = fragments.pix_to_face.shape
    index = fragments.pix_to_face.clamp(min=0).view(batch, -1)
    gathered = torch.gather(corner_values, 1, index[..., None, None].expand(-1, -1, 3, corner_values.shape[-1]))
    values = (fragments.bary.view(batch, -1, 3, 1) * gathered).sum(dim=2)
    values = values * (fragments.pix_to_face.view(batch, -1, 1) >= 0)
    return values.view(batch, height, width, -1).permute(0, 3, 1, 2)


class FaceRenderer(nn.Module):
    """Grey shaded render of the face region of a mesh (TEASER's `Renderer(render_full_head=False)`).

    Args:
        faces: the mesh faces `[F, 3]` (FLAME: `head_template.obj`'s, equal to the model's `f`).
        keep: vertex indices of the rendered region (FLAME: `FLAME_masks["face"]`).
        image_size: output size (224 for TEASER).
    """

    def __init__(self, faces: torch.Tensor, keep: torch.Tensor, image_size: int = 224) -> None:
        super().__init__()
        keep = torch.unique(torch.as_tensor(keep).long())
        self.register_buffer("keep", keep, persistent=False)
        self.register_buffer("faces", subset_faces(torch.as_tensor(faces).long(), keep), persistent=False)
        self.image_size = image_size

    def forward(self, vertices: torch.Tensor, cam: torch.Tensor) -> dict[str, torch.Tensor]:
        """FLAME vertices `[B, V, 3]` and `cam` `[B, 3]` -> `image` `[B, 3, S, S]` (shaded grey face, background 0),
        `mask` `[B, 1, S, S]` (covered pixels), `transformed_vertices` `[B, V, 3]` (screen coordinates)."""
        screen = orthographic_project(vertices, cam)
        region = vertices[:, self.keep]
        depth_screen = torch.cat([screen[:, self.keep, :2], screen[:, self.keep, 2:] + DEPTH_OFFSET], dim=-1)
        fragments = rasterize(depth_screen, self.faces, self.image_size, self.image_size)
        normals = vertex_normals(region, self.faces)[:, self.faces]  # [B, F, 3, 3]
        albedo = torch.full_like(normals, ALBEDO)
        pixels = interpolate(fragments, torch.cat([albedo, normals], dim=-1))
        batch, size = vertices.shape[0], self.image_size
        shading = directional_shading(pixels[:, 3:6].permute(0, 2, 3, 1).reshape(batch, -1, 3))
        shading = shading.reshape(batch, size, size, 3).permute(0, 3, 1, 2)
        mask = (fragments.pix_to_face >= 0).to(vertices.dtype)[:, None]
        return {"image": pixels[:, :3] * shading, "mask": mask, "transformed_vertices": screen}


def face_hull_mask(points: torch.Tensor, image_size: int = 224) -> torch.Tensor:
    """Points `[B, N, 2]` in pixels of the crop (x, y) -> `[B, 1, S, S]` float: 1 outside their convex hull, 0 on and
    inside it (`create_mask`; the official points are the 478 MediaPipe landmarks of the crop)."""
    if points.dim() != 3 or points.shape[-1] < 2:
        raise ValueError(f"hull points must be [B, N, 2] pixel coordinates, got {tuple(points.shape)}")
    masks = [hull_mask(p.detach().double().cpu().numpy(), image_size, image_size) for p in points]
    return torch.from_numpy(np.stack(masks)).to(device=points.device, dtype=torch.float32)[:, None]


def mask_background(image: torch.Tensor, hull: torch.Tensor, rendered: torch.Tensor | None = None,
                    radius: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's masked input (`masking_face`): the hull mask (1 = keep) eroded by a `2r+1` square, i.e. the
    face hole dilated by `radius` px, times `1 - rendered` (`rendered`: `1 - all(rendered_image == 0)`); returns
    (`image * mask`, mask)."""
    keep = 1 - F.max_pool2d(1 - hull, 2 * radius + 1, stride=1, padding=radius)
    if rendered is not None:
        keep = keep * (1 - rendered)
    return image * keep, keep
