"""TEASER's training (https://arxiv.org/abs/2502.10982; official `src/teaser_trainer.py`, `main/train.py`), working.

**Stage 1** (`stage: 1`, official `config_pretrain.yaml`): pose, shape and expression encoders from landmarks.

    100 * (FAN contour MSE + MediaPipe-105 MSE) + dense_weight * pose-dependent dense MSE
    + 1e-2 * mean(expression^2)  (+ shape / jaw regularisation, 0 in the official config)   [+ 10 * MICA: skipped]

**Stage 2** (`stage: 2`, official `config_train.yaml`): expression encoder, token encoder and generator; pose and
shape encoders frozen. The first path, with the official weights:

    100 * (FAN contour + MediaPipe-105) + 1000 * pose-dependent dense ("203-point") loss
    + 1e-3 * exp^2 + 1e-2 * jaw^2  (+ 100 * shape^2, inactive: the shape encoder is frozen)
    + 10 * L1 + 10 * perceptual + 5 * token cycle + region_weight * region L1     [+ 1 * emotion: skipped]

    token cycle = sum over the 4 tokens of MSE(token_encoder(generated), tokens)
    region L1   = mean |(y - x) * m|, m = mouth box (+50 %) + eye boxes (+20 %) from the 68 points

and the cycle path (SMIRK's): expressions augmented four ways (`zoo.face.teaser.cycle`), rendered, generated from
the detached tokens and re-encoded; `1 * exp + 10 * jaw + 1 * token0 + 10 * eyelid (+ 1 * shape when the generator
learns)` MSEs to the augmented parameters, weight `cycle_weight`.

How the official alternation maps onto the engine's one optimiser step per batch. The official loop makes two
optimiser steps per batch: the first path (encoders + generator), then the cycle path, which on even batches trains
the generator (geometry encoders frozen, generator gradients clipped to norm 0.1) and on odd batches the encoders
(generator frozen, its output detached). Here each of those is one engine step, in the order

    step % 4 == 0: first path   1: cycle, generator learns   2: first path   3: cycle, encoders learn

(each step takes a fresh batch; the cycle path re-encodes its batch without gradient to get the parameters it
augments, where the official one reuses the first path's). Encoders and generator share one Adam, in parameter
groups with the official settings: encoders at `encoder_lr_scale` (0.25) x the recipe's rate with Adam's default
betas, the generator at the rate and betas of `optim.gen` (official 1e-3, (0.5, 0.999)); see
`zoo.train.optim.build_optimizer`. `max_steps` counts engine steps: twice the official iterations.

What the official code leaves broken and is fixed here: the 203 dense landmarks are computed (the face model's
barycentric embedding), the dense loss works for any batch size (a mask, not a loop with batch 16), the region-loss
weight is a setting (`region_weight`; missing from the official YAML), and stage 1 does not need a dense weight.
Landmark targets come from the dataset (`zoo.face.data`: MediaPipe and / or dlib detections, precomputed files);
faces without MediaPipe or 68 points skip those terms (`mp_valid`, `fan_valid`).
Optional terms whose networks zoo does not have (EMOCA emotion features, MICA shape) are skipped with a logged
note when their weight is > 0. Frozen encoders run in eval mode (the official code leaves their BatchNorm in train
mode, so its statistics drift while its weights stay). The cycle path calls the tokenizer's sub-modules directly:
it is written for one process (CPU or one GPU).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.face.render import orthographic_project
from zoo.face.teaser.cycle import augment_expressions
from zoo.face.teaser.landmark_loss import contour_loss, dense_landmark_loss, dense_subset_masks, masked_mse
from zoo.train.objectives.base import Objective, split_batch
from zoo.train.objectives.registry import register_objective

__all__ = ["TeaserObjective"]

log = logging.getLogger(__name__)

ENCODERS = ("pose_encoder", "shape_encoder", "expression_encoder", "token_encoder")
GEOMETRY_ENCODERS = ("pose_encoder", "shape_encoder", "expression_encoder")
PHASES = ("first", "cycle_generator", "first", "cycle_encoder")
BANK_SIZE = 512


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


@register_objective("teaser")
class TeaserObjective(Objective):
    """TEASER stage 1 / stage 2 (see the module docstring; defaults are the official stage-2 weights).

    Args:
        stage: 1 (geometry encoders from landmarks) or 2 (expression + tokens + generator).
        landmark_weight: FAN contour and MediaPipe-105 MSEs (100).
        dense_landmark_weight: the pose-dependent dense ("203-point") loss (1000; the official stage 1 has none).
        yaw_threshold: |yaw| (rad) beyond which the dense loss uses the left / right subset (0.05).
        expression_regularization, shape_regularization, jaw_regularization: mean squares of the parameters
            (official stage 2: 1e-3, 100, 1e-2; stage 1: 1e-2, 0, 0). Each counts only when its encoder learns.
        l1_weight, perceptual_weight, token_cycle_weight, region_weight: stage-2 photometric terms (10, 10, 5, 10;
            the official YAML has no region weight, so this default is ours).
        perceptual_backbone, perceptual_weights: `zoo.losses.FeaturePerceptualLoss` ("vgg16" official with a local
            torchvision weights file; "efficientnet_lite0" offline).
        cycle_weight: the cycle path (1; 0 turns it off and every step is a first-path step).
        cycle_repeats: Ke, augmented versions per sample (1).
        cycle_generator_clip: gradient-norm clip of the generator in the cycle path's generator steps (0.1).
        expression_templates: a `.npy` `[N, E]` of expression templates for the cycle path (FaMoS for FLAME); default
            the face model's `templates.expression`, else a bank of recent encoder predictions (logged).
        emotion_weight, mica_weight: optional terms (official stage 2: emotion 1; stage 1: MICA 10). zoo has neither
            network: a weight > 0 logs a note and the term is skipped.
        encoder_lr_scale, encoder_betas: the encoders' Adam group (0.25 x lr, (0.9, 0.999)).
        optimize_pose, optimize_shape, optimize_expression, optimize_token: which encoders learn (None: the stage's
            official choice: stage 1 pose + shape + expression, stage 2 expression + token).
    """

    def __init__(
        self,
        stage: int = 2,
        landmark_weight: float = 100.0,
        dense_landmark_weight: float = 1000.0,
        yaw_threshold: float = 0.05,
        expression_regularization: float = 1e-3,
        shape_regularization: float = 100.0,
        jaw_regularization: float = 1e-2,
        l1_weight: float = 10.0,
        perceptual_weight: float = 10.0,
        perceptual_backbone: str = "vgg16",
        perceptual_weights: str | None = None,
        token_cycle_weight: float = 5.0,
        region_weight: float = 10.0,
        cycle_weight: float = 1.0,
        cycle_repeats: int = 1,
        cycle_generator_clip: float | None = 0.1,
        expression_templates: str | None = None,
        emotion_weight: float = 1.0,
        mica_weight: float = 0.0,
        encoder_lr_scale: float = 0.25,
        encoder_betas: tuple[float, float] | list[float] = (0.9, 0.999),
        optimize_pose: bool | None = None,
        optimize_shape: bool | None = None,
        optimize_expression: bool | None = None,
        optimize_token: bool | None = None,
    ) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (geometry encoders) or 2 (expression, tokens, generator), got {stage!r}")
        if int(cycle_repeats) < 1:
            raise ValueError(f"cycle_repeats must be >= 1, got {cycle_repeats}")
        self.stage = stage
        self.weights = {
            "landmark": float(landmark_weight), "dense": float(dense_landmark_weight),
            "expression_regularization": float(expression_regularization),
            "shape_regularization": float(shape_regularization), "jaw_regularization": float(jaw_regularization),
            "l1": float(l1_weight), "perceptual": float(perceptual_weight), "token_cycle": float(token_cycle_weight),
            "region": float(region_weight), "cycle": float(cycle_weight) if stage == 2 else 0.0,
        }
        self.yaw_threshold = float(yaw_threshold)
        self.perceptual_args = {"backbone": perceptual_backbone, "weights": perceptual_weights}
        self.cycle_repeats = int(cycle_repeats)
        self.cycle_generator_clip = None if cycle_generator_clip is None else float(cycle_generator_clip)
        self.template_file = expression_templates
        self.encoder_group = {"lr_scale": float(encoder_lr_scale), "betas": tuple(float(b) for b in encoder_betas)}
        defaults = {1: {"pose": True, "shape": True, "expression": True, "token": False},
                    2: {"pose": False, "shape": False, "expression": True, "token": True}}[stage]
        chosen = {"pose": optimize_pose, "shape": optimize_shape, "expression": optimize_expression,
                  "token": optimize_token}
        self.optimize = {k: defaults[k] if v is None else bool(v) for k, v in chosen.items()}
        self.notes: dict[str, str] = {}
        for name, weight, what in (("emotion_loss", emotion_weight, "EMOCA's emotion ResNet-50 features"),
                                   ("mica_loss", mica_weight, "MICA's shape prediction (ArcFace + mapping network)")):
            if float(weight) > 0:
                self.notes[name] = (f"{name} (weight {float(weight):g}) is skipped: it needs {what}, a licensed "
                                    "network zoo does not load; the other terms train as usual")
        self.perceptual: nn.Module | None = None
        # face-model tables, as non-persistent buffers so that they follow the objective to the training device
        self.register_buffer("_masks", None, persistent=False)
        self.register_buffer("_templates", None, persistent=False)
        self._bank: torch.Tensor | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module) -> None:
        from zoo.face.teaser import Teaser

        if not isinstance(model, Teaser):
            raise TypeError(f"the teaser objective trains zoo.face.teaser.Teaser models, got {type(model).__name__}")
        face = model.load_face_model()
        self._check_face_model(face)
        encoder = model.encoder
        trained = [f"{name}_encoder" for name, on in self.optimize.items() if on]
        if not trained and self.stage == 1:
            raise ValueError("stage 1 trains at least one geometry encoder (optimize_pose/shape/expression)")
        for name in ENCODERS:
            module = getattr(encoder, name)
            module.requires_grad_(name in trained)
            for param in module.parameters():
                param.zoo_optim = dict(self.encoder_group)
        model.generator.requires_grad_(self.stage == 2)
        if model.quantizer is not None:
            model.quantizer.requires_grad_(self.stage == 2 and self.optimize["token"])
            for param in model.quantizer.down.parameters():
                param.zoo_optim = dict(self.encoder_group)
        self.frozen_encoders = [n for n in ENCODERS if n not in trained]
        if self.stage == 2 and (self.weights["perceptual"] > 0):
            from zoo.losses.feature_perceptual import FeaturePerceptualLoss

            self.perceptual = FeaturePerceptualLoss(**self.perceptual_args)
        self._templates = self._load_templates(face, model.n_exp)
        for note in self.notes.values():
            log.warning("teaser objective: %s", note)

    def _check_face_model(self, face: nn.Module) -> None:
        dense_source = face.meta.get("dense_landmarks", "file")
        if self.weights["dense"] > 0:
            if not face.flame.has_203 or face.dense_front is None:
                raise ValueError(
                    f"dense_landmark_weight > 0 needs a face model with a dense landmark embedding and its front/left/"
                    f"right subsets (lmk203.*; FLAME: TEASER's 203_landmark_embeding_new.npz in the assets folder); "
                    f"{face.source} has none. Set objective.kwargs.dense_landmark_weight=0 or use another face model")
            num = int(face.flame.lmk203_faces.shape[0])
            self._masks = dense_subset_masks(num, face.dense_front, face.dense_left, face.dense_right)
        self.dense_source = dense_source
        self.mp_indices = None if face.mp_indices is None else face.mp_indices.cpu()

    def _load_templates(self, face: nn.Module, n_exp: int) -> torch.Tensor | None:
        if self.weights["cycle"] <= 0:
            return None
        if self.template_file is not None:
            import numpy as np

            templates = torch.from_numpy(np.load(self.template_file, allow_pickle=False)).float()
            source = self.template_file
        elif face.expression_templates is not None:
            templates, source = face.expression_templates.float(), f"the face model ({face.source})"
        else:
            self.notes["expression_templates"] = (
                "the face model has no expression templates (templates.expression; FLAME's FaMoS templates can be "
                "given as objective.kwargs.expression_templates=<.npy [N, 50]>): the cycle path's template group "
                f"draws from a bank of the last {BANK_SIZE} expressions the encoder predicted")
            return None
        if templates.dim() != 2 or templates.shape[1] > n_exp:
            raise ValueError(f"expression templates from {source} must be [N, <= {n_exp}], got "
                             f"{tuple(templates.shape)}")
        return templates

    # ------------------------------------------------------------------ steps
    def phase(self, step: int) -> str:
        """Which pass engine step `step` runs (see the module docstring)."""
        if self.stage == 1 or self.weights["cycle"] <= 0:
            return "first"
        return PHASES[step % 4]

    def _set_modes(self, raw: nn.Module, frozen: tuple[str, ...] = ()) -> None:
        raw.train()
        for name in tuple(self.frozen_encoders) + frozen:
            getattr(raw.encoder, name).eval()
        if self.stage == 1:
            raw.generator.eval()

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, extra = split_batch(batch)
        raw = _unwrap(model)
        phase = self.phase(step)
        if phase == "first":
            return self._first_path(model, raw, x, extra)
        return self._cycle_path(raw, x, extra, train_generator=phase == "cycle_generator")

    # ------------------------------------------------------------------ first path
    def _landmark_terms(self, raw: nn.Module, params: dict, geometry: dict, extra: dict) -> dict[str, torch.Tensor]:
        cam = params["cam"]
        terms = {}
        fan = orthographic_project(geometry["landmarks_fan"], cam)[..., :2]
        terms["landmark_loss_fan"] = contour_loss(fan, extra["landmarks_fan"], extra["fan_valid"])
        mp = orthographic_project(geometry["landmarks_mp"], cam)[..., :2]
        target_mp = extra["landmarks_mp"]
        if self.mp_indices is not None and target_mp.shape[1] != mp.shape[1]:
            target_mp = target_mp[:, self.mp_indices.to(target_mp.device)]
        if target_mp.shape[1] != mp.shape[1]:
            raise ValueError(f"the batch has {target_mp.shape[1]} MediaPipe points; the face model embeds "
                             f"{mp.shape[1]} and names no detector indices (mp.landmark_indices)")
        mp_valid = extra.get("mp_valid")  # False for faces without MediaPipe points (a dlib-only corpus)
        terms["landmark_loss_mp"] = masked_mse(mp, target_mp, mp_valid)
        if self.weights["dense"] > 0:
            dense = orthographic_project(geometry["landmarks_203"], cam)[..., :2]
            if self.dense_source == "mediapipe":
                face = raw.load_face_model()
                target, valid = extra["landmarks_mp"][:, face.dense_indices], mp_valid
            else:
                if "landmarks_203" not in extra:
                    raise ValueError("the dense landmark loss of this face model needs 203-point targets: a dataset "
                                     "with dense='file' and lmk203 arrays in its landmark files")
                target, valid = extra["landmarks_203"], extra.get("dense_valid")
            terms["landmark_loss_203"] = dense_landmark_loss(dense, target, params["pose_params"][:, 1], self._masks,
                                                             valid, self.yaw_threshold)
        return terms

    def _first_path(self, model: nn.Module, raw: nn.Module, x: torch.Tensor, extra: dict
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._set_modes(raw)
        out = model(x, hull_points=extra.get("hull_points"), generate=self.stage == 2)
        params, geometry = out.extras["params"], out.extras["flame"]
        terms = self._landmark_terms(raw, params, geometry, extra)
        terms["expression_regularization"] = params["expression_params"].pow(2).mean()
        terms["shape_regularization"] = params["shape_params"].pow(2).mean()
        terms["jaw_regularization"] = params["jaw_params"].pow(2).mean()
        w = self.weights
        loss = w["landmark"] * (terms["landmark_loss_fan"] + terms["landmark_loss_mp"])
        if "landmark_loss_203" in terms:
            loss = loss + w["dense"] * terms["landmark_loss_203"]
        if self.optimize["shape"]:
            loss = loss + w["shape_regularization"] * terms["shape_regularization"]
        if self.optimize["expression"]:
            loss = loss + w["expression_regularization"] * terms["expression_regularization"] \
                + w["jaw_regularization"] * terms["jaw_regularization"]
        if self.stage == 2:
            y = out.reconstruction
            terms["reconstruction_loss"] = (y - x).abs().mean()
            mask = extra.get("region_mask")
            if mask is not None and w["region"] > 0:
                mask = mask.to(y.dtype)
                terms["region_reconstruction_loss"] = (y * mask - x * mask).abs().mean()
                loss = loss + w["region"] * terms["region_reconstruction_loss"]
            if self.perceptual is not None:
                terms["perceptual_loss"] = self.perceptual(y, x)
                loss = loss + w["perceptual"] * terms["perceptual_loss"]
            if w["token_cycle"] > 0:
                again = raw.encoder.token_encoder(y)
                tokens = params["tokens"]
                per_token = [F.mse_loss(again[:, s], tokens[:, s]) for s in range(tokens.shape[1])]
                terms["token_cycle_loss"] = torch.stack(per_token).sum()
                loss = loss + w["token_cycle"] * terms["token_cycle_loss"]
            loss = loss + w["l1"] * terms["reconstruction_loss"]
        self._remember(params["expression_params"])
        for name, value in out.stats.items():
            terms[f"fsq_{name}"] = value.detach().float().reshape(())
        return loss, {k: v.detach().float() for k, v in terms.items()}

    # ------------------------------------------------------------------ cycle path
    def _remember(self, expressions: torch.Tensor) -> None:
        if self._templates is not None or self.weights["cycle"] <= 0:
            return
        rows = expressions.detach().float()
        self._bank = rows if self._bank is None else torch.cat([self._bank, rows])[-BANK_SIZE:]

    def _template_table(self, params: dict) -> torch.Tensor:
        if self._templates is not None:
            return self._templates
        if self._bank is None:
            return params["expression_params"].detach().float()
        return self._bank

    def _cycle_path(self, raw: nn.Module, x: torch.Tensor, extra: dict, train_generator: bool
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        face = raw.load_face_model()
        ke = self.cycle_repeats
        self._set_modes(raw)
        with torch.no_grad():  # the parameters the cycle starts from (official: the first path's, detached)
            source = raw.encoder(x)
            tokens = raw.quantizer(source["tokens"])[0] if raw.quantizer is not None else source["tokens"]
            self._remember(source["expression_params"])
            feats = augment_expressions(source, ke, self._template_table(source))
            geometry = face.flame(feats)
            drawn = face.renderer(geometry["vertices"], feats["cam"])
            hull = extra.get("hull_points")
            masked, _ = raw.masked_input(x.repeat(ke, 1, 1, 1), drawn["image"],
                                         None if hull is None else hull.repeat(ke, 1, 1), drawn["transformed_vertices"])
            generator_input = torch.cat([drawn["image"], masked], 1)
            tokens = tokens.repeat(ke, 1, 1)
        if train_generator:  # official even batch: geometry encoders frozen, the generator learns
            self._set_modes(raw, frozen=GEOMETRY_ENCODERS)
            generated = raw.generator(generator_input, tokens)
            frozen = [p for p in raw.encoder.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                again = raw.encoder(generated)
            finally:
                for p in frozen:
                    p.requires_grad_(True)
        else:  # official odd batch: generator frozen (eval mode, output detached), the encoders learn
            raw.generator.eval()
            with torch.no_grad():
                generated = raw.generator(generator_input, tokens)
            again = raw.encoder(generated)
        terms = {
            "cycle_expression": F.mse_loss(again["expression_params"], feats["expression_params"]),
            "cycle_jaw": F.mse_loss(again["jaw_params"], feats["jaw_params"]),
            "cycle_token0": F.mse_loss(again["tokens"][:, 0], feats["tokens"][:, 0]),
            "cycle_eyelid": F.mse_loss(again["eyelid_params"], feats["eyelid_params"]),
        }
        cycle = terms["cycle_expression"] + 10 * terms["cycle_jaw"] + terms["cycle_token0"] \
            + 10 * terms["cycle_eyelid"]
        if train_generator:
            terms["cycle_shape"] = F.mse_loss(again["shape_params"], feats["shape_params"])
            cycle = cycle + terms["cycle_shape"]
        terms["cycle_loss"] = cycle
        loss = self.weights["cycle"] * cycle
        if train_generator and self.cycle_generator_clip is not None:
            # official clip_grad_norm_(generator, 0.1) before its step: the same scaling of the whole gradient
            params = [p for p in raw.generator.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
            scale = torch.clamp(self.cycle_generator_clip / (norm + 1e-6), max=1.0)
            terms["cycle_generator_grad_norm"] = norm
            loss = loss * scale.detach()
        self._set_modes(raw)
        return loss, {k: v.detach().float() for k, v in terms.items()}
