"""TEASER (Liu et al., ICLR 2025, https://arxiv.org/abs/2502.10982): a face tokenizer = FLAME geometry + four
continuous multi-scale appearance tokens, decoded by a token-conditioned neural renderer.

    crop [B, 3, 224, 224] in [0, 1] --TeaserEncoder--> pose, cam, shape (300), expression (50), eyelids, jaw
                                                        + tokens [B, 4, T]
    decode: FLAME(params) -> grey render of the face region (orthographic, 5 lights) -> background image with the
            dilated face hull and the rendered region cut out -> TeaserGenerator(cat[render, masked], tokens)

`Tokens`: ids `[B, 4]` are the token *slots* (0..3, see `zoo.face.teaser.slots`), the values are continuous and
live in `meta` under the official output names: `pose_params` [B, 3], `cam` [B, 3], `shape_params` [B, 300],
`expression_params` [B, 50], `eyelid_params` [B, 2], `jaw_params` [B, 3], `tokens` [B, 4, T] (batch-major,
`[:, 0]` the coarsest; the official layout is (4, B, T)), and optionally `hull_points` [B, N, 2] (crop pixels of
the detector landmarks whose hull marks the face to cut out, MediaPipe's 478 officially).

The face model (FLAME or a FLAME-format file) comes from the user's files and is loaded on first use
(`zoo.face.teaser.face`); encoding and `generate` never need it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.api import Codebook, FaceTokenizer, ForwardOutput, Tokens
from zoo.checks import check_image
from zoo.face.render import face_hull_mask, mask_background, orthographic_project
from zoo.face.teaser.encoder import TeaserEncoder
from zoo.face.teaser.face import FaceModel, load_face_model
from zoo.face.teaser.generator import TeaserGenerator
from zoo.face.teaser.quant import TokenQuantizer
from zoo.face.teaser.slots import NUM_SLOTS, ScaleSlots
from zoo.precision import full_precision, to_fp32
from zoo.registry import register_family

__all__ = ["GEOMETRY_KEYS", "Teaser"]

GEOMETRY_KEYS = ("pose_params", "cam", "shape_params", "expression_params", "eyelid_params", "jaw_params")
IMAGE_SIZE = 224


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run `module` in eval mode (BatchNorm on its running statistics, nothing updated) and restore its modes."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


@register_family("teaser")
class Teaser(FaceTokenizer):
    """TEASER face tokenizer: `[B, 3, 224, 224]` crops in [0, 1] -> FLAME parameters + 4 continuous tokens.

    Args:
        n_shape, n_exp: FLAME shape / expression parameters predicted (300, 50).
        backbone_multiplier: channel multiplier of the four MobileNetV3 backbones (1.0 in the release; timm's
            `tf_mobilenetv3_{small,large}_minimal_100` at 1.0).
        token_dim: width T of each appearance token (256).
        init_features: generator base width f (32; U-Net f..16f, TokenDecoder 8f..f).
        res_blocks: ResNet blocks at the generator bottleneck (5).
        face_model: where FLAME comes from: a FLAME-format `.safetensors`, `generic_model.pkl`, TEASER's `assets/`
            folder, `"stand-in"` (a procedural ellipsoid for tests), or None for `$ZOO_FLAME` /
            `$ZOO_HOME/flame/` (see `zoo.face.teaser.face`). Not part of the weights; loaded on first use.
        face_model_assets: TEASER's `assets/` folder when `face_model` is a `.pkl` stored elsewhere.
        mask_dilation: radius in pixels by which the face hole of the background image is dilated (10).
        fsq_levels: None for TEASER's continuous tokens (ids name the 4 slots, `zoo.face.teaser.slots`); FSQ levels
            (e.g. [8, 5, 5, 5]) for discrete appearance tokens (`teaser-fsq`, `zoo.face.teaser.quant`): each token is
            projected to `fsq_codes_per_token` FSQ codes whose ids are `Tokens.ids`.
        fsq_codes_per_token: ids per appearance token with FSQ (G; `Tokens.ids` is `[B, 4 G]`).
    """

    def __init__(
        self,
        n_shape: int = 300,
        n_exp: int = 50,
        backbone_multiplier: float = 1.0,
        token_dim: int = 256,
        init_features: int = 32,
        res_blocks: int = 5,
        face_model: str | None = None,
        face_model_assets: str | None = None,
        mask_dilation: int = 10,
        fsq_levels: list[int] | None = None,
        fsq_codes_per_token: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (("n_shape", n_shape), ("n_exp", n_exp), ("token_dim", token_dim),
                            ("init_features", init_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(res_blocks, int) or res_blocks < 0:
            raise ValueError(f"res_blocks must be an integer >= 0, got {res_blocks!r}")
        if not 0 < float(backbone_multiplier) <= 4:
            raise ValueError(f"backbone_multiplier must be in (0, 4], got {backbone_multiplier!r}")
        self.image_size = IMAGE_SIZE
        self.n_shape, self.n_exp, self.token_dim = n_shape, n_exp, token_dim
        self.face_model_spec = None if face_model is None else str(face_model)
        self.face_model_assets = None if face_model_assets is None else str(face_model_assets)
        self.mask_dilation = int(mask_dilation)
        self.encoder = TeaserEncoder(n_shape, n_exp, float(backbone_multiplier), token_dim)
        self.generator = TeaserGenerator(6, 3, init_features, res_blocks, token_dim)
        self.quantizer = None if fsq_levels is None else TokenQuantizer(token_dim, list(fsq_levels),
                                                                        fsq_codes_per_token)
        self.face: FaceModel | None = None  # loaded on first use

    # ------------------------------------------------------------------ face model
    @property
    def is_discrete(self) -> bool:
        """True for the FSQ variants (ids are codes); False for TEASER's continuous tokens (ids name slots)."""
        return self.quantizer is not None

    @property
    def codebooks(self) -> list[Codebook]:
        if self.quantizer is not None:
            return [Codebook(q, f"token{s} (FSQ {q.levels})") for s, q in enumerate(self.quantizer.quantizers)]
        return [Codebook(ScaleSlots(self.token_dim), "scale-slots (continuous values in meta['tokens'])")]

    def load_face_model(self) -> FaceModel:
        """The FLAME + renderer this tokenizer draws with (loaded once, then kept on the model's device). Loaded
        outside inference mode, so that a model first used under `torch.inference_mode()` can still be trained."""
        with torch.inference_mode(False):
            if self.face is None:
                self.face = load_face_model(self.face_model_spec, self.face_model_assets, self.n_shape, self.n_exp,
                                            self.image_size)
            if self.face.flame.v_template.device != self.device:
                self.face.to(self.device)
        return self.face

    def flame(self, params: dict[str, Any] | Tokens) -> dict[str, torch.Tensor]:
        """FLAME on a dict of parameters (or a `Tokens`' meta; extra keys ignored, missing eyelids = zeros) ->
        `vertices`, `landmarks_fan`, `landmarks_fan_3d`, `landmarks_mp` (metres, FLAME frame)."""
        params = self._geometry(params) if isinstance(params, Tokens) else params
        return self.load_face_model().flame(params)

    def render(self, params: dict[str, Any] | Tokens) -> dict[str, torch.Tensor]:
        """Shaded grey geometry of `params` (a `Tokens` or a dict with the FLAME parameters and `cam`): `image`
        [B, 3, 224, 224] (background 0), `mask` [B, 1, 224, 224] (covered pixels), and screen coordinates
        (x right, y down, [-1, 1]) `transformed_vertices`, `landmarks_fan`, `landmarks_mp` [B, N, 2]."""
        params = self._geometry(params) if isinstance(params, Tokens) else params
        if not isinstance(params.get("cam"), torch.Tensor):
            raise ValueError(f"render needs 'cam' [B, 3] = (scale, tx, ty) among the parameters; got {sorted(params)}")
        face = self.load_face_model()
        with full_precision(self.device):  # geometry and rasterisation decide pixels: fp32 under reduced precision
            params = to_fp32(params)
            geometry = face.flame(params)
            cam = params["cam"].to(geometry["vertices"].dtype)
            out = face.renderer(geometry["vertices"], cam)
            for key in ("landmarks_fan", "landmarks_mp"):
                out[key] = orthographic_project(geometry[key], cam)[..., :2]
        return out

    # ------------------------------------------------------------------ tokens
    def _geometry(self, tokens: Tokens) -> dict[str, torch.Tensor]:
        """Checked meta of a TEASER `Tokens` (the parameters and `tokens`), on the model's device and dtype. With FSQ
        the appearance tokens come from the ids (their meta copy is ignored)."""
        self.check_tokens(tokens)
        ids = tokens.ids
        batch = ids.shape[0]
        if self.quantizer is not None:
            if ids.dim() != 2 or ids.shape[1] != self.quantizer.num_ids:
                raise ValueError(f"{self.name or 'this teaser-fsq model'}'s ids are [B, {self.quantizer.num_ids}] "
                                 f"(4 tokens x {self.quantizer.codes_per_token} FSQ codes); got {tuple(ids.shape)}")
        elif ids.dim() != 2 or ids.shape[1] != NUM_SLOTS or not torch.equal(
                ids, torch.arange(NUM_SLOTS, device=ids.device).expand_as(ids)):
            raise ValueError(f"TEASER token ids are the slot numbers [0, 1, 2, 3] in every row (the values are in "
                             f"meta['tokens']); got ids of shape {tuple(ids.shape)}: {ids[:1].tolist()}")
        widths = {"pose_params": (3,), "cam": (3,), "shape_params": (self.n_shape,), "expression_params": (self.n_exp,),
                  "eyelid_params": (2,), "jaw_params": (3,)}
        if self.quantizer is None:
            widths["tokens"] = (NUM_SLOTS, self.token_dim)
        out = {}
        for key, shape in widths.items():
            value = tokens.meta.get(key)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch, *shape) or not \
                    value.is_floating_point():
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"these tokens lack TEASER's meta[{key!r}] as a float [B, {', '.join(map(str, shape))}] "
                                 f"tensor (got {got}); were they made by another tokenizer?")
            out[key] = value.to(device=self.device, dtype=self.dtype)
        if self.quantizer is not None:
            out["tokens"] = self.quantizer.decode_ids(ids.to(self.device)).to(self.dtype)
        if isinstance(tokens.meta.get("hull_points"), torch.Tensor):
            out["hull_points"] = tokens.meta["hull_points"]
        return out

    def encode(self, x: torch.Tensor, hull_points: torch.Tensor | None = None) -> Tokens:
        """Crops `[B, 3, 224, 224]` in [0, 1] -> `Tokens` (see the module docstring). `hull_points` `[B, N, 2]`
        (crop pixels of detector landmarks, e.g. MediaPipe's 478) are kept for the background mask of `decode`."""
        x = self.check_input(x)
        with _eval_mode(self.encoder):
            out = self.encoder(x)
        batch = x.shape[0]
        meta: dict[str, Any] = {k: out[k] for k in GEOMETRY_KEYS}
        if self.quantizer is not None:
            ids = self.quantizer.assign(out["tokens"])
            meta["tokens"] = self.quantizer.decode_ids(ids).to(x.dtype)  # what the generator will see
            layout: tuple[int, ...] = (NUM_SLOTS, self.quantizer.codes_per_token)
        else:
            ids = torch.arange(NUM_SLOTS, device=x.device).expand(batch, -1).clone()
            meta["tokens"] = out["tokens"]
            layout = (NUM_SLOTS,)
        meta["image_size"] = self.image_size
        if hull_points is not None:
            meta["hull_points"] = self._check_points(hull_points, batch).to(x.device)
        return Tokens(ids, layout=layout, meta=meta)

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """TEASER: the continuous appearance tokens `[B, 4, T]` (no code table). FSQ variants: the code vectors of
        the ids `[B, 4 G, d]` (differentiable only through nothing: FSQ codes are fixed grid points)."""
        if self.quantizer is not None:
            self.check_tokens(tokens)
            return self.quantizer.codes(tokens.ids.to(self.device)).to(self.dtype)
        return self._geometry(tokens)["tokens"]

    @staticmethod
    def _check_points(points: Any, batch: int) -> torch.Tensor:
        if not isinstance(points, torch.Tensor) or points.dim() != 3 or points.shape[0] != batch or \
                points.shape[2] != 2 or points.shape[1] < 3 or not torch.isfinite(points).all():
            got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ValueError(f"hull_points must be a finite [B={batch}, N>=3, 2] tensor of crop pixel coordinates "
                             f"(x, y); got {got}")
        return points.float()

    # ------------------------------------------------------------------ decoding
    def masked_input(self, image: torch.Tensor, rendered: torch.Tensor, hull_points: torch.Tensor | None = None,
                     transformed_vertices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's background input: `image` with the dilated face hull and the rendered face cut out
        (official `masking_face`); returns (masked image, keep mask `[B, 1, 224, 224]`).

        The hull is that of `hull_points` (crop pixels, MediaPipe's 478 landmarks officially), else of the
        rendered face region's projected vertices (`transformed_vertices`, what FLAME says the face covers). Rows
        of `hull_points` that are all NaN (training faces without MediaPipe points, `zoo.face.data`) take the
        rendered region's hull too.
        """
        batch = image.shape[0]
        missing = None
        if isinstance(hull_points, torch.Tensor) and hull_points.dim() == 3 and hull_points.shape[0] == batch:
            missing = torch.isnan(hull_points).flatten(1).all(1)
            if bool(missing.all()):
                hull_points, missing = None, None
            elif bool(missing.any()):
                hull_points = torch.where(missing[:, None, None], torch.zeros_like(hull_points), hull_points)
            else:
                missing = None
        if hull_points is None or missing is not None:
            if transformed_vertices is None:
                raise ValueError("masked_input needs hull_points or the rendered face's transformed_vertices")
            face = self.load_face_model()
            region = (transformed_vertices[:, face.renderer.keep, :2].detach() + 1) * (self.image_size / 2)
        if hull_points is None:
            hull_points = region
        hull = face_hull_mask(self._check_points(hull_points, batch), self.image_size).to(image)
        if missing is not None:
            hull[missing] = face_hull_mask(region[missing].float(), self.image_size).to(image)
        drawn = 1 - (rendered == 0).all(dim=1, keepdim=True).to(image.dtype)
        return mask_background(image, hull, drawn, self.mask_dilation)

    def generate(self, tokens: Tokens | torch.Tensor, rendered: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """The neural renderer alone: appearance tokens (a `Tokens` or `[B, 4, T]`), a rendered geometry image and
        a masked background image, both `[B, 3, 224, 224]` in [0, 1] -> image `[B, 3, 224, 224]` in (0, 1)."""
        values = self._geometry(tokens)["tokens"] if isinstance(tokens, Tokens) else tokens
        if not isinstance(values, torch.Tensor) or values.dim() != 3 or tuple(values.shape[1:]) != (
                NUM_SLOTS, self.token_dim):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"generate takes TEASER Tokens or tokens [B, {NUM_SLOTS}, {self.token_dim}], got {got}")
        size = (self.image_size, self.image_size)
        rendered = check_image(rendered, size, what="rendered geometry").to(self.device, self.dtype)
        masked = check_image(masked, size, what="masked image").to(self.device, self.dtype)
        if not rendered.shape[0] == masked.shape[0] == values.shape[0]:
            raise ValueError(f"batch sizes differ: tokens {values.shape[0]}, rendered {rendered.shape[0]}, masked "
                             f"{masked.shape[0]}")
        return self.generator(torch.cat([rendered, masked], dim=1), values.to(self.device, self.dtype))

    def decode(self, tokens: Tokens, image: torch.Tensor | None = None,
               hull_points: torch.Tensor | None = None) -> torch.Tensor:
        """The official chain: FLAME -> render -> background `image` with the face cut out -> generator.

        Args:
            tokens: TEASER `Tokens` (swapped or edited ones too, see `zoo.face.teaser.edit`).
            image: `[B, 3, 224, 224]` in [0, 1] whose background surrounds the generated face (the encoded crop for
                a reconstruction). None: no background (the masked input is black; the generator paints the face
                from geometry and tokens alone, which it was not trained for).
            hull_points: crop pixels whose hull is the face region to cut out of `image` (default: the tokens'
                `meta["hull_points"]`, else the rendered face region).
        Returns `[B, 3, 224, 224]`, the generator's sigmoid output (in (0, 1)).
        """
        params = self._geometry(tokens)
        rendered = self.render(params)
        batch = tokens.batch_size
        if image is None:
            masked = rendered["image"].new_zeros(batch, 3, self.image_size, self.image_size)
        else:
            image = self.check_input(image)
            if image.shape[0] != batch:
                raise ValueError(f"image has {image.shape[0]} samples, the tokens {batch}")
            points = hull_points if hull_points is not None else params.get("hull_points")
            masked, _ = self.masked_input(image, rendered["image"], points, rendered["transformed_vertices"])
        return self.generator(torch.cat([rendered["image"], masked], dim=1).to(self.dtype), params["tokens"])

    def reconstruct(self, x: torch.Tensor, hull_points: torch.Tensor | None = None) -> torch.Tensor:
        """encode -> decode with `x` as the background, clamped to [0, 1]."""
        with torch.inference_mode():
            return self.decode(self.encode(x, hull_points=hull_points), image=x).clamp(0, 1)

    def read_input(self, path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
        """A photo -> (the face crop `[1, 3, 224, 224]` at the official scale, encode kwargs): the face pipeline
        of `zoo.face.crop` (MediaPipe's 478 landmarks become `hull_points`)."""
        from zoo.face.crop import read_face

        crop = read_face(path)
        extra = {} if crop.hull_points is None else {"hull_points": crop.hull_points}
        return crop.image, extra

    # ------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor, hull_points: torch.Tensor | None = None, generate: bool = True) -> ForwardOutput:
        """Training pass of the reconstruction path: encoders (BatchNorm in the module's mode) -> FLAME -> render
        -> masked input -> (FSQ ->) generator. `reconstruction` is the generator output (None with
        `generate=False`, stage 1, which also skips rendering); `extras` hold the encoder outputs (`params`; `params["tokens"]` are the
        continuous tokens, `tokens_generator` what the generator took), FLAME's (`flame`), the render (`rendered`,
        `rendered_mask`, `transformed_vertices`), `masked` and `keep_mask`, for the objective's landmark,
        photometric and cycle losses. FSQ variants add usage / perplexity stats."""
        x = self.check_input(x)
        params = self.encoder(x)
        face = self.load_face_model()
        geometry = face.flame(params)
        batch, stats = x.shape[0], {}
        if self.quantizer is not None:
            tokens_gen, ids, stats = self.quantizer(params["tokens"])
            layout: tuple[int, ...] = (NUM_SLOTS, self.quantizer.codes_per_token)
        else:
            tokens_gen = params["tokens"]
            ids = torch.arange(NUM_SLOTS, device=x.device).expand(batch, -1).clone()
            layout = (NUM_SLOTS,)
        extras = {"params": params, "flame": geometry, "tokens_generator": tokens_gen}
        reconstruction = None
        if generate:
            rendered = face.renderer(geometry["vertices"], params["cam"])
            extras.update(rendered=rendered["image"], rendered_mask=rendered["mask"],
                          transformed_vertices=rendered["transformed_vertices"])
            with torch.no_grad():
                masked, keep = self.masked_input(x, rendered["image"].detach(), hull_points,
                                                 rendered["transformed_vertices"])
            reconstruction = self.generator(torch.cat([rendered["image"], masked], dim=1).to(x.dtype), tokens_gen)
            extras.update(masked=masked, keep_mask=keep)
        meta = {k: params[k].detach() for k in GEOMETRY_KEYS}
        meta["tokens"] = tokens_gen.detach()
        tokens = Tokens(ids.detach(), layout=layout, meta=meta)
        return ForwardOutput(reconstruction, tokens, {}, stats, extras)
