"""TEASER's landmark losses on projected face-model landmarks (official `TeaserTrainer.step1`), for any batch size.

All coordinates are the crop's [-1, 1] screen coordinates (x right, y down) that `render.orthographic_project` gives
and the datasets use (`pixel / 224 * 2 - 1`).

* FAN contour: MSE over the 17 jaw points of the 68, samples with valid 68-point targets only;
* MediaPipe: MSE over the 105 embedded points (samples with MediaPipe targets only);
* pose-dependent dense loss (TEASER's 203-point loss): per sample, the MSE over the subset the predicted yaw
  selects (`pose_params[:, 1] < -0.05` -> the "left" subset, `> 0.05` -> "right", else "front"), averaged over the
  samples. The official code builds it in a Python loop with the batch size fixed at 16 and never computes the
  203 points themselves; here the face model's barycentric embedding gives them (`FLAME(...)["landmarks_203"]`)
  and the subsets are boolean masks, so it is one vectorised expression for any batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["contour_loss", "dense_landmark_loss", "dense_subset_masks", "masked_mse", "select_dense_subsets"]

YAW_THRESHOLD = 0.05  # rad, official


def contour_loss(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MSE over the first 17 (jaw) points of 68-point sets `[B, 68, 2]`, rows where `valid` `[B]`; 0 if none."""
    valid = valid.bool()
    if not bool(valid.any()):
        return predicted.new_zeros(())
    return F.mse_loss(predicted[valid, :17], target[valid, :17].to(predicted.dtype))


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of point sets `[B, K, 2]` over the rows where `valid` `[B]` (default all); 0 if none."""
    if valid is None:
        return F.mse_loss(predicted, target.to(predicted.dtype))
    valid = valid.bool()
    if not bool(valid.any()):
        return predicted.new_zeros(())
    return F.mse_loss(predicted[valid], target[valid].to(predicted.dtype))


def dense_subset_masks(num_points: int, front: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`[3, K]` boolean masks of the front, left and right index subsets."""
    masks = torch.zeros(3, num_points, dtype=torch.bool, device=front.device)
    for row, index in enumerate((front, left, right)):
        if index.numel() and (index.min() < 0 or index.max() >= num_points):
            raise ValueError(f"dense landmark subset indices must lie in [0, {num_points})")
        masks[row, index.long()] = True
    return masks


def select_dense_subsets(yaw: torch.Tensor, masks: torch.Tensor, threshold: float = YAW_THRESHOLD) -> torch.Tensor:
    """Per sample `[B, K]`: the left subset when yaw < -threshold, right when yaw > threshold, else front."""
    choice = torch.where(yaw < -threshold, 1, torch.where(yaw > threshold, 2, 0))
    return masks[choice]


def dense_landmark_loss(predicted: torch.Tensor, target: torch.Tensor, yaw: torch.Tensor, masks: torch.Tensor,
                        valid: torch.Tensor | None = None, threshold: float = YAW_THRESHOLD) -> torch.Tensor:
    """TEASER's pose-dependent landmark loss: mean over valid samples of the MSE over the yaw-selected subset.

    Args:
        predicted, target: `[B, K, 2]`.
        yaw: predicted yaw `[B]` (`pose_params[:, 1]`, detached or not: only its sign pattern is used).
        masks: `[3, K]` front / left / right subsets (`dense_subset_masks`).
        valid: `[B]` rows with targets (default all).
    """
    chosen = select_dense_subsets(yaw.detach(), masks, threshold).to(predicted.dtype)  # [B, K]
    squared = (predicted - target.to(predicted.dtype)).pow(2).sum(-1)  # [B, K]
    per_sample = (squared * chosen).sum(1) / (2 * chosen.sum(1).clamp(min=1))
    if valid is None:
        return per_sample.mean()
    valid = valid.bool()
    return per_sample[valid].mean() if bool(valid.any()) else predicted.new_zeros(())
