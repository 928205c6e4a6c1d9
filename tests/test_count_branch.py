"""The count branch (counts = 2): its own decoder on the encoder, the column map untouched."""

from __future__ import annotations

import pytest
import torch

from napari_tem_atoms.models.unet import UNet, prepare_for_inference


def _pair(**architecture):
    torch.manual_seed(0)
    plain = UNet(**architecture)
    counted = UNet(counts=2, **architecture)
    missing, unexpected = counted.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("count_") for name in missing)
    return plain.eval(), counted.eval()


@pytest.mark.parametrize("architecture", [
    {"base_channels": 4, "depth": 2},
    {"base_channels": 4, "depth": 3, "context": 1, "refine": 1, "conditions": 4},
])
def test_the_count_branch_leaves_the_column_map_as_it_was(architecture):
    plain, counted = _pair(**architecture)
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        columns, both = plain(images), counted(images)
    assert both.shape == (2, 2, 32, 32)
    torch.testing.assert_close(both[:, :1], columns)
    # Prepared for inference (batch norms folded, split decoders) it gives the same maps.
    with torch.no_grad():
        prepared = prepare_for_inference(counted)(images)
    torch.testing.assert_close(prepared, both, atol=1e-4, rtol=1e-4)


def test_the_count_loss_trains_the_branch_alone_and_starts_from_the_column_decoders():
    _, counted = _pair(base_channels=4, depth=2)
    assert counted.start_count_branch()
    for source, target in zip(counted.decoders, counted.count_decoders, strict=True):
        torch.testing.assert_close(source[0].weight, target[0].weight)
    counted.train()
    counted(torch.randn(2, 1, 16, 16))[:, 1].pow(2).mean().backward()
    assert all(p.grad is None or not p.grad.any() for n, p in counted.named_parameters()
               if not n.startswith("count_"))
    assert counted.count_head[-1].weight.grad.abs().sum() > 0
    assert counted.count_decoders[0][0].weight.grad.abs().sum() > 0
    assert not UNet(base_channels=4, depth=2, counts=1).start_count_branch()
    with pytest.raises(ValueError, match="counts must be"):
        UNet(base_channels=4, depth=2, counts=3)


def test_a_count_branch_told_to_trains_the_encoder_but_not_the_column_decoders():
    _, counted = _pair(base_channels=4, depth=2)
    counted.counts_train_encoder = True
    counted.train()
    counted(torch.randn(2, 1, 16, 16))[:, 1].pow(2).mean().backward()
    assert counted.encoders[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for n, p in counted.named_parameters()
               if n.startswith(("decoders.", "head.")))
