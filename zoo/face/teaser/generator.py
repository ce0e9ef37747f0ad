"""TEASER's token-conditioned neural renderer (official `src/teaser_generator.py`).

    input  cat[rendered geometry, masked image]  [B, 6, 224, 224]
    U-Net  encoder1..4 (f, 2f, 4f, 8f; max-pool 2) -> bottleneck (16f at 14x14) -> res_blocks ResNet blocks
           -> upconv + skip concat + decoder4..1 -> 1x1 conv -> sigmoid RGB
    every U-Net block is an AdaIN block: conv3x3 -> BatchNorm -> AdaIN(token) -> ReLU, twice; AdaIN =
           InstanceNorm(x) * (1 + gamma(t)) + beta(t), gamma/beta from Linear(T, 128) + ReLU -> Linear(128, C).
           enc1/dec1 use token 3 (finest), enc2/dec2 token 2, enc3/dec3 token 1, enc4/bottleneck/dec4 token 0.
    TokenDecoder: cat[t3, t2, t1, t0] -> Linear -> (8f, 14, 14) -> 4 x (bilinear x2, conv3x3, BN, ReLU) giving
           (8f, 28), (4f, 56), (2f, 112), (f, 224) maps (the last followed by conv3x3 + tanh), added to the decoder
           outputs through zero-initialised 1x1 convs (ControlNet style: training starts from the plain U-Net).

The BatchNorm before each InstanceNorm acts only through the sign of its weight (and eps), but it is in the
checkpoint and is kept. Module names are the official ones.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ADAIN", "AdainBlock", "ResnetBlock", "TeaserGenerator", "TokenDecoder"]

ADAIN_HIDDEN = 128
TOKEN_GRID = 14  # the TokenDecoder starts at 14x14: the generator works at 224x224 only


class ADAIN(nn.Module):
    """`InstanceNorm2d(x) * (1 + gamma(token)) + beta(token)` (biased variance, eps 1e-5, no affine)."""

    def __init__(self, channels: int, token_dim: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Linear(token_dim, ADAIN_HIDDEN), nn.ReLU())
        self.mlp_gamma = nn.Linear(ADAIN_HIDDEN, channels)
        self.mlp_beta = nn.Linear(ADAIN_HIDDEN, channels)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp_shared(token.reshape(token.shape[0], -1))
        gamma = self.mlp_gamma(hidden)[:, :, None, None]
        beta = self.mlp_beta(hidden)[:, :, None, None]
        return self.param_free_norm(x) * (1 + gamma) + beta


class AdainBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, token_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.adain1 = ADAIN(out_channels, token_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.adain2 = ADAIN(out_channels, token_dim)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        x = self.act(self.adain1(self.norm1(self.conv1(x)), token))
        return self.act(self.adain2(self.norm2(self.conv2(x)), token))


class ResnetBlock(nn.Module):
    """`x + [reflect-pad, conv3x3, BN, ReLU, reflect-pad, conv3x3, BN](x)` (pix2pix style, no bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _up(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU()]


class TokenDecoder(nn.Module):
    """The four tokens -> feature maps at 28, 56, 112 and 224 px with 8f, 4f, 2f, f channels."""

    def __init__(self, token_dim: int, features: int) -> None:
        super().__init__()
        widths = (8 * features, 4 * features, 2 * features, features)
        self.decoder_1 = nn.Sequential(nn.Linear(4 * token_dim, widths[0] * TOKEN_GRID * TOKEN_GRID),
                                       nn.Unflatten(1, (widths[0], TOKEN_GRID, TOKEN_GRID)), *_up(widths[0], widths[0]))
        self.decoder_2 = nn.Sequential(*_up(widths[0], widths[1]))
        self.decoder_3 = nn.Sequential(*_up(widths[1], widths[2]))
        self.decoder_4 = nn.Sequential(*_up(widths[2], widths[3]), nn.Conv2d(widths[3], widths[3], 3, padding=1),
                                       nn.Tanh())

    def forward(self, flat_tokens: torch.Tensor) -> list[torch.Tensor]:
        maps = [self.decoder_1(flat_tokens)]
        for stage in (self.decoder_2, self.decoder_3, self.decoder_4):
            maps.append(stage(maps[-1]))
        return maps


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class TeaserGenerator(nn.Module):
    """`forward(x [B, 6, 224, 224], tokens [B, 4, T]) -> [B, 3, 224, 224]` in (0, 1)."""

    def __init__(self, in_channels: int = 6, out_channels: int = 3, init_features: int = 32, res_blocks: int = 5,
                 token_dim: int = 256) -> None:
        super().__init__()
        f = init_features
        self.encoder1 = AdainBlock(in_channels, f, token_dim)
        self.encoder2 = AdainBlock(f, 2 * f, token_dim)
        self.encoder3 = AdainBlock(2 * f, 4 * f, token_dim)
        self.encoder4 = AdainBlock(4 * f, 8 * f, token_dim)
        self.pool = nn.MaxPool2d(2, 2)
        self.bottleneck = AdainBlock(8 * f, 16 * f, token_dim)
        self.resnet_blocks = nn.ModuleList([ResnetBlock(16 * f) for _ in range(res_blocks)])
        self.upconv4 = nn.ConvTranspose2d(16 * f, 8 * f, 2, stride=2)
        self.decoder4 = AdainBlock(16 * f, 8 * f, token_dim)
        self.upconv3 = nn.ConvTranspose2d(8 * f, 4 * f, 2, stride=2)
        self.decoder3 = AdainBlock(8 * f, 4 * f, token_dim)
        self.upconv2 = nn.ConvTranspose2d(4 * f, 2 * f, 2, stride=2)
        self.decoder2 = AdainBlock(4 * f, 2 * f, token_dim)
        self.upconv1 = nn.ConvTranspose2d(2 * f, f, 2, stride=2)
        self.decoder1 = AdainBlock(2 * f, f, token_dim)
        self.conv = nn.Conv2d(f, out_channels, 1)
        self.token_decoder = TokenDecoder(token_dim, f)
        self.token_zero_conv_4 = _zero_conv(8 * f)
        self.token_zero_conv_3 = _zero_conv(4 * f)
        self.token_zero_conv_2 = _zero_conv(2 * f)
        self.token_zero_conv_1 = _zero_conv(f)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        t0, t1, t2, t3 = tokens.unbind(dim=1)
        enc1 = self.encoder1(x, t3)
        enc2 = self.encoder2(self.pool(enc1), t2)
        enc3 = self.encoder3(self.pool(enc2), t1)
        enc4 = self.encoder4(self.pool(enc3), t0)
        hidden = self.bottleneck(self.pool(enc4), t0)
        for block in self.resnet_blocks:
            hidden = block(hidden)
        maps = self.token_decoder(torch.cat([t3, t2, t1, t0], dim=1))
        dec4 = self.decoder4(torch.cat([self.upconv4(hidden), enc4], 1), t0) + self.token_zero_conv_4(maps[0])
        dec3 = self.decoder3(torch.cat([self.upconv3(dec4), enc3], 1), t1) + self.token_zero_conv_3(maps[1])
        dec2 = self.decoder2(torch.cat([self.upconv2(dec3), enc2], 1), t2) + self.token_zero_conv_2(maps[2])
        dec1 = self.decoder1(torch.cat([self.upconv1(dec2), enc1], 1), t3) + self.token_zero_conv_1(maps[3])
        return torch.sigmoid(self.conv(dec1))
