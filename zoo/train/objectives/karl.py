"""KARL's two training stages (ShivamDuggal4/karl `KARLTokenizer.forward_executer`, https://arxiv.org/abs/2507.07995).

Both stages run the two-pass "upside-down RL" step of `KARL.forward(refine=True)` on every batch:

1. *estimate complexity*: a budget T1 drawn from `token_counts` (official 16, 32, ..., 368) and a target error per
   image drawn from the error prior below; the decoder sees all T1 tokens; every halting logit is pushed to "active";
2. *learn to tokenise complexity*: budget 256, conditioned on the L1 error pass 1 achieved per image; halting targets
   "active" for the first min(T1, 256) tokens and "halted" for the rest; the decoder ignores predicted-halted tokens.

Error prior (official `logged_min_loss_values_prob`): uniform over the bins <= 0.04 at the start; after every step the
probability of each bin >= the batch's smallest achieved error is multiplied by 0.99 and the vector renormalised. Like
the official attribute it is not saved in checkpoints: a resumed run starts it again from the prior.

`karl-distill` (stage 1, latent distillation, the VQGAN frozen), per pass:
    ce_weight * CE(logits, VQGAN ids) + code_weight * MSE(softmax-weighted codes, VQGAN codes)
  + codebook_weight * codebook + commitment_weight * commitment + halt_weight * (BCE active + BCE halted)
The official code builds a `LabelSmoothingCrossEntropy(0.1)` but uses only its plain NLL output (the smoothing line is
commented out), so `label_smoothing` defaults to 0. The pixels of pass 1 are decoded without autograd, only to
measure the achieved error.

`karl-finetune` (stage 2, everything trained), per pass with its reconstruction y:
    mean(|x - y| + perceptual_weight * LPIPS(x, y)) + adaptive_weight * gan_weight(step) * -mean(D_k(y))
  + codebook_weight * codebook + commitment_weight * commitment + halt_weight * (BCE active + BCE halted)
with one PatchGAN D_k per 32-token bucket (k = max(0, min(8, count // 32) - 1), count = T1 in pass 1 and
min(T1, 256) in pass 2), the taming adaptive weight at the VQGAN decoder's last conv, and the official GAN weight
schedule (0 for the first 20 of 400 epochs, then 0.2 (`disc_weight`), then 0.8 after epoch 100) as `gan_schedule`.
Discriminator step: `0.5 * (relu(1 - D_k(x)) + relu(1 + D_k(y)))` for each pass's bucket. The official LPIPS is
taming's, fed the [0, 1] images as if they were [-1, 1]; `lpips_official_range` reproduces that.

Deviations forced by the engine (one generator and one discriminator update per step, in that order): the official
loop makes 8 discriminator steps (each a full forward) per generator step once the GAN weight is on; here every step
updates both. DDP needs `train.find_unused_parameters: true` with the bucketed discriminators (one bucket per pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.losses import PatchGAN, adaptive_weight
from zoo.train.objectives.base import Objective, split_batch
from zoo.train.objectives.registry import register_objective

__all__ = [
    "OFFICIAL_TOKEN_COUNTS",
    "BucketDiscriminators",
    "ErrorPrior",
    "KARLDistillObjective",
    "KARLFinetuneObjective",
    "bucket_index",
]

OFFICIAL_TOKEN_COUNTS = tuple(range(16, 384, 16))  # `torch.arange(0, 256 + 128, 16)[1:]`


class ErrorPrior:
    """The distribution over the error bins that pass 1's target errors are drawn from (see the module docstring)."""

    def __init__(self, bins: Sequence[float], prior_max: float = 0.04, decay: float = 0.99) -> None:
        self.bins = torch.tensor(bins, dtype=torch.float32)
        self.prob = (self.bins <= prior_max).float()
        if not self.prob.any():
            raise ValueError(f"error_prior_max={prior_max} is below every error bin {list(bins)}")
        self.prob /= self.prob.sum()
        self.decay = float(decay)

    def sample(self, batch: int) -> torch.Tensor:
        return self.bins[torch.multinomial(self.prob, batch, replacement=True)]

    def update(self, achieved: torch.Tensor) -> None:
        self.prob[self.bins >= float(achieved.min())] *= self.decay
        self.prob /= self.prob.sum()


