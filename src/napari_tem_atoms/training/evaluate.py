"""``tem-atoms evaluate``: score a model on freshly simulated images of held-out structures.

Images are formed from the validation particles (never used in training) with microscopes drawn
from the training envelope and a seed never used in training, then analysed by the full
inference path (:func:`~napari_tem_atoms.analysis.iter_detect_atoms`). The draws are paired:
image *i* has the same particle, support and microscope at every dose, so that rows differ by
the dose and its shot noise only. A classical peer (Gaussian-filtered local maxima) is tuned on
separate images at each dose and scored on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from ..analysis.detect import MIN_COLUMN_DISTANCE, iter_detect_atoms
from ..analysis.transfer import model_optics
from ..events import ignore, run
from ..simulation.microscope import MicroscopeEnvelope, MicroscopeSettings
from .data import SampleMaker
from .metrics import MatchCounts, match_columns

__all__ = ["HEIGHT_BINS", "IN_WINDOW", "TOLD", "ClassicalPeer", "evaluate",
           "evaluate_by_height", "told_conditions"]

#: Column heights (atoms along the beam) scored separately by :func:`evaluate_by_height`.
HEIGHT_BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 1000))

DEFAULT_DOSES = (10, 30, 100, 300, 1000, 3000, 10000)
#: Method of the rows where a model with condition inputs is told the microscope.
TOLD = "network, Cs and defocus given"
#: Method of the rows scoring the network (told nothing) on the images whose microscope
#: transfers every lowest-order reflection of the model's crystal (see analysis.transfer).
IN_WINDOW = "network, lattice transferred"


@dataclass(frozen=True)
class ClassicalPeer:
    """Gaussian-filtered local maxima: the usual hand-made column finder.

    The image is smoothed with a Gaussian of `sigma` [Å], normalised (zero mean, unit std),
    its contrast made positive at the columns (the polarity is given by the truth: an oracle
    advantage no real image offers), and local maxima above `threshold` at least 1.2 Å apart
    are the columns.
    """

    sigma: float
    threshold: float

    def maxima(self, image: np.ndarray, sampling: float, polarity: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """Column positions and the peak heights the threshold is compared with.

        Returns
        -------
        peaks : numpy.ndarray
            (N, 2) column positions (y, x) [px].
        values : numpy.ndarray
            (N,) the smoothed, normalised image at those positions.
        """
        from skimage.feature import peak_local_max

        smooth = ndimage.gaussian_filter(image.astype(np.float32), self.sigma / sampling)
        smooth = polarity * (smooth - smooth.mean()) / max(float(smooth.std()), 1e-12)
        distance = max(1, int(MIN_COLUMN_DISTANCE / sampling))
        peaks = peak_local_max(smooth, min_distance=distance, threshold_abs=self.threshold,
                               exclude_border=False)
        return peaks.astype(float), smooth[peaks[:, 0], peaks[:, 1]]

    def detect(self, image: np.ndarray, sampling: float, polarity: float) -> np.ndarray:
        """(N, 2) column positions (y, x) [px]."""
        return self.maxima(image, sampling, polarity)[0]


def _polarity(image: np.ndarray, columns_px: np.ndarray) -> float:
    """+1 when columns are brighter than the image mean, else -1 (from the truth)."""
    rows = np.clip(np.round(columns_px[:, 0]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(np.round(columns_px[:, 1]).astype(int), 0, image.shape[1] - 1)
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 2)
    return 1.0 if smooth[rows, cols].mean() >= smooth.mean() else -1.0


def told_conditions(settings: MicroscopeSettings, seed: int, index: int,
                    cs_error: float = 2e4, defocus_error: float = 30.0) -> tuple[float, float]:
    """Cs and defocus [Å] as an operator would give them for evaluation image `index`.

    Each is off by a uniform error of up to `cs_error` (2 µm) and `defocus_error` (30 Å),
    drawn from a stream of its own, so that the images are those of the untold rows.
    """
    rng = np.random.default_rng([seed, index, 7])
    return (settings.cs + rng.uniform(-cs_error, cs_error),
            settings.defocus + rng.uniform(-defocus_error, defocus_error))


def _images(maker: SampleMaker, envelope: MicroscopeEnvelope, dose: float, count: int,
            seed: int) -> list[tuple[np.ndarray, float, np.ndarray, MicroscopeSettings]]:
    images = []
    for index in range(count):
        # One stream per image, not per dose: the same particle and microscope at every dose.
        rng = np.random.default_rng([seed, index])
        settings = replace(envelope.draw(rng), dose=float(dose))
        sample = maker.make(rng, settings, particle_index=index % len(maker.particles))
        particle = maker.particles[index % len(maker.particles)]
        columns = np.array(particle["columns"], dtype=float)
        columns[:, :2] /= sample.recorded_sampling  # Å -> recorded pixels
        images.append((sample.recorded, sample.recorded_sampling, columns, settings))
    return images


PEER_SIGMAS = (0.3, 0.4, 0.5, 0.6, 0.8)  # Å
PEER_THRESHOLDS = tuple(np.round(np.arange(0.0, 6.01, 0.25), 2))  # z-scores of the smoothed image


def _tune_peer(images: list) -> ClassicalPeer:
    """The peer's best (sigma, threshold) on `images`, by F1 over the grid above."""
    best, best_f1 = ClassicalPeer(0.5, 1.0), -1.0
    for sigma in PEER_SIGMAS:
        # The maxima above a threshold are those above the lowest one with a high enough value
        # (a maximum is only ever suppressed by a stronger one), so find them once per sigma.
        lowest = ClassicalPeer(sigma, PEER_THRESHOLDS[0])
        found = [(*lowest.maxima(image, sampling, _polarity(image, columns)), sampling, columns)
                 for image, sampling, columns, _ in images]
        for threshold in PEER_THRESHOLDS:
            counts = MatchCounts()
            for peaks, values, sampling, columns in found:
                counts += match_columns(peaks[values > threshold], columns, sampling)
            if counts.f1 > best_f1:
                best, best_f1 = ClassicalPeer(sigma, float(threshold)), counts.f1
    return best


