"""Sample data: the synthetic stack, and fetched samples through a loopback server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from napari_tem_atoms import TEMAtomsError, fetch_sample, synthetic_gold_stack
from napari_tem_atoms._cache import CACHE_ENV, cache_dir
from napari_tem_atoms.samples import RemoteSample


def test_synthetic_stack_is_deterministic_and_calibrated():
    first = synthetic_gold_stack(n_frames=3, shape=(128, 128), particle_radius=6.0, seed=3)
    second = synthetic_gold_stack(n_frames=3, shape=(128, 128), particle_radius=6.0, seed=3)
    assert first.images.shape == (3, 128, 128)
    assert first.images.dtype == np.float32
    np.testing.assert_array_equal(first.images, second.images)
    assert first.sampling == pytest.approx(0.12)
    assert set(first.columns.columns) == {"frame", "y", "x", "site", "n_atoms"}


def test_synthetic_columns_sit_on_bright_spots_and_follow_the_drift():
    stack = synthetic_gold_stack(n_frames=4, shape=(192, 192), particle_radius=8.0, dose=1e5,
                                 drift_per_frame=2.0, seed=1)
    last = stack.columns[stack.columns.frame == 3]
    rows, cols = np.round(last.y).astype(int), np.round(last.x).astype(int)
    on_columns = stack.images[3][rows, cols].mean()
    beside_columns = stack.images[3][rows, cols + 5].mean()  # 0.6 Å to the side
    assert on_columns > 1.05 * beside_columns
    first_site = stack.columns[(stack.columns.frame == 0)].set_index("site")
    last_site = last.set_index("site")
    common = first_site.index.intersection(last_site.index)
    shift = (last_site.loc[common, ["y", "x"]].to_numpy()
             - first_site.loc[common, ["y", "x"]].to_numpy())
    np.testing.assert_allclose(shift, np.broadcast_to(stack.drift[3], shift.shape), atol=1e-9)


def test_surface_columns_come_and_go():
    stack = synthetic_gold_stack(n_frames=40, shape=(256, 256), particle_radius=10.0, seed=2)
    surface = stack.sites[stack.sites.surface]
    bulk = stack.sites[~stack.sites.surface]
    assert (bulk.occupancy == 1.0).all()
    assert 0.5 < surface.occupancy.mean() < 0.95


@pytest.fixture
def loopback_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving `tmp_path/served`, stopped after the test."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def test_fetch_sample_downloads_once_checks_hash_and_caches(loopback_server, cache):
    served, url = loopback_server
    content = np.arange(12, dtype=np.float32).tobytes()
    (served / "frame.raw").write_bytes(content)
    sample = RemoteSample("test", f"{url}/frame.raw", hashlib.sha256(content).hexdigest(), "t")
    path = fetch_sample(sample)
    assert path == cache / "samples" / "frame.raw"
    assert path.read_bytes() == content
    (served / "frame.raw").unlink()  # the cached copy is used from now on
    assert fetch_sample(sample).read_bytes() == content


def test_fetch_sample_refuses_a_file_with_another_hash(loopback_server, cache):
    served, url = loopback_server
    (served / "frame.raw").write_bytes(b"tampered")
    sample = RemoteSample("test", f"{url}/frame.raw", "0" * 64, "t")
    with pytest.raises(TEMAtomsError, match="SHA-256 does not match"):
        fetch_sample(sample)
    assert not (cache / "samples" / "frame.raw").exists()


def test_fetch_sample_offline_says_where_to_put_the_file(cache):
    sample = RemoteSample("test", "http://127.0.0.1:9/frame.raw", "0" * 64, "t")
    with pytest.raises(TEMAtomsError) as error:
        fetch_sample(sample)
    assert str(cache / "samples" / "frame.raw") in str(error.value)
    assert CACHE_ENV in str(error.value)


def test_unknown_sample_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="registered samples"):
        fetch_sample("no-such-sample")


def test_cache_folder_follows_the_environment_variable(cache):
    assert cache_dir("models") == cache / "models"
    assert (cache / "models").is_dir()
