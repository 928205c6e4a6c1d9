"""Two-state hidden Markov models of site occupancy, fitted to a video's per-frame evidence.

A lattice site is occupied or empty in each frame, and stays so from one frame to the next
with probabilities ``1 − p_off`` and ``1 − p_on``: a two-state Markov chain. What a frame shows
of it is a noisy number (the evidence: the network's confidence at the site, as a logit),
drawn from one Gaussian when the site is occupied and another when it is empty. One frame's
evidence of a single adatom at low dose is marginal; the chain ties the frames together, so the
whole series decides each frame's state (forward-backward), the occupancy and the rates.

An empty site looks alike everywhere (vacuum or a vacant site: one Gaussian shared by every
site of a video), but an occupied one does not: a ten-atom column gives far stronger evidence
than a single adatom. So each site has its own occupied mean, drawn towards where it started
(its frames above `threshold`, or the video's common occupied level when it has none) by a
prior worth :data:`PRIOR_FRAMES` frame: a site occupied in three frames of forty can fit its
own, a site never above the threshold cannot invent one. The occupied spread is shared.
Transition probabilities
are per site, with a weak Beta prior (half a pseudo-transition each way) so that a site never
seen to flip gets a small rate rather than zero.

References
----------
L. R. Rabiner, "A tutorial on hidden Markov models and selected applications in speech
recognition", Proc. IEEE 77, 257 (1989).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TEMAtomsError

__all__ = ["TwoStateFit", "fit_two_state"]

#: Pseudo-counts of the Beta prior on each transition probability (Jeffreys-like).
PRIOR_TRANSITIONS = 0.5
#: Smallest emission standard deviation, relative to the evidence's spread.
MIN_SIGMA_FRACTION = 0.02
#: Weight, in frames, of the video's common occupied mean in each site's own.
PRIOR_FRAMES = 1.0
#: Smallest separation of a site's occupied mean above the empty mean [empty σ].
MIN_SEPARATION = 1.0


@dataclass
class TwoStateFit:
    """A two-state HMM fitted to (frames, sites) evidence.

    Attributes
    ----------
    posterior : numpy.ndarray
        (frames, sites) probability that the site is occupied in the frame, given the whole
        series (NaN where the site was not observed).
    p_off, p_on : numpy.ndarray
        (sites,) probability per frame of going occupied → empty and empty → occupied.
    expected_off, expected_on : numpy.ndarray
        (sites,) expected number of such transitions over the observed frame pairs.
    occupied_pairs, empty_pairs : numpy.ndarray
        (sites,) expected number of observed frame pairs that start occupied / empty.
    means : numpy.ndarray
        (sites, 2) evidence mean when empty (the same for every site), when occupied.
    sigmas : numpy.ndarray
        (2,) evidence standard deviation when empty, when occupied.
    log_likelihood : float
        Of the whole fit (all sites).
    iterations : int
        EM iterations run.
    """

    posterior: np.ndarray
    p_off: np.ndarray
    p_on: np.ndarray
    expected_off: np.ndarray
    expected_on: np.ndarray
    occupied_pairs: np.ndarray
    empty_pairs: np.ndarray
    means: np.ndarray
    sigmas: np.ndarray
    log_likelihood: float
    iterations: int

    @property
    def occupancy(self) -> np.ndarray:
        """(sites,) expected fraction of observed frames in which each site is occupied."""
        with np.errstate(invalid="ignore"):
            return np.nanmean(self.posterior, axis=0)

    @property
    def states(self) -> np.ndarray:
        """(frames, sites) bool: the more probable state of each frame (False where unseen)."""
        return np.nan_to_num(self.posterior, nan=0.0) > 0.5


def _emissions(evidence: np.ndarray, observed: np.ndarray, means: np.ndarray,
               sigmas: np.ndarray) -> np.ndarray:
    """(frames, sites, 2) log-likelihoods of the evidence in each state; 0 where not observed.

    (Up to the constant −½ log 2π per observation, the same in both states.)
    """
    z = (evidence[..., None] - means[None]) / sigmas
    log_like = -0.5 * z**2 - np.log(sigmas)
    log_like = np.where(observed[..., None], log_like, 0.0)
    return log_like


def _forward_backward(log_emission: np.ndarray, transition: np.ndarray, start: np.ndarray,
                      pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Posterior states, expected transition counts, the same over `pairs`, log-likelihood.

    `log_emission` is (T, S, 2), `transition` (S, 2, 2) (row: from, column: to), `start`
    (S, 2), `pairs` (T − 1, S) bool: frame pairs where both frames were observed. Returns the
    (T, S, 2) posteriors, (S, 2, 2) expected counts over every pair (for the fit) and over the
    observed pairs (what is reported as seen transitions), and the log-likelihood.
    """
    frames, sites, _ = log_emission.shape
    peak = log_emission.max(axis=2, keepdims=True)
    emission = np.exp(log_emission - peak)
    alpha = np.empty((frames, sites, 2))
    scale = np.empty((frames, sites))
    current = start * emission[0]
    for t in range(frames):
        if t:
            current = np.einsum("si,sij->sj", alpha[t - 1], transition) * emission[t]
        scale[t] = current.sum(axis=1)
        alpha[t] = current / scale[t][:, None]
    beta = np.ones((frames, sites, 2))
    for t in range(frames - 2, -1, -1):
        beta[t] = np.einsum("sij,sj->si", transition, emission[t + 1] * beta[t + 1])
        beta[t] /= scale[t + 1][:, None]
    gamma = alpha * beta
    gamma /= gamma.sum(axis=2, keepdims=True)
    counts = np.zeros((sites, 2, 2))
    seen = np.zeros((sites, 2, 2))
    for t in range(frames - 1):
        xi = (alpha[t][:, :, None] * transition
              * (emission[t + 1] * beta[t + 1])[:, None, :])
        xi /= xi.sum(axis=(1, 2), keepdims=True)
        counts += xi
        seen += xi * pairs[t][:, None, None]
    log_likelihood = float(np.log(scale).sum() + peak.sum())
    return gamma, counts, seen, log_likelihood