def _network_counts(loaded: Any, image: np.ndarray, sampling: float, columns: np.ndarray,
                    threshold: float | None, **conditions: float) -> MatchCounts:
    """The network's matches on one image, by the full inference path."""
    atoms = run(iter_detect_atoms(image, loaded, sampling=sampling, threshold=threshold,
                                  **conditions), on_event=ignore)  # scores, not notices
    detected = atoms[["y", "x"]].to_numpy()
    return match_columns(detected, columns, sampling)


def evaluate(
    model: str,
    particles: list[dict],
    carbons: list[dict],
    doses: Sequence[float] = DEFAULT_DOSES,
    images_per_dose: int = 96,
    seed: int = 20181000,
    envelope: MicroscopeEnvelope | None = None,
    threshold: float | None = None,
    support_probability: float = 0.5,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Precision, recall, F1 and position RMSE per dose, for the model and the classical peer.

    Parameters
    ----------
    model : str
        Registered model name or ``.safetensors`` path.
    particles, carbons : list of dict
        Held-out cached exit waves (the ``validation`` role of the cache).
    doses : sequence of float
        Electron doses [e/Å²].
    images_per_dose : int
        Images scored per dose (and as many more to tune the peer); image *i* shows the
        same particle under the same microscope at every dose.
    seed : int
        Seed of the evaluation draws (differs from every training seed).
    envelope : MicroscopeEnvelope, optional
        Microscope ranges (the training envelope by default); the dose is fixed per row.
    threshold : float, optional
        Network confidence threshold (default: the model's own).
    support_probability : float
        Chance of an amorphous carbon support.
    log : callable
        Receives one line per dose.

    Returns
    -------
    pandas.DataFrame
        Rows (method, dose) with precision, recall, f1, rmse_pm, columns (scored columns),
        images (scored images).
        Methods: ``"network"`` (told nothing about the microscope), ``"classical peer"`` and,
        for a model with condition inputs, :data:`TOLD`: the same images with Cs and defocus
        given, off by up to 2 µm and 30 Å (:func:`told_conditions`); for a model of a
        registered crystal, :data:`IN_WINDOW`: the untold network on the images whose
        microscope transfers the crystal's lowest-order reflections (``images`` says how many).
    """
    from ..models import load_model

    envelope = envelope or MicroscopeEnvelope()
    loaded = load_model(model)
    maker = SampleMaker(particles, carbons, loaded.sampling, envelope, support_probability)
    optics = model_optics(loaded.description)
    rows = []
    for dose in doses:
        images = _images(maker, envelope, dose, images_per_dose, seed)
        network_counts, peer_counts, told_counts = MatchCounts(), MatchCounts(), MatchCounts()
        window_counts, in_window = MatchCounts(), 0
        peer = _tune_peer(_images(maker, envelope, dose, images_per_dose, seed + 1))
        for index, (image, sampling, columns, settings) in enumerate(images):
            counts = _network_counts(loaded, image, sampling, columns, threshold)
            network_counts += counts
            # The image's own astigmatism, in its worst direction: what tem-atoms transfer says.
            if optics and optics.transfers(settings.cs, settings.defocus, settings.astigmatism):
                window_counts += counts
                in_window += 1
            peer_counts += match_columns(
                peer.detect(image, sampling, _polarity(image, columns)), columns, sampling)
            if loaded.takes_conditions:
                cs, defocus = told_conditions(settings, seed, index)
                told_counts += _network_counts(loaded, image, sampling, columns, threshold,
                                               cs=cs, defocus=defocus)
        methods = [("network", network_counts, len(images)),
                   ("classical peer", peer_counts, len(images))]
        if loaded.takes_conditions:
            methods.append((TOLD, told_counts, len(images)))
        if optics and in_window:
            methods.append((IN_WINDOW, window_counts, in_window))
        for method, counts, scored in methods:
            rows.append({"method": method, "dose": dose, "precision": counts.precision,
                         "recall": counts.recall, "f1": counts.f1, "rmse_pm": counts.rmse_pm,
                         "columns": counts.true_positives + counts.false_negatives,
                         "images": scored})
        told = (f" | told Cs, defocus: F1 {told_counts.f1:.3f} RMSE {told_counts.rmse_pm:.1f} "
                f"pm" if loaded.takes_conditions else "")
        window = (f" | lattice transferred ({in_window} images): F1 {window_counts.f1:.3f}"
                  if optics and in_window else "")
        log(f"dose {dose:>6g} e/Å²: network F1 {network_counts.f1:.3f} RMSE "
            f"{network_counts.rmse_pm:.1f} pm{told}{window} | peer (σ={peer.sigma} Å, "
            f"t={peer.threshold}) F1 {peer_counts.f1:.3f} RMSE {peer_counts.rmse_pm:.1f} pm")
    return pd.DataFrame(rows)


def evaluate_by_height(
    models: Sequence[str],
    particles: list[dict],
    carbons: list[dict],
    doses: Sequence[float] = (100, 1000),
    images_per_dose: int = 48,
    seed: int = 20181000,
    envelope: MicroscopeEnvelope | None = None,
    support_probability: float = 0.5,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Recall by column height and atom-count accuracy, paired over the same images.

    Every model sees the same images (particle, microscope, noise) at each dose. Detections are
    matched one to one to every true column within 0.5 Å (:data:`metrics.MATCH_RADIUS`),
    whatever its height; F1 is the usual one, on columns of ≥ 3 atoms.

    Returns
    -------
    pandas.DataFrame
        Rows (model, dose, heights) with ``columns`` (true columns of that height),
        ``recall``; for a model with counts, ``n_atoms_exact`` and ``n_atoms_within_one``
        (fractions of the matched columns); and one row per (model, dose) with heights
        ``"F1 (≥ 3 atoms)"`` holding ``f1`` and ``rmse_pm``.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from ..models import load_model
    from .metrics import MATCH_RADIUS

    envelope = envelope or MicroscopeEnvelope()
    loaded_models = [load_model(model) for model in models]
    maker = SampleMaker(particles, carbons, loaded_models[0].sampling, envelope,
                        support_probability)
    rows = []
    for dose in doses:
        images = _images(maker, envelope, dose, images_per_dose, seed)
        for model, loaded in zip(models, loaded_models, strict=True):
            counts = MatchCounts()
            heights, found, estimated = [], [], []
            for image, sampling, columns, _ in images:
                atoms = run(iter_detect_atoms(image, loaded, sampling=sampling),
                            on_event=ignore)
                detected = atoms[["y", "x"]].to_numpy()
                counts += match_columns(detected, columns, sampling)
                hit = np.zeros(len(columns), dtype=bool)
                guess = np.full(len(columns), np.nan)
                if len(detected) and len(columns):
                    distance = cdist(columns[:, :2], detected) * sampling
                    cost = np.where(distance <= MATCH_RADIUS, distance, 1e6)
                    matched_rows, matched_cols = linear_sum_assignment(cost)
                    keep = cost[matched_rows, matched_cols] <= MATCH_RADIUS
                    hit[matched_rows[keep]] = True
                    if "n_atoms" in atoms:
                        guess[matched_rows[keep]] = atoms["n_atoms"].to_numpy()[
                            matched_cols[keep]]
                heights.append(columns[:, 2])
                found.append(hit)
                estimated.append(guess)
            height, hit, guess = (np.concatenate(v) for v in (heights, found, estimated))
            rows.append({"model": model, "dose": dose, "heights": "F1 (≥ 3 atoms)",
                         "columns": counts.true_positives + counts.false_negatives,
                         "f1": counts.f1, "rmse_pm": counts.rmse_pm})
            for low, high in HEIGHT_BINS:
                chosen = (height >= low) & (height <= high)
                row = {"model": model, "dose": dose,
                       "heights": f"{low}" if low == high else f"{low}-{high}",
                       "columns": int(chosen.sum()),
                       "recall": float(hit[chosen].mean()) if chosen.any() else np.nan}
                if loaded.counts:
                    matched = chosen & hit
                    error = np.abs(guess[matched] - height[matched])
                    row["n_atoms_exact"] = float((error == 0).mean()) if matched.any() else np.nan
                    row["n_atoms_within_one"] = (float((error <= 1).mean()) if matched.any()
                                                 else np.nan)
                rows.append(row)
            log(f"dose {dose:g} e/Å², {model}: F1 (≥ 3 atoms) {counts.f1:.3f}, recall of "
                f"1-atom columns {rows[-5]['recall']:.3f}, 2-atom {rows[-4]['recall']:.3f}")
    return pd.DataFrame(rows)


def plot_scores(scores: pd.DataFrame, path: str) -> None:
    """F1 and RMSE against dose, network and peer, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for method, style in (("network", "o-"), (TOLD, "^-"), (IN_WINDOW, "d:"),
                          ("classical peer", "s--")):
        rows = scores[scores.method == method]
        if rows.empty:
            continue
        left.semilogx(rows.dose, rows.f1, style, label=method)
        right.semilogx(rows.dose, rows.rmse_pm, style, label=method)
    left.set(xlabel="dose [e/Å²]", ylabel="F1", ylim=(0, 1.02), title="Columns found (F1)")
    right.set(xlabel="dose [e/Å²]", ylabel="RMSE [pm]", title="Position error")
    right.set_ylim(bottom=0)
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
