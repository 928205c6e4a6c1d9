"""Resuming a training run from its checkpoint, with a longer or changed schedule."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_tem_atoms.errors import TEMAtomsError  # noqa: E402
from napari_tem_atoms.training.train import resume, save_checkpoint  # noqa: E402


def _run(learning_rate: float, steps: int):
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 1)
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate,
                                                    total_steps=steps)
    return network, optimiser, scheduler


def _train(network, optimiser, scheduler, steps: int) -> None:
    for _ in range(steps):
        optimiser.zero_grad()
        network(torch.ones(2, 3)).sum().backward()
        optimiser.step()
        scheduler.step()


def test_lengthened_run_follows_the_new_schedule_and_learning_rate(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    network, optimiser, scheduler = _run(1e-3, steps=4)
    _train(network, optimiser, scheduler, 4)
    save_checkpoint(checkpoint, network, optimiser, scheduler, 4)

    messages = []
    network, optimiser, scheduler = _run(1e-2, steps=10)
    assert resume(checkpoint, network, optimiser, scheduler, 10, messages.append) == 4
    assert "schedule re-laid over 10 steps (the checkpoint planned 4)" in messages
    # Where a fresh 10-step schedule at the new rate is after 4 steps, not the old rate's.
    _, reference_optimiser, reference = _run(1e-2, steps=10)
    for _ in range(4):
        reference_optimiser.step()
        reference.step()
    assert optimiser.param_groups[0]["lr"] == pytest.approx(
        reference_optimiser.param_groups[0]["lr"])
    assert optimiser.param_groups[0]["max_lr"] == pytest.approx(1e-2)
    assert optimiser.state  # the moments of AdamW came back with the checkpoint


def test_same_length_continues_the_saved_schedule(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    network, optimiser, scheduler = _run(1e-3, steps=8)
    _train(network, optimiser, scheduler, 3)
    saved_lr = optimiser.param_groups[0]["lr"]
    save_checkpoint(checkpoint, network, optimiser, scheduler, 3)
    network, optimiser, scheduler = _run(1e-3, steps=8)
    assert resume(checkpoint, network, optimiser, scheduler, 8, print) == 3
    assert optimiser.param_groups[0]["lr"] == pytest.approx(saved_lr)
    # A new learning rate with the same length: the saved schedule goes on, and it says so.
    messages = []
    network, optimiser, scheduler = _run(5e-3, steps=8)
    assert resume(checkpoint, network, optimiser, scheduler, 8, messages.append) == 3
    assert optimiser.param_groups[0]["lr"] == pytest.approx(saved_lr)
    assert any("(learning rate 0.001) goes on" in m for m in messages), messages


def test_a_checkpoint_beyond_the_configured_steps_is_refused(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    network, optimiser, scheduler = _run(1e-3, steps=6)
    _train(network, optimiser, scheduler, 6)
    save_checkpoint(checkpoint, network, optimiser, scheduler, 6)
    with pytest.raises(TEMAtomsError, match="beyond the 4 steps"):
        resume(checkpoint, *_run(1e-3, steps=4), 4, print)