def fit_two_state(evidence: np.ndarray, observed: np.ndarray | None = None,
                  threshold: float | None = None, iterations: int = 200,
                  tolerance: float = 1e-6) -> TwoStateFit:
    """Fit a two-state HMM per site, with Gaussian emissions shared by all sites (EM).

    Parameters
    ----------
    evidence : numpy.ndarray
        (frames, sites) evidence that the site is occupied; larger means more likely (e.g. the
        logit of the network's confidence at the site). NaN: not observed.
    observed : numpy.ndarray, optional
        (frames, sites) bool: the site was in view (default: where `evidence` is finite).
    threshold : float, optional
        Evidence above which a frame starts as occupied (for the network's logit: the logit of
        its detection threshold); default: halfway between the 20th and 80th percentiles.
    iterations : int, optional
        Most EM iterations.
    tolerance : float, optional
        Stop when the log-likelihood per observation improves by less.

    Returns
    -------
    TwoStateFit

    Raises
    ------
    TEMAtomsError
        Not (frames, sites), fewer than 2 frames, or no observed evidence.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> states = np.repeat([[0], [1], [1], [0]], 10, axis=0).astype(float)
    >>> fit = fit_two_state(states + rng.normal(0, 0.3, states.shape))
    >>> np.round(fit.occupancy, 2)
    array([0.5])
    """
    evidence = np.asarray(evidence, dtype=float)
    if evidence.ndim != 2:
        raise TEMAtomsError(f"evidence must be (frames, sites), not {evidence.shape}")
    if evidence.shape[0] < 2:
        raise TEMAtomsError(f"an occupancy needs at least 2 frames, got {evidence.shape[0]}")
    observed = (np.isfinite(evidence) if observed is None
                else np.asarray(observed, bool) & np.isfinite(evidence))
    values = evidence[observed]
    if values.size == 0:
        raise TEMAtomsError("no site was observed in any frame: nothing to fit")
    sites = evidence.shape[1]
    filled = np.where(observed, evidence, 0.0)
    # Start from a split at the threshold: the empty state from every frame below it, each
    # site's occupied level from its own frames above it (a single adatom's evidence is far
    # below a thick column's; started from the common level it would be taken for empty).
    if threshold is None:
        low, high = np.percentile(values, [20, 80])
        threshold = 0.5 * (low + high)
    above = observed & (evidence > threshold)
    below = observed & ~above
    spread = max(float(values.std()), 1e-9)
    empty_values = evidence[below] if below.any() else np.array([values.min()])
    occupied_values = evidence[above] if above.any() else np.array([values.max()])
    sigmas = np.array([max(float(empty_values.std()), 0.1 * spread),
                       max(float(occupied_values.std()), 0.1 * spread)])
    common = float(occupied_values.mean())
    counts = above.sum(axis=0)
    own = np.where(counts > 0, np.where(above, evidence, 0.0).sum(axis=0) / np.maximum(counts, 1),
                   common)
    means = np.stack([np.full(sites, float(empty_values.mean())), own], axis=1)
    means[:, 1] = np.maximum(means[:, 1], means[:, 0] + MIN_SEPARATION * sigmas[0])
    start_level = means[:, 1].copy()
    p_off = np.full(sites, 0.1)
    p_on = np.full(sites, 0.1)
    pairs = observed[:-1] & observed[1:]
    previous = -np.inf
    iteration = 0
    while iteration < iterations:
        iteration += 1
        transition = np.stack([np.stack([1 - p_on, p_on], 1),     # from empty
                               np.stack([p_off, 1 - p_off], 1)], 1)  # from occupied
        stationary = np.stack([p_off, p_on], 1) / (p_off + p_on)[:, None]
        log_emission = _emissions(filled, observed, means, sigmas)
        # Frames where a site is unseen still chain its states (the fit uses every pair), but
        # only pairs of observed frames count as seen transitions (what is reported).
        gamma, counts, seen, log_likelihood = _forward_backward(log_emission, transition,
                                                                stationary, pairs)
        expected_on, expected_off = counts[:, 0, 1], counts[:, 1, 0]
        empty_pairs, occupied_pairs = counts[:, 0].sum(axis=1), counts[:, 1].sum(axis=1)
        p_on = (expected_on + PRIOR_TRANSITIONS) / (empty_pairs + 2 * PRIOR_TRANSITIONS)
        p_off = (expected_off + PRIOR_TRANSITIONS) / (occupied_pairs + 2 * PRIOR_TRANSITIONS)
        weights = gamma * observed[..., None]
        totals = weights.sum(axis=(0, 1))
        if totals[0] > 1e-9:
            means[:, 0] = (weights[..., 0] * filled).sum() / totals[0]
        own_weight = weights[..., 1].sum(axis=0)
        means[:, 1] = ((weights[..., 1] * filled).sum(axis=0) + PRIOR_FRAMES * start_level) / (
            own_weight + PRIOR_FRAMES)
        for state in (0, 1):
            if totals[state] > 1e-9:
                variance = (weights[..., state] * (filled - means[None, :, state]) ** 2).sum()
                sigmas[state] = np.sqrt(variance / totals[state])
        sigmas = np.maximum(sigmas, MIN_SIGMA_FRACTION * spread)
        # "Occupied" stays the state of larger evidence, clearly so.
        means[:, 1] = np.maximum(means[:, 1], means[:, 0] + MIN_SEPARATION * sigmas[0])
        if log_likelihood - previous < tolerance * values.size:
            break
        previous = log_likelihood
    posterior = np.where(observed, gamma[..., 1], np.nan)
    return TwoStateFit(posterior=posterior, p_off=p_off, p_on=p_on,
                       expected_off=seen[:, 1, 0], expected_on=seen[:, 0, 1],
                       occupied_pairs=seen[:, 1].sum(axis=1),
                       empty_pairs=seen[:, 0].sum(axis=1),
                       means=means, sigmas=sigmas, log_likelihood=log_likelihood,
                       iterations=iteration)

