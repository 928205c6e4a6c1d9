"""Detection core: rescaling, tiling, peaks, the registry, and clear errors on bad input."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from napari_tem_atoms import TEMAtomsError
from napari_tem_atoms.analysis import detect_atoms, find_peaks
from napari_tem_atoms.analysis.detect import _local_maxima, rescale_to_sampling
from napari_tem_atoms.models import (
    LoadedModel,
    load_model,
    model_metadata,
    registry,
    save_model,
)
from napari_tem_atoms.models.registry import REGISTRY, ModelEntry
from napari_tem_atoms.models.unet import SplitInputConv, UNet, prepare_for_inference


class BrightSpots(nn.Module):
    """A stand-in network that draws the (normalised) image itself as the column map."""

    depth = 2

    def __init__(self, peak: float):
        super().__init__()
        self.head = nn.Conv2d(1, 1, 1)
        self.peak = peak  # normalised value of a column's centre

    def forward(self, images):
        probability = torch.clamp(0.9 * images / self.peak, 1e-4, 0.95)
        return torch.log(probability / (1 - probability))


def _fake_model(peak: float = 4.0, sampling: float = 0.2) -> LoadedModel:
    return LoadedModel(network=BrightSpots(peak).eval(), description={"sampling": sampling},
                       device="cpu", name="bright-spots")


def _blobs(shape, positions, sigma_px):
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    image = np.zeros(shape)
    for py, px in positions:
        image += np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * sigma_px**2))
    return image.astype(np.float32)


@pytest.fixture
def lattice():
    """Columns on a 2.5 Å lattice at sub-pixel positions, imaged at 0.1 Å/px."""
    rng = np.random.default_rng(4)
    sampling = 0.1
    grid = np.stack(np.meshgrid(np.arange(30, 370, 25.0), np.arange(30, 370, 25.0),
                                indexing="ij"), -1).reshape(-1, 2)
    positions = grid + rng.uniform(-3, 3, size=grid.shape)
    return _blobs((400, 400), positions, 0.45 / sampling), positions, sampling


def _match(found, truth):
    distance = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=-1)
    return distance.min(axis=1), distance.min(axis=0)


def test_detection_finds_known_positions_within_a_tenth_of_a_pixel(lattice):
    image, truth, sampling = lattice
    atoms = detect_atoms(image, model=_fake_model(), sampling=sampling, threshold=0.5)
    found = atoms[["y", "x"]].to_numpy()
    _nearest_found, nearest_truth = _match(found, truth)
    assert len(found) == len(truth)
    assert nearest_truth.max() < 0.1  # input pixels, after rescaling 0.1 -> 0.2 Å/px and back
    assert atoms["frame"].eq(0).all()
    assert atoms.attrs["device"] == "cpu" and atoms.attrs["sampling"] == sampling


def test_tiling_does_not_change_the_result(lattice):
    image, _, sampling = lattice
    whole = detect_atoms(image, model=_fake_model(), sampling=sampling, tile_size=512)
    tiled = detect_atoms(image, model=_fake_model(), sampling=sampling, tile_size=80)
    np.testing.assert_allclose(tiled[["y", "x"]].to_numpy(), whole[["y", "x"]].to_numpy(),
                               atol=1e-4)


def test_mirror_averaging_maps_every_mirror_back_onto_the_image(lattice):
    # The stand-in network is pointwise: each mirrored map, flipped back, is the plain map, so
    # the average finds the same columns; a map not flipped back would move them.
    image, _, sampling = lattice
    plain = detect_atoms(image, model=_fake_model(), sampling=sampling)
    averaged = detect_atoms(image, model=_fake_model(), sampling=sampling, average_mirrors=True)
    np.testing.assert_allclose(averaged[["y", "x"]].to_numpy(), plain[["y", "x"]].to_numpy(),
                               atol=1e-4)
    assert averaged.attrs["average_mirrors"] and not plain.attrs["average_mirrors"]


def test_stacks_are_detected_frame_by_frame(lattice):
    image, _truth, sampling = lattice
    stack = np.stack([image, np.roll(image, 7, axis=1)])
    atoms = detect_atoms(stack, model=_fake_model(), sampling=sampling)
    assert sorted(atoms.frame.unique()) == [0, 1]
    shift = atoms[atoms.frame == 1].x.mean() - atoms[atoms.frame == 0].x.mean()
    assert shift == pytest.approx(7.0, abs=0.3)


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.7, 2.5])
def test_rescaling_keeps_pixel_centres(factor):
    image = _blobs((120, 150), [(40.3, 77.6)], 4.0)
    rescaled, used = rescale_to_sampling(image, 0.1, 0.1 * factor)
    assert used == pytest.approx(factor)
    peaks, _ = find_peaks(rescaled / rescaled.max(), 0.5, 3)
    np.testing.assert_allclose(peaks[0] * factor, [40.3, 77.6], atol=0.1)


@pytest.mark.parametrize(("shape", "factor"), [
    ((512, 512), 2.0), ((300, 410), 1.54), ((97, 100), 18.0), ((64, 80), 0.67), ((700, 33), 0.8),
])
def test_rescaling_equals_the_spline_transform_of_the_filtered_image(shape, factor):
    # The definition (anti-aliasing Gaussian, cubic B-splines, nearest edges) that the sparse
    # matrices compute faster: same numbers to float32 rounding, edges included.
    from scipy import ndimage

    rng = np.random.default_rng(1)
    image = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 100 + 1000
    image[:, :3] += 500  # a step at the edge
    image = image.astype(np.float32)
    rescaled, used = rescale_to_sampling(image, 0.1, 0.1 * factor)
    expected = image
    if used > 1:
        expected = ndimage.gaussian_filter(image, (used - 1) / 2, mode="nearest")
    out_shape = tuple(int(np.floor((n - 1) / used)) + 1 for n in shape)
    expected = ndimage.affine_transform(expected, [used, used], output_shape=out_shape,
                                        order=3, mode="nearest")
    assert rescaled.dtype == np.float32 and rescaled.shape == out_shape
    np.testing.assert_allclose(rescaled, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_peaks_are_refined_to_sub_pixel():
    heat = _blobs((40, 40), [(12.3, 20.8)], 2.0)
    positions, heights = find_peaks(heat, 0.5, 3)
    np.testing.assert_allclose(positions[0], [12.3, 20.8], atol=0.05)
    assert heights[0] == pytest.approx(1.0, abs=0.05)


def _plateau_map() -> np.ndarray:
    heat = np.zeros((50, 50), np.float32)
    heat[10:14, 10:14] = 1.0  # a saturated column: 16 equal maxima
    heat[30, 30] = heat[30, 31] = 0.9  # two equal neighbours
    heat[40:42, 5] = 0.7
    heat[45, 45] = heat[45, 48] = 0.8  # equal, exactly 3 px apart: both kept
    return heat


@pytest.mark.parametrize("heat", [
    _plateau_map(),
    np.random.default_rng(1).random((120, 90)).astype(np.float32),  # most pixels above 0.4
    np.round(np.random.default_rng(2).random((80, 80)), 1),  # many ties
    _blobs((96, 96), [(r, c) for r in range(6, 96, 11) for c in range(4, 96, 9)], 1.5),
    np.full((40, 40), 0.8, np.float32),  # constant: no peaks
])
@pytest.mark.parametrize(("threshold", "distance"), [(0.4, 3), (0.4, 1), (0.05, 3), (0.75, 5)])
def test_local_maxima_are_those_of_skimage(heat, threshold, distance):
    from skimage.feature import peak_local_max

    offsets = np.arange(-distance, distance + 1)
    disc = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= distance**2
    expected = peak_local_max(heat, min_distance=distance, threshold_abs=threshold,
                              footprint=disc, p_norm=2, exclude_border=False)
    np.testing.assert_array_equal(_local_maxima(heat, threshold, distance), expected)


def test_a_column_on_the_diagonal_is_not_suppressed_by_its_neighbour():
    # Two peaks 3 px apart along the diagonal each way (4.2 px): outside a 3-px disc, inside a
    # 3-px square, which lost the weaker one (a STEM dumbbell).
    heat = np.zeros((20, 20), np.float32)
    heat[5, 5], heat[8, 8] = 0.9, 0.7
    np.testing.assert_array_equal(_local_maxima(heat, 0.5, 3), [[5, 5], [8, 8]])


@pytest.mark.parametrize(("image", "sampling", "words"), [
    (np.full((64, 64), np.nan), 0.1, "NaN"),
    (np.ones((64, 64)), 0.1, "constant"),
    (np.ones((256, 256)), 0.12, "constant"),  # rescaled: float32 rounding is not contrast
    (np.random.default_rng(0).random((10, 10)), 0.1, "too small"),
    (np.zeros((2, 2, 64, 64)), 0.1, "4-D"),
    (np.zeros(64), 0.1, "1-D"),
    (np.random.default_rng(0).random((64, 64)), None, "pixel size of the image is not known"),
    (np.random.default_rng(0).random((64, 64)), -1.0, "must be positive"),
])
def test_bad_input_gives_clear_errors(image, sampling, words):
    with pytest.raises(TEMAtomsError, match=words):
        detect_atoms(image, model=_fake_model(), sampling=sampling)


def test_sampling_outside_the_trained_range_warns(lattice):
    image, _, _ = lattice
    with pytest.warns(UserWarning, match="outside the trained range"):
        detect_atoms(image, model=_fake_model(), sampling=1.0)


def test_weights_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    network = UNet(base_channels=4, depth=2).eval()
    metadata = {"architecture": {"in_channels": 1, "out_channels": 1, "base_channels": 4,
                                 "depth": 2}, "sampling": 0.2, "classes": ["column"]}
    path = tmp_path / "tiny.safetensors"
    digest = save_model(path, network, metadata)
    loaded = load_model(path, device="cpu")
    assert loaded.sha256 == digest and loaded.sampling == 0.2
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.network(x), network(x))


def test_prepared_network_gives_the_same_maps():
    torch.manual_seed(0)
    network = UNet(base_channels=4, depth=2, context=1, conditions=4)
    optimiser = torch.optim.SGD(network.parameters(), lr=0.1)
    for _ in range(3):  # batch-norm statistics and condition layers away from their start
        optimiser.zero_grad()
        network(torch.randn(2, 1, 32, 32), torch.randn(2, 4)).square().mean().backward()
        optimiser.step()
    network.eval()
    images, conditions = torch.randn(2, 1, 40, 48), torch.randn(2, 4)
    with torch.inference_mode():
        expected = network(images, conditions)
        prepared = prepare_for_inference(network)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
        assert all(isinstance(decoder[0], SplitInputConv) for decoder in prepared.decoders)
        torch.testing.assert_close(prepared(images, conditions), expected, rtol=0, atol=1e-4)
        prepare_for_inference(prepared)  # a second time changes nothing
        torch.testing.assert_close(prepared(images, conditions), expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        prepare_for_inference(UNet(base_channels=4, depth=2))
    double = prepare_for_inference(UNet(base_channels=4, depth=2).double().eval())
    assert double(torch.randn(1, 1, 16, 16, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("context", [0, 2])
def test_prepared_network_folds_the_condition_layers_into_its_convolutions(monkeypatch,
                                                                            context):
    torch.manual_seed(1)
    network = UNet(base_channels=4, depth=2, context=context, conditions=4, refine=1)
    for module in network.modules():  # trained-looking: no identity blocks or FiLMs
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.bias, 0, 0.2)
            nn.init.normal_(module.running_mean, 0, 0.2)
            nn.init.uniform_(module.running_var, 0.5, 2)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.1)
            nn.init.normal_(module.bias, 0, 0.1)
    network.eval()
    images, told = torch.randn(3, 1, 40, 48), torch.tensor([0.5, 1.0, -0.3, 1.0])
    same, mixed = told.expand(3, 4), torch.randn(3, 4)
    with torch.inference_mode():
        expected = {name: network(images, c) for name, c in
                    [("unknown", None), ("same", same), ("mixed", mixed)]}
        prepared = prepare_for_inference(network)
        assert prepared.film_folded
        calls = []
        folded = UNet._forward_film_folded
        monkeypatch.setattr(UNet, "_forward_film_folded",
                            lambda self, *args: calls.append(1) or folded(self, *args))
        for name, conditions in [("unknown", None), ("same", same), ("mixed", mixed)]:
            torch.testing.assert_close(prepared(images, conditions), expected[name], rtol=0,
                                       atol=1e-4)
        # Folded for one condition vector per batch; a batch mixing them takes the long way.
        assert len(calls) == 2
        # As detection runs it on the CPU: channels-last and bfloat16 (rounded in other places).
        last = images.contiguous(memory_format=torch.channels_last)
        prepared.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = prepared(last, same).float()
        assert len(calls) == 3
        torch.testing.assert_close(rounded, expected["same"], rtol=0, atol=0.1)
        # A bfloat16 network without autocast; and one image given several identical rows.
        assert prepared.to(torch.bfloat16)(images.bfloat16(), same).dtype == torch.bfloat16
        assert len(calls) == 4
        prepared.float()
        assert prepared(images[:1], same).shape[0] == 3  # broadcast as the unfolded path does
        assert len(calls) == 4
        # A gain 1 + scale <= 0 cannot be folded (relu and the scale do not commute).
        prepared.film[2].linear.bias.data[0] = -3.0
        network_path = prepared(images[:1], told[None])
        assert len(calls) == 4
        prepared.film_folded = False
        torch.testing.assert_close(network_path, prepared(images[:1], told[None]))


def test_a_prepared_network_is_not_saved_as_weights(tmp_path):
    prepared = prepare_for_inference(UNet(base_channels=4, depth=2).eval())
    with pytest.raises(TEMAtomsError, match="prepared for inference"):
        save_model(tmp_path / "prepared.safetensors", prepared, {})
    assert not list(tmp_path.iterdir())


def test_missing_weights_and_unknown_models_are_explained(tmp_path):
    with pytest.raises(TEMAtomsError, match="no such weights file"):
        load_model(tmp_path / "absent.safetensors")
    with pytest.raises(TEMAtomsError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not weights")
    with pytest.raises(TEMAtomsError, match="not a napari-tem-atoms weights file"):
        load_model(damaged)


def test_registered_model_with_a_wrong_hash_is_refused(monkeypatch):
    entry = REGISTRY["au-hrtem"]
    monkeypatch.setitem(REGISTRY, "au-hrtem", ModelEntry(entry.name, entry.description,
                                                         entry.filename, "f" * 64))
    with pytest.raises(TEMAtomsError, match="does not match the registered"):
        load_model("au-hrtem")


def test_fetched_model_offline_says_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_TEM_ATOMS_CACHE", str(tmp_path))
    monkeypatch.setitem(REGISTRY, "remote", ModelEntry(
        "remote", "test", "remote.safetensors", "0" * 64, url="http://127.0.0.1:9/remote.safetensors"))
    with pytest.raises(TEMAtomsError, match=str(tmp_path / "models" / "remote.safetensors")):
        load_model("remote")


TINY = {"architecture": {"in_channels": 1, "out_channels": 1, "base_channels": 4, "depth": 2},
        "sampling": 0.2, "classes": ["column"]}


@pytest.mark.parametrize(("change", "words"), [
    ({"architecture": {**TINY["architecture"], "dropout": 1}},
     "its architecture has settings this version does not know: dropout"),
    ({"architecture": None}, "its metadata has no 'architecture'"),
    ({"architecture": [1, 4, 2]}, "its metadata's 'architecture' is not a table"),
    ({"architecture": {**TINY["architecture"], "depth": "2"}},
     "in its architecture, depth = '2': not a whole number of 0 or more"),
    ({"sampling": 0}, "its metadata's 'sampling' (the pixel size the network expects, Å/px) is "
                      "0, not a number above 0"),
    ({"sampling": None}, "its metadata has no 'sampling' (the pixel size the network expects"),
    ({"classes": "column"}, "its metadata's 'classes' is 'column', not a list of names"),
    ({"threshold": 35}, "its metadata's 'threshold' is 35, not a confidence between 0 and 1"),
])
def test_weights_with_unusable_metadata_are_refused_in_words(tmp_path, change, words):
    metadata = {key: value for key, value in {**TINY, **change}.items() if value is not None}
    path = tmp_path / "odd.safetensors"
    save_model(path, UNet(base_channels=4, depth=2), metadata)
    expected = re.escape(f"{path}: {words}")
    with pytest.raises(TEMAtomsError, match=expected):
        model_metadata(path)
    with pytest.raises(TEMAtomsError, match=expected):
        load_model(path, device="cpu", engine="torch")


def test_weights_that_do_not_fit_their_architecture_are_refused_in_words(tmp_path):
    path = tmp_path / "other.safetensors"
    save_model(path, UNet(base_channels=8, depth=2),
               {**TINY, "architecture": {**TINY["architecture"], "depth": 3}})
    with pytest.raises(TEMAtomsError, match=re.escape(
            f"{path}: the weights do not fit the architecture its metadata declares")):
        load_model(path, device="cpu", engine="torch")


def test_a_damaged_cached_model_is_removed_and_said_so(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_TEM_ATOMS_CACHE", str(tmp_path / "cache"))
    good = tmp_path / "good.safetensors"
    digest = save_model(good, UNet(base_channels=4, depth=2).eval(), TINY)
    monkeypatch.setitem(REGISTRY, "remote", ModelEntry(
        "remote", "test", "remote.safetensors", digest,
        url="https://example.invalid/remote.safetensors"))
    cached = tmp_path / "cache" / "models" / "remote.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good.read_bytes()[:-8] + b"tampered")
    present_when_fetched = []

    def offline(url, sha256, filename, kind):  # never contacts the URL
        present_when_fetched.append(cached.exists())
        raise TEMAtomsError(f"{filename} could not be downloaded from {url}")

    monkeypatch.setattr(registry, "fetch_file", offline)
    with pytest.raises(TEMAtomsError) as caught:
        load_model("remote", device="cpu", engine="torch")
    message = str(caught.value)
    assert message.startswith(f"{cached}: the cached weights of model 'remote' have SHA-256 ")
    assert f"which does not match the registered {digest[:12]}" in message
    assert "was removed; it will be fetched again from https://example.invalid/" in message
    assert present_when_fetched == [False] and not cached.exists()

    def online(url, sha256, filename, kind):
        shutil.copyfile(good, cached)
        return cached

    monkeypatch.setattr(registry, "fetch_file", online)
    cached.write_bytes(b"replaced")
    with pytest.warns(UserWarning, match="was removed and fetched again"):
        loaded = load_model("remote", device="cpu", engine="torch")
    assert loaded.sha256 == digest