def bucket_index(count: int, size: int = 32, buckets: int = 8) -> int:
    """The official discriminator index of a pass with `count` tokens: `max(0, min(buckets, count // size) - 1)`."""
    return max(0, min(buckets, count // size) - 1)


def load_base_vqgan(model: nn.Module, source: str) -> None:
    """Copy a trained `karl-vqgan` tokenizer (registry name or folder) into `model.vqgan`; names and shapes must
    match (the base VQGAN of `karl-tiny` is `karl-vqgan-tiny`, of the releases `karl-vqgan-mage`)."""
    import zoo
    from zoo.image.karl import KARLVQGAN

    ref = source if source in zoo.list_models() else Path(source)
    base = zoo.load(ref)
    if not isinstance(base, KARLVQGAN):
        raise TypeError(f"vqgan={source!r} is a {type(base).__name__}, not a karl-vqgan tokenizer")
    own = model.vqgan.state_dict()
    theirs = base.vqgan.state_dict()
    bad = sorted(k for k in set(own) | set(theirs) if k not in own or k not in theirs or own[k].shape != theirs[k].shape)
    bad = [k for k in bad if not k.startswith("quantizer.") or k == "quantizer.embed"]
    if bad:
        raise ValueError(f"the VQGAN {source!r} does not fit the model's base VQGAN (tensors {bad[:5]} differ); train "
                         "the base with the same vqgan_* kwargs as the KARL model")
    model.vqgan.load_state_dict({k: theirs[k].to(own[k].dtype) for k in own})


class _TwoPass(Objective):
    """What both stages share: the budget / error sampling, the VQ and halting terms."""

    def __init__(self, token_counts: Sequence[int] | None, codebook_weight: float, commitment_weight: float,
                 halt_weight: float, error_prior_max: float, error_decay: float, continuous_steps: int = 0,
                 halt_start: int = 0) -> None:
        super().__init__()
        if continuous_steps < 0 or halt_start < 0:
            raise ValueError(f"continuous_steps and halt_start must be >= 0, got {continuous_steps}, {halt_start}")
        self.continuous_steps, self.halt_start = int(continuous_steps), int(halt_start)
        self.token_counts = [int(t) for t in (token_counts or OFFICIAL_TOKEN_COUNTS)]
        if not self.token_counts or min(self.token_counts) < 1:
            raise ValueError(f"token_counts must be positive budgets, got {self.token_counts}")
        self.codebook_weight = float(codebook_weight)
        self.commitment_weight = float(commitment_weight)
        self.halt_weight = float(halt_weight)
        self.error_prior_args = (float(error_prior_max), float(error_decay))
        self.prior: ErrorPrior | None = None

    def setup(self, model: nn.Module) -> None:
        from zoo.image.karl import ERROR_BINS, KARL

        if not isinstance(model, KARL):
            raise TypeError(f"objective {self.objective_name!r} trains a KARL model, got {type(model).__name__}")
        too_big = [t for t in self.token_counts if t > model.max_tokens]
        if too_big:
            raise ValueError(f"token_counts {too_big} exceed the model's max_latent_tokens ({model.max_tokens})")
        self.prior = ErrorPrior(ERROR_BINS, *self.error_prior_args)

    def run(self, model: nn.Module, x: torch.Tensor, reconstruct: str, step: int) -> tuple[Any, int]:
        """The two-pass forward with a sampled budget and per-image target errors (continuous latents for the first
        `continuous_steps` steps)."""
        t1 = self.token_counts[int(torch.randint(len(self.token_counts), ()))]
        errors = self.prior.sample(x.shape[0]).to(x.device)
        out = model(x, num_tokens=t1, target_error=errors, refine=True, reconstruct=reconstruct,
                    quantize=step >= self.continuous_steps)
        return out, t1

    def shared_terms(self, out: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {name: out.losses[name].float() for name in ("codebook", "commitment", "halt_active", "halt_stop")
                 if name in out.losses}
        halt_weight = self.halt_weight if step >= self.halt_start else 0.0
        loss = (self.codebook_weight * terms["codebook"] + self.commitment_weight * terms["commitment"]
                + halt_weight * (terms["halt_active"] + terms.get("halt_stop", 0.0)))
        achieved = out.extras["achieved_error"]
        self.prior.update(achieved)
        terms["achieved_error"] = achieved.mean().detach()
        for name, value in out.stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[name] = value.detach().float().reshape(())
        return loss, terms


@register_objective("karl-distill")
class KARLDistillObjective(_TwoPass):
    """Stage 1, latent distillation with the VQGAN frozen (see the module docstring).

    Args:
        token_counts: pass-1 budgets drawn uniformly (default the official 16, 32, ..., 368).
        ce_weight, label_smoothing: cross-entropy on the VQGAN ids (official 1.0 and, in effect, 0).
        code_weight: MSE between the softmax-weighted and the true VQGAN code vectors (official 1.0).
        codebook_weight, commitment_weight: latent VQ losses (official 1.0 and 0.25).
        halt_weight: halting BCE (official 1.0).
        error_prior_max, error_decay: the error prior (official 0.04, 0.99).
        continuous_steps: steps at the start in which the decoder reads the l2-normalised continuous latents instead
            of their codes (not official; 0 = the official recipe). A small model trained the official way stalls:
            its latents start nearly image-independent, the VQ maps them to one code per position and the decoder
            learns the per-position code marginals instead of reading them (docs/karl.md, "State of karl-tiny").
        halt_start: the step from which the halting loss counts (not official; 0 = from the start); with it off and
            continuous latents, the latents of an overfit test became image-dependent instead of collapsing.
        freeze_vqgan: keep the VQGAN fixed (official stage 1).
        vqgan: the trained base tokenizer whose codes are distilled: a `karl-vqgan` registry name (e.g.
            "karl-vqgan-mage", MAGE's VQGAN as the official stage 1 uses) or a `save_pretrained` folder; its weights
            replace the model's `vqgan.*` at setup (before the optimisers and the EMA exist; a resumed run then
            restores its own). None keeps the model's VQGAN (e.g. loaded with `model.weights`).
    """

    def __init__(self, token_counts: Sequence[int] | None = None, ce_weight: float = 1.0,
                 label_smoothing: float = 0.0, code_weight: float = 1.0, codebook_weight: float = 1.0,
                 commitment_weight: float = 0.25, halt_weight: float = 1.0, error_prior_max: float = 0.04,
                 error_decay: float = 0.99, freeze_vqgan: bool = True, vqgan: str | None = None,
                 continuous_steps: int = 0, halt_start: int = 0) -> None:
        super().__init__(token_counts, codebook_weight, commitment_weight, halt_weight, error_prior_max, error_decay,
                         continuous_steps, halt_start)
        self.vqgan = vqgan
        self.ce_weight = float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.code_weight = float(code_weight)
        self.freeze_vqgan = bool(freeze_vqgan)

    def setup(self, model: nn.Module) -> None:
        super().setup(model)
        if self.vqgan is not None:
            load_base_vqgan(model, self.vqgan)
        if self.freeze_vqgan:
            model.vqgan.requires_grad_(False)

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        out, t1 = self.run(model, x, "no_grad", step)
        loss, terms = self.shared_terms(out, step)
        target_ids, target_codes = out.extras["target_ids"], out.extras["target_codes"].float()
        ce = code = 0.0
        for p in out.extras["passes"]:
            logits = p["logits"].float()
            ce = ce + F.cross_entropy(logits.flatten(0, 1), target_ids.flatten(), label_smoothing=self.label_smoothing)
            code = code + F.mse_loss(p["codes"], target_codes)
        terms.update(ce=ce.detach(), code=code.detach(), tokens=torch.tensor(float(t1)))
        return loss + self.ce_weight * ce + self.code_weight * code, terms


class BucketDiscriminators(nn.Module):
    """One PatchGAN per token-count bucket; `forward(images, bucket)` runs discriminator `bucket`."""

    def __init__(self, buckets: int, **patchgan_kwargs: Any) -> None:
        super().__init__()
        self.nets = nn.ModuleList(PatchGAN(**patchgan_kwargs) for _ in range(buckets))

    def forward(self, images: torch.Tensor, bucket: int) -> torch.Tensor:
        return self.nets[bucket](images)


@register_objective("karl-finetune")
class KARLFinetuneObjective(_TwoPass):
    """Stage 2, full fine-tuning with L1 (+ LPIPS) and bucketed PatchGANs (see the module docstring).

    Args:
        token_counts, codebook_weight, commitment_weight, halt_weight, error_prior_max, error_decay: as in stage 1.
        l1_weight: pixel L1 (official 1.0).
        perceptual_weight: LPIPS-VGG (official 1.0; 0 builds no LPIPS, which needs local VGG16 weights).
        lpips_weights: the torchvision VGG16 file for LPIPS (see `zoo.losses.LPIPS`).
        lpips_official_range: feed LPIPS the [0, 1] images as the official code does (as if they were [-1, 1]).
        gan_schedule: `[[step, weight], ...]`: the adversarial weight from each step on (official in epochs:
            0 until 20, 0.2 until 100, then 0.8 of 400). The discriminators train once the weight is > 0.
        adaptive: scale the adversarial term by taming's adaptive weight (official).
        buckets, bucket_size: discriminators and tokens per bucket (official 8 of 32 tokens).
        discriminator_kwargs: `zoo.losses.PatchGAN` arguments (official 64 channels, 3 layers, BatchNorm).
        continuous_steps, halt_start: as in stage 1 (not official; 0 = the official recipe), for a fine-tuning that
            starts from an untrained KARL.
    """

    def __init__(self, token_counts: Sequence[int] | None = None, l1_weight: float = 1.0,
                 perceptual_weight: float = 1.0, lpips_weights: str | None = None, lpips_official_range: bool = True,
                 gan_schedule: Sequence[Sequence[float]] = ((0, 0.0), (1, 0.2)), adaptive: bool = True,
                 buckets: int = 8, bucket_size: int = 32, discriminator_kwargs: dict[str, Any] | None = None,
                 codebook_weight: float = 1.0, commitment_weight: float = 0.25, halt_weight: float = 1.0,
                 error_prior_max: float = 0.04, error_decay: float = 0.99, continuous_steps: int = 0,
                 halt_start: int = 0) -> None:
        super().__init__(token_counts, codebook_weight, commitment_weight, halt_weight, error_prior_max, error_decay,
                         continuous_steps, halt_start)
        self.l1_weight = float(l1_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.lpips_weights = lpips_weights
        self.lpips_official_range = bool(lpips_official_range)
        schedule = sorted((int(s), float(w)) for s, w in gan_schedule)
        if not schedule or schedule[0][0] != 0:
            raise ValueError(f"gan_schedule must start at step 0, got {list(gan_schedule)}")
        self.gan_schedule = schedule
        self.adaptive = bool(adaptive)
        self.buckets, self.bucket_size = int(buckets), int(bucket_size)
        self.discriminator_kwargs = dict(discriminator_kwargs or {"channels": 64, "num_layers": 3, "norm": "batch"})
        on = [s for s, w in schedule if w > 0]
        self.disc_start = on[0] if on else 2**62
        self.lpips: nn.Module | None = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def setup(self, model: nn.Module) -> None:
        super().setup(model)
        model.requires_grad_(True)
        self.discriminator = BucketDiscriminators(self.buckets, **self.discriminator_kwargs)
        if self.perceptual_weight:
            from zoo.losses import LPIPS

            self.lpips = LPIPS("vgg", self.lpips_weights)
        self._last_layer = model.vqgan.decoder.conv_out.weight

    def gan_weight(self, step: int) -> float:
        weight = 0.0
        for start, value in self.gan_schedule:
            if step >= start:
                weight = value
        return weight

    def _perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.lpips_official_range:  # LPIPS maps its input by 2v - 1: this makes it see the [0, 1] images as is
            x, y = (x + 1) / 2, (y + 1) / 2
        return self.lpips(y, x).mean()

    def generator_loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = split_batch(batch)
        out, t1 = self.run(model, x, "grad", step)
        loss, terms = self.shared_terms(out, step)
        gan_w = self.gan_weight(step)
        counts = [t1, min(t1, out.extras["passes"][-1]["num_tokens"])]
        self._pairs = []
        for i, (p, count) in enumerate(zip(out.extras["passes"], counts)):
            y = p["reconstruction"].float()
            rec = self.l1_weight * (x.float() - y).abs().mean()
            if self.lpips is not None:
                rec = rec + self.perceptual_weight * self._perceptual(x.float(), y)
            bucket = bucket_index(count, self.bucket_size, self.buckets)
            self._pairs.append((x.detach(), y.detach(), bucket))
            terms[f"rec_{i + 1}"] = rec.detach()
            loss = loss + rec
            if gan_w > 0:
                g = -self.discriminate(y, bucket, update=False).float().mean()
                weight = torch.tensor(gan_w, device=x.device)
                if self.adaptive and torch.is_grad_enabled():
                    weight = weight * adaptive_weight(rec, g, self._last_layer)
                loss = loss + weight * g
                terms[f"gan_{i + 1}"] = g.detach()
                terms[f"gan_weight_{i + 1}"] = weight.detach()
        terms["tokens"] = torch.tensor(float(t1))
        return loss, terms

    def discriminator_loss(self, model: nn.Module, batch: Any, step: int
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self._pairs:  # no generator step on this batch before: reconstruct it without gradients
            with torch.no_grad():
                self.generator_loss(model, batch, step)
        loss, real_mean, fake_mean = 0.0, 0.0, 0.0
        for x, y, bucket in self._pairs:
            real = self.discriminate(x, bucket, update=True).float()
            fake = self.discriminate(y.to(x.dtype), bucket, update=True).float()
            loss = loss + 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
            real_mean, fake_mean = real_mean + real.detach().mean(), fake_mean + fake.detach().mean()
        n = len(self._pairs)
        self._pairs = []
        return loss, {"logits_real": real_mean / n, "logits_fake": fake_mean / n}
