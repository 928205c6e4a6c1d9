"""The U-Net and the training-sample draw, without abTEM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tem_atoms.models.unet import UNet
from napari_tem_atoms.training.data import SampleMaker


def test_new_context_blocks_leave_a_trained_network_unchanged():
    torch.manual_seed(0)
    plain, widened = UNet(depth=2), UNet(depth=2, context=2)
    missing, unexpected = widened.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(name.startswith("context.") for name in missing)
    plain.eval(), widened.eval()
    images = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        assert torch.equal(plain(images), widened(images))
    assert sum(p.numel() for p in widened.parameters()) < 2_000_000


def test_new_refine_blocks_leave_a_trained_network_unchanged_and_are_trained():
    from napari_tem_atoms.models.unet import prepare_for_inference

    torch.manual_seed(0)
    plain, refined = UNet(depth=2, context=1), UNet(depth=2, context=1, refine=1)
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    # Only the new blocks are missing: every earlier layer kept its name.
    assert unexpected == [] and missing
    assert {name.split(".")[:3] == ["encoders", "1", "6"] or
            name.split(".")[:3] == ["decoders", "0", "6"] for name in missing} == {True}
    plain.eval(), refined.eval()
    images = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        assert torch.equal(plain(images), refined(images))
        for block in (refined.encoders[1][-1], refined.decoders[-2][-1]):  # away from identity
            torch.nn.init.normal_(block.body[-1].weight)
        trained = refined(images)
        assert not torch.allclose(trained, plain(images))
        # Folding for inference reaches the new blocks' batch norms too.
        prepared = prepare_for_inference(refined)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
        assert torch.allclose(prepared(images), trained, atol=1e-4)
    with pytest.raises(ValueError, match="depth >= 2"):
        UNet(depth=1, refine=1)


@pytest.mark.parametrize(("model", "message"), [
    ("depth = 1\nrefine = 1", "refine needs depth >= 2"),
    ("refine = -1", "refine = -1 is too small"),
    ("depth = 0", "depth = 0 is too small"),
])
def test_a_configuration_with_an_impossible_network_is_refused_when_read(tmp_path, model,
                                                                         message):
    from napari_tem_atoms.training.config import load_config

    config = tmp_path / "run.toml"
    config.write_text(f"[model]\n{model}\n")
    with pytest.raises(ValueError, match=message) as raised:
        load_config(config)
    assert str(config) in str(raised.value)


def test_context_blocks_widen_the_receptive_field():
    """A change at one corner reaches the far corner only through the context blocks."""
    torch.manual_seed(0)
    images = torch.randn(1, 1, 128, 128)
    changed = images.clone()
    changed[0, 0, 2, 2] = 10.0
    for context, reaches in ((0, False), (2, True)):
        network = UNet(depth=3, context=context).eval()
        for block in network.context:  # move away from the identity start
            torch.nn.init.normal_(block.body[-1].weight)
        with torch.no_grad():
            difference = (network(changed) - network(images)).abs()[0, 0, 70:, 70:].max()
        assert bool(difference > 0) is reaches


@pytest.mark.parametrize("balance", [False, True])
def test_zone_axes_are_drawn_equally_often_when_balanced(balance):
    zones = ["[100]"] * 2 + ["[110]"] * 6 + ["five-fold"] * 2
    particles = [{"info": np.array(json.dumps({"zone_axis": z}))} for z in zones]
    maker = SampleMaker(particles, [], 0.2, balance_zones=balance)
    rng = np.random.default_rng(0)
    drawn = [zones[maker.draw_particle(rng)] for _ in range(3000)]
    share_100 = drawn.count("[100]") / len(drawn)
    assert share_100 == pytest.approx(1 / 3 if balance else 0.2, abs=0.03)


def test_the_model_card_says_how_a_two_stage_model_is_reproduced():
    from napari_tem_atoms.training.card import _receptive_field, _reproduce

    assert _receptive_field({"depth": 3}) == 89
    assert _receptive_field({"depth": 3, "context": 2}) == 89 + 2 * 12 * 8
    assert _receptive_field({"depth": 3, "refine": 1}) == 89 + 16
    one = "\n".join(_reproduce({"name": "au-hrtem", "training": {}}))
    assert "configs/au-hrtem.toml" in one and "stage1" not in one
    two = "\n".join(_reproduce({"name": "au-hrtem", "training": {"init_from": "a.safetensors"}}))
    assert two.index("configs/au-hrtem-stage1.toml") < two.index("train configs/au-hrtem.toml")
    assert "build/au-hrtem/finetune/au-hrtem.safetensors" in two


def test_the_card_follows_a_chain_of_training_stages(tmp_path):
    from napari_tem_atoms.training.card import _reproduce, training_stages

    (tmp_path / "m-stage1.toml").write_text('output = "out/one"\n')
    (tmp_path / "m-stage2.toml").write_text(
        'output = "out/two"\n[train]\ninit_from = "out/one/m.safetensors"\n')
    (tmp_path / "m.toml").write_text(
        'output = "out/three"\n[train]\ninit_from = "out/two/m.safetensors"\n')
    (tmp_path / "other.toml").write_text('[data]\ntrain_flakes = 3\n')  # another kind of run
    stages = training_stages(tmp_path / "m.toml")
    assert [(Path(c).name, o) for c, o in stages] == [
        ("m-stage1.toml", "one"), ("m-stage2.toml", "two"), ("m.toml", "three")]
    text = "\n".join(_reproduce({"name": "m", "training": {"init_from": "m.safetensors"}},
                                stages))
    assert "stage 3: from stage 2's weights" in text and "build/m/three/m.safetensors" in text


def test_a_regenerated_card_keeps_its_hand_written_sections(tmp_path):
    from napari_tem_atoms.training.card import (
        HAND_WRITTEN_END,
        HAND_WRITTEN_START,
        keep_hand_written,
    )

    generated = "# Card\n\n## Scores\n\nnew table\n\n## Speed (end to end)\n\n2.5 fps\n"
    card = tmp_path / "card.md"
    assert keep_hand_written(generated, card) == generated  # no card yet
    card.write_text(f"# Card\n\nold table\n\n{HAND_WRITTEN_START}\n## Stage 7\n\nwhat it "
                    f"changed\n{HAND_WRITTEN_END}\n\n## Speed\n\n1.8 fps\n")
    kept = keep_hand_written(generated, card)
    assert "old table" not in kept and "1.8 fps" not in kept and "new table" in kept
    assert kept.index("new table") < kept.index("## Stage 7") < kept.index("## Speed (end")
    assert kept.count(HAND_WRITTEN_START) == kept.count(HAND_WRITTEN_END) == 1
    assert keep_hand_written("# Species card\n", card).endswith(f"{HAND_WRITTEN_END}\n")


def test_the_card_lists_the_hard_regimes_of_old_and_new_weights():
    from napari_tem_atoms.models.registry import model_metadata
    from napari_tem_atoms.training.card import _regime, model_card

    stage3 = {"zone_axis": "[100]", "defocus": [-90.0, 40.0], "fraction": 0.25}
    assert _regime(stage3) == "25% a [100] particle at defocus -90 … 40 Å"
    anywhere = {"zone_axis": "any", "defocus": [120.0, 200.0], "fraction": 0.1}
    assert _regime(anywhere) == "10% a particle of any zone axis at defocus 120 … 200 Å"
    metadata = model_metadata("au-hrtem")
    training = {k: v for k, v in metadata["training"].items()
                if k not in ("hard_regime", "hard_regimes")}
    assert "Hard regimes" not in model_card({**metadata, "training": training}, "0" * 64)
    for stored in ({"hard_regime": stage3}, {"hard_regimes": [stage3, anywhere]}):
        card = model_card({**metadata, "training": {**training, **stored}}, "0" * 64)
        regimes = card[card.index("- Hard regimes"):].splitlines()[0]
        assert "25% a [100] particle" in regimes
        assert ("10% a particle of any zone axis" in regimes) is ("hard_regimes" in stored)
