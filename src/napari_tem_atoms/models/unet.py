"""A small fully convolutional U-Net for images of any size (padded to a multiple of 2^depth)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional

__all__ = ["RefineBlock", "SplitInputConv", "UNet", "check_architecture",
           "prepare_for_inference"]


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Residual pair of 3×3 convolutions of the given dilations.

    The last batch norm starts at zero scale, so a new block is the identity: it can be added to
    a trained network and fine-tuned without first undoing what the network knows.
    """

    def __init__(self, channels: int, dilations: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        first, second = dilations
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=first, dilation=first, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=second, dilation=second, bias=False),
            nn.BatchNorm2d(channels),
        )
        nn.init.zeros_(self.body[-1].weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(features + self.body(features))


class ContextBlock(ResidualBlock):
    """Dilated residual block at low resolution: widens the receptive field.

    Its convolutions have dilations `dilation` and twice that.
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__(channels, (dilation, 2 * dilation))


class RefineBlock(ResidualBlock):
    """Plain residual block at the half-resolution level: capacity where the lattice is read.

    At half resolution (0.4 Å/px for a model at 0.2 Å/px) a crystal's lattice is still
    resolved. A pair of these (32 channels) has as many multiply-adds as a pair of 16-channel
    blocks at full resolution, but on a quarter of the pixels it runs faster: +5 % per 768²
    tile on one CPU thread, against +28 … 41 % at full resolution.
    """


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
        return torch.addcmul(shift, features, 1 + scale)  # one pass over the features


def check_architecture(base_channels: int = 16, depth: int = 3, context: int = 0,
                       refine: int = 0) -> None:
    """Refuse, in words, U-Net settings that :class:`UNet` cannot be built with.

    Raises
    ------
    ValueError
        Fewer than one base channel or pooling, a negative count of blocks, or refine blocks
        without a half-resolution level that has a decoder (depth < 2).
    """
    for key, value, smallest in (("base_channels", base_channels, 1), ("depth", depth, 1),
                                 ("context", context, 0), ("refine", refine, 0)):
        if value < smallest:
            raise ValueError(f"{key} = {value} is too small")
    if refine and depth < 2:
        raise ValueError(f"refine needs depth >= 2 (a half-resolution level with a decoder); "
                         f"depth is {depth}")


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
    refine : int
        :class:`RefineBlock` s appended to the second level's encoder and decoder (each, at
        half resolution). Earlier layers keep their names, so weights without them load into
        the network unchanged.
    counts : int
        1: a second head (a 3×3 and a 1×1 convolution on the last features, which it does not
        train) estimates log(atoms along the beam) at each column's centre, as one more output
        channel after the `out_channels` maps (not a probability: no sigmoid). 2: the same
        output from a count branch, a decoder of its own on the encoder's features (which it
        does not train either): the column map's last features are trained to look alike for
        every column height, the encoder's still hold each column's contrast.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 16,
                 depth: int = 3, context: int = 0, conditions: int = 0, refine: int = 0,
                 counts: int = 0) -> None:
        super().__init__()
        check_architecture(base_channels=base_channels, depth=depth, context=context,
                           refine=refine)
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
        for _ in range(refine):  # appended: the blocks' existing layers keep their names
            self.encoders[1].append(RefineBlock(channels[1]))
            self.decoders[-2].append(RefineBlock(channels[1]))
        self.head = nn.Conv2d(channels[0], out_channels, 1)
        # With counts: one more output, log(atoms along the beam) at each column's centre, read
        # from the last features without changing them (see forward).
        if counts not in (0, 1, 2):
            raise ValueError(f"counts must be 0, 1 or 2, not {counts}")
        self.counts = counts
        # A training choice, not architecture (inference is the same either way): whether the
        # count branch's loss trains the encoder it shares with the column map.
        self.counts_train_encoder = False
        if counts == 2:  # its own decoder, the column decoders' shapes (without refinement)
            self.count_decoders = nn.ModuleList(
                _block(channels[level + 1] + channels[level], channels[level])
                for level in reversed(range(depth)))
        if counts:
            self.count_head = nn.Sequential(
                nn.Conv2d(channels[0], channels[0], 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(channels[0], 1, 1))
            nn.init.constant_(self.count_head[-1].bias, 1.5)  # about 4-5 atoms to start
        # Set by prepare_for_inference once it has checked that every level's FiLM can be
        # folded into the level's last convolution.
        self.film_folded = False
        if conditions:  # one per encoder, the bottleneck and one per decoder
            widths = [*channels[:-1], channels[-1], *reversed(channels[:-1])]
            self.film = nn.ModuleList(ConditionFiLM(conditions, width) for width in widths)

    def forward(self, images: torch.Tensor, conditions: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Map (batch, in_channels, H, W) images to (batch, out_channels, H, W) logits.

        `conditions` is a (batch, conditions) tensor for a network built with conditions;
        left out, every condition is unknown (zeros).
        """
        if not self.conditions:
            return self._forward_levels(images, _run_layers)
        if conditions is None:
            conditions = images.new_zeros((images.shape[0], self.conditions))
        if self.film_folded and not self.training:
            terms = self._folded_film_terms(conditions, images.shape[0])
            if terms is not None:
                return self._forward_film_folded(images, terms)
        films = iter(self.film)
        return self._forward_levels(
            images, lambda layers, features: next(films)(_run_layers(layers, features),
                                                          conditions))

    def _forward_levels(self, images: torch.Tensor,
                        level: Callable[[Sequence[nn.Module], torch.Tensor], torch.Tensor]
                        ) -> torch.Tensor:
        """The U-Net's path, with ``level(layers, features)`` running each level's layers.

        The levels, in order: each encoder, the bottleneck with its context blocks, each
        decoder (after its first convolution where that is a :class:`SplitInputConv`).
        """
        skips = []
        features = images
        for encoder in self.encoders:
            features = level(encoder, features)
            skips.append(features)
            features = self.pool(features)
        if len(self.context):
            features = level(self.context, self.bottleneck(features))
        else:
            features = level(self.bottleneck, features)
        if self.counts == 2:
            # The count branch reads the encoder's features without training them (detached),
            # so the column map is exactly the network's without it; unless training says
            # otherwise (counts_train_encoder: the encoder learns what tells heights apart).
            def shared(tensor: torch.Tensor) -> torch.Tensor:
                return tensor if self.counts_train_encoder else tensor.detach()

            counted = shared(features)
            for decoder, skip in zip(self.count_decoders, reversed(skips), strict=True):
                counted = _run_layers(decoder, torch.cat([self.upsample(counted), shared(skip)],
                                                          dim=1))
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            upsampled = self.upsample(features)
            if isinstance(decoder[0], SplitInputConv):  # prepared for inference
                features = level(list(decoder)[1:], decoder[0](upsampled, skip))
            else:
                features = level(decoder, torch.cat([upsampled, skip], dim=1))
        if self.counts == 2:
            return torch.cat([self.head(features), self.count_head(counted)], dim=1)
        if self.counts:
            # The count head learns from the column map's features but does not train them:
            # its early, large errors flowed back and erased the column map (validation F1
            # fell from 0.95 to 0 in 250 steps of fine-tuning).
            return torch.cat([self.head(features), self.count_head(features.detach())], dim=1)
        return self.head(features)

    def _folded_film_terms(self, conditions: torch.Tensor, batch: int
                           ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Every FiLM's (gain, shift) per channel, or None where they cannot be folded.

        Folding needs one condition vector for the whole batch of `batch` images and a positive
        gain (1 + scale) on every channel: then ``gain · relu(z) + shift = max(gain · z +
        shift, shift)``.
        """
        if batch == 0 or conditions.shape[0] != batch:  # (the unfolded path broadcasts)
            return None
        first = conditions[:1]
        if batch > 1 and not torch.equal(conditions, first.expand_as(conditions)):
            return None
        terms = []
        # At float32 or better even under autocast: the gains scale weights rounded once later.
        with torch.autocast(conditions.device.type, enabled=False):
            for film in self.film:
                linear = film.linear
                dtype = torch.promote_types(linear.weight.dtype, torch.float32)
                both = functional.linear(first.to(dtype), linear.weight.to(dtype),
                                         linear.bias.to(dtype))
                scale, shift = both[0].chunk(2)
                terms.append((1 + scale, shift))
            if not bool(torch.cat([gain for gain, _ in terms]).gt(0).all()):  # one sync on GPU
                return None
        return terms

    def start_count_branch(self) -> bool:
        """Copy the column decoders' weights into the count branch's; False without one.

        A warm start: the column decoders already turn the encoder's features into columns;
        the count branch then learns their heights.
        """
        if self.counts != 2:
            return False
        for source, target in zip(self.decoders, self.count_decoders, strict=True):
            target.load_state_dict({name: value for name, value in source.state_dict().items()
                                    if name in target.state_dict()})
        return True

    def _forward_film_folded(self, images: torch.Tensor,
                             terms: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """:meth:`forward` with each FiLM folded into the convolution before it (inference)."""
        terms = iter(terms)
        return self._forward_levels(
            images, lambda layers, features: _run_film_folded(layers, features, *next(terms)))


def _run_layers(layers: Sequence[nn.Module], features: torch.Tensor) -> torch.Tensor:
    """The layers one after the other."""
    for layer in layers:
        features = layer(features)
    return features


def _film_tail(layers: Sequence[nn.Module]
               ) -> tuple[list[nn.Module], list[nn.Module], nn.Conv2d, bool] | None:
    """How a level ends, for :func:`_run_film_folded`; None where it cannot fold a FiLM.

    A level must end as :func:`prepare_for_inference` leaves conv, batch norm, ReLU: conv
    (with bias), identity, ReLU; or in a residual block whose body ends with conv, identity.

    Returns
    -------
    tuple
        The layers before the ending; the residual block's body before its last convolution
        (empty without a block); that convolution; whether the level ends in a residual block.
    """
    layers = list(layers)
    residual = bool(layers) and isinstance(layers[-1], ResidualBlock)
    if residual:  # relu(x + body(x)), the ReLU in the block's forward
        before, body = layers[:-1], list(layers[-1].body)
        inner, ending = body[:-2], body[-2:]
    else:
        before, inner, ending = layers[:-3], [], layers[-3:]
        if len(ending) < 3 or not isinstance(ending[2], nn.ReLU):
            return None
    if len(ending) < 2:
        return None
    conv, norm = ending[:2]
    if not (type(conv) is nn.Conv2d and conv.bias is not None
            and conv.padding_mode == "zeros"  # what functional.conv2d does
            and isinstance(norm, nn.Identity)):
        return None
    return before, inner, conv, residual


def _run_film_folded(layers: Sequence[nn.Module], features: torch.Tensor, gain: torch.Tensor,
                     shift: torch.Tensor) -> torch.Tensor:
    """``gain · layers(features) + shift`` per channel, where the layers end in a ReLU.

    With gain > 0, ``gain · relu(z) + shift = max(gain · z + shift, shift)``: the last
    convolution gets its weights times the gain and its bias times the gain plus the shift, and
    the ReLU and the FiLM's pass over the features become one clamp (saves a pass per level).
    The level must have the shape :func:`_film_tail` accepts.
    """
    before, inner, conv, residual = _film_tail(layers)
    features = _run_layers(before, features)
    weight = (conv.weight * gain[:, None, None, None]).to(conv.weight.dtype)
    bias = (conv.bias * gain + shift).to(conv.bias.dtype)
    out = functional.conv2d(_run_layers(inner, features), weight, bias, conv.stride,
                            conv.padding, conv.dilation, conv.groups)
    gain = gain.to(out.dtype)[None, :, None, None]
    shift = shift.to(out.dtype)[None, :, None, None]
    if residual:
        out.addcmul_(features, gain)
    return out.clamp_min_(shift)


class SplitInputConv(nn.Module):
    """A convolution of two concatenated inputs, as two convolutions whose outputs are summed.

    ``conv(cat([upsampled, skip]))`` without writing the concatenated copy (made by
    :func:`prepare_for_inference`; inference only).
    """

    def __init__(self, conv: nn.Conv2d, first_channels: int) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("SplitInputConv splits plain convolutions only (groups 1, zero "
                             "padding)")

        @torch.no_grad()
        def part(channels: slice, bias: bool) -> nn.Conv2d:
            weight = conv.weight[:, channels]
            piece = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size,
                              conv.stride, conv.padding, conv.dilation, bias=bias)
            piece.weight.copy_(weight)
            if bias and conv.bias is not None:
                piece.bias.copy_(conv.bias)
            elif bias:
                nn.init.zeros_(piece.bias)
            return piece.to(conv.weight.device, conv.weight.dtype).eval()

        self.first = part(slice(None, first_channels), True)
        self.second = part(slice(first_channels, None), False)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``conv(cat([first, second], dim=1))``."""
        return self.first(first).add_(self.second(second))


@torch.no_grad()
def prepare_for_inference(network: nn.Module) -> nn.Module:
    """Make a trained network faster to run, in place; it gives the same maps (to rounding).

    Every batch norm that follows a convolution is folded into it (in eval mode a batch norm is
    a fixed per-channel scale and shift, so the pair is one convolution with a bias), and a
    U-Net's decoders get a :class:`SplitInputConv` instead of concatenating their inputs. Each
    saves one pass over the features: together 10-15 % of a 768² tile's time on a 2-core CPU.
    In a U-Net with imaging conditions, each level's scale-and-shift (FiLM) is then folded into
    the level's last convolution when the network runs (see :meth:`UNet._folded_film_terms`):
    another pass per level, 8-13 % of a 1024² frame's time end to end. The result is for
    inference only: the batch norms become :class:`torch.nn.Identity`.

    Parameters
    ----------
    network : torch.nn.Module
        A network in eval mode (its batch norms' running statistics are used).

    Returns
    -------
    torch.nn.Module
        The same network, changed in place.
    """
    if network.training:
        raise ValueError("prepare_for_inference needs a network in eval mode")
    for sequence in [m for m in network.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(sequence) - 1):
            conv, norm = sequence[index], sequence[index + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    and norm.affine and norm.track_running_stats):
                continue  # (a batch norm without scale or running statistics stays as it is)
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                               conv.stride, conv.padding, conv.dilation, conv.groups, bias=True,
                               padding_mode=conv.padding_mode
                               ).to(conv.weight.device, conv.weight.dtype)
            folded.weight.copy_(conv.weight * scale[:, None, None, None])
            folded.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
            sequence[index], sequence[index + 1] = folded.eval(), nn.Identity()
    if isinstance(network, UNet):
        for decoder in network.decoders:
            if isinstance(decoder[0], SplitInputConv):  # prepared before
                continue
            # The skip connection has as many channels as the decoder puts out.
            upsampled_channels = decoder[0].in_channels - decoder[0].out_channels
            decoder[0] = SplitInputConv(decoder[0], upsampled_channels)
        if network.conditions:
            last_low = network.context if len(network.context) else network.bottleneck
            levels = [*network.encoders, last_low, *(list(d)[1:] for d in network.decoders)]
            network.film_folded = all(_film_tail(level) is not None for level in levels)
    return network
