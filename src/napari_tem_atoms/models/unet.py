"""A small fully convolutional U-Net for images of any size (padded to a multiple of 2^depth)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet"]


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ContextBlock(nn.Module):
    """Residual pair of dilated 3×3 convolutions: widens the receptive field at low resolution.

    The last batch norm starts at zero scale, so a new block is the identity: it can be added to
    a trained network and fine-tuned without first undoing what the network knows.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2 * dilation, dilation=2 * dilation,
                      bias=False),
            nn.BatchNorm2d(channels),
        )
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(features + self.body(features))


class UNet(nn.Module):
    """U-Net: `depth` poolings, channels doubling from `base_channels`; logits out.

    Parameters
    ----------
    in_channels : int
        Input images per sample (1 for an image, 3 for a focal series).
    out_channels : int
        Output maps (1 for column presence, one per species otherwise).
    base_channels : int
        Channels of the first level.
    depth : int
        Number of 2× poolings; inputs must be a multiple of ``2**depth`` in size.
    context : int
        Dilated residual blocks after the bottleneck (dilations 2 and 4 at 2^depth px each):
        each adds 12 · 2^depth px of receptive field, so the network sees a particle's edge
        from farther inside it.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 16,
                 depth: int = 3, context: int = 0) -> None:
        super().__init__()
        self.depth = depth
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in channels[:-1]:
            self.encoders.append(_block(previous, width))
            previous = width
        self.bottleneck = _block(channels[-2], channels[-1])
        self.context = nn.Sequential(*(ContextBlock(channels[-1], 2) for _ in range(context)))
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoders = nn.ModuleList(
            _block(channels[level + 1] + channels[level], channels[level])
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (batch, in_channels, H, W) images to (batch, out_channels, H, W) logits."""
        skips = []
        features = images
        for encoder in self.encoders:
            features = encoder(features)
            skips.append(features)
            features = self.pool(features)
        features = self.context(self.bottleneck(features))
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            features = decoder(torch.cat([self.upsample(features), skip], dim=1))
        return self.head(features)
