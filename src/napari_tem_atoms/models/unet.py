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


class ConditionFiLM(nn.Module):
    """Scale and shift of feature channels from a per-image vector of imaging conditions.

    Zero-initialised, so a layer added to a trained network leaves it unchanged until trained.
    """

    def __init__(self, conditions: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(conditions, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(conditions.to(features.dtype))[:, :, None, None].chunk(2, 1)
        return features * (1 + scale) + shift


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
    conditions : int
        Length of the per-image vector of imaging conditions (Cs, defocus and whether each is
        known; see :mod:`napari_tem_atoms.analysis.conditions`) that scales and shifts the
        features of every level; 0: none.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 16,
                 depth: int = 3, context: int = 0, conditions: int = 0) -> None:
        super().__init__()
        self.depth = depth
        self.conditions = conditions
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
        if conditions:  # one per encoder, the bottleneck and one per decoder
            widths = [*channels[:-1], channels[-1], *reversed(channels[:-1])]
            self.film = nn.ModuleList(ConditionFiLM(conditions, width) for width in widths)

    def forward(self, images: torch.Tensor, conditions: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Map (batch, in_channels, H, W) images to (batch, out_channels, H, W) logits.

        `conditions` is a (batch, conditions) tensor for a network built with conditions;
        left out, every condition is unknown (zeros).
        """
        if self.conditions:
            if conditions is None:
                conditions = images.new_zeros((images.shape[0], self.conditions))
            films = iter(self.film)

            def condition(features: torch.Tensor) -> torch.Tensor:
                return next(films)(features, conditions)
        else:
            def condition(features: torch.Tensor) -> torch.Tensor:
                return features
        skips = []
        features = images
        for encoder in self.encoders:
            features = condition(encoder(features))
            skips.append(features)
            features = self.pool(features)
        features = condition(self.context(self.bottleneck(features)))
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            features = condition(decoder(torch.cat([self.upsample(features), skip], dim=1)))
        return self.head(features)
