"""Training losses: LPIPS, adversarial losses and discriminators (PatchGAN, MPD, MRD, DAC), spectral, semantic."""

from zoo.losses.audio_discriminators import (
    DACDiscriminator,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from zoo.losses.gan import (
    GAN_LOSSES,
    PatchGAN,
    adaptive_weight,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from zoo.losses.perceptual import LPIPS, build_lpips, find_backbone_weights
from zoo.losses.semantic import (
    TEACHERS,
    SemanticAlignmentLoss,
    Teacher,
    build_teacher,
    map_efficientnet_lite_keys,
)
from zoo.losses.spectral import MelSpectrogramLoss, MultiResolutionMelLoss, MultiResolutionSTFTLoss

__all__ = [
    "GAN_LOSSES",
    "LPIPS",
    "TEACHERS",
    "DACDiscriminator",
    "MelSpectrogramLoss",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "MultiResolutionMelLoss",
    "MultiResolutionSTFTLoss",
    "PatchGAN",
    "SemanticAlignmentLoss",
    "Teacher",
    "adaptive_weight",
    "build_lpips",
    "build_teacher",
    "discriminator_loss",
    "feature_matching_loss",
    "find_backbone_weights",
    "generator_loss",
    "map_efficientnet_lite_keys",
]
