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

__all__ = ["SiteLevelsFit", "TwoStateFit", "fit_site_levels", "fit_two_state"]

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


def _checked(evidence: np.ndarray, observed: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(frames, sites) evidence as floats and where it was observed, or an error in words."""
    evidence = np.asarray(evidence, dtype=float)
    if evidence.ndim != 2:
        raise TEMAtomsError(f"evidence must be (frames, sites), not {evidence.shape}")
    if evidence.shape[0] < 2:
        raise TEMAtomsError(f"an occupancy needs at least 2 frames, got {evidence.shape[0]}")
    observed = (np.isfinite(evidence) if observed is None
                else np.asarray(observed, bool) & np.isfinite(evidence))
    if not observed.any():
        raise TEMAtomsError("no site was observed in any frame: nothing to fit")
    return evidence, observed


def _chain(p_off: np.ndarray, p_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, 2, 2) transition matrices (row: from empty, occupied) and (S, 2) stationary starts."""
    transition = np.stack([np.stack([1 - p_on, p_on], 1),     # from empty
                           np.stack([p_off, 1 - p_off], 1)], 1)  # from occupied
    return transition, np.stack([p_off, p_on], 1) / (p_off + p_on)[:, None]


def _rates(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New (p_off, p_on) from (S, 2, 2) expected transition counts, with the Beta prior."""
    empty_pairs, occupied_pairs = counts[:, 0].sum(axis=1), counts[:, 1].sum(axis=1)
    p_on = (counts[:, 0, 1] + PRIOR_TRANSITIONS) / (empty_pairs + 2 * PRIOR_TRANSITIONS)
    p_off = (counts[:, 1, 0] + PRIOR_TRANSITIONS) / (occupied_pairs + 2 * PRIOR_TRANSITIONS)
    return p_off, p_on


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
                      pairs: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Posterior states, expected transition counts, the same over `pairs`, log-likelihood.

    `log_emission` is (T, S, 2), `transition` (S, 2, 2) (row: from, column: to), `start`
    (S, 2), `pairs` (T − 1, S) bool: frame pairs where both frames were observed. Returns the
    (T, S, 2) posteriors, (S, 2, 2) expected counts over every pair (for the fit) and over the
    observed pairs (what is reported as seen transitions), and the (S,) log-likelihoods.
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
    log_likelihood = np.log(scale).sum(axis=0) + peak[..., 0].sum(axis=0)  # per site
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
    evidence, observed = _checked(evidence, observed)
    values = evidence[observed]
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
        # Frames where a site is unseen still chain its states (the fit uses every pair), but
        # only pairs of observed frames count as seen transitions (what is reported).
        gamma, counts, seen, site_likelihood = _forward_backward(
            _emissions(filled, observed, means, sigmas), *_chain(p_off, p_on), pairs)
        log_likelihood = float(site_likelihood.sum())
        p_off, p_on = _rates(counts)
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



@dataclass
class SiteLevelsFit(TwoStateFit):
    """A two-state HMM with each site's own levels (:func:`fit_site_levels`).

    Attributes
    ----------
    gain : numpy.ndarray
        (sites,) log-likelihood of the two-state chain over that of a constant site (one
        Gaussian): how strongly the series says the site switches.
    switching : numpy.ndarray
        (sites,) bool: the gain beats :data:`SWITCH_PENALTY` × log(frames), the two levels
        are at least :data:`MIN_SWITCH_SEPARATION` of the noise apart.
    """

    gain: np.ndarray | None = None
    switching: np.ndarray | None = None


#: Log-likelihood the two-state chain must gain over a constant site, per log(frames) (the
#: Bayesian information criterion would ask 1.5 for its three extra parameters). Set with
#: MIN_SWITCH_SEPARATION on simulated adatom videos (seed 0 of benchmarks/adatom_occupancy.py):
#: of 72 lattice sites never occupied none passed both (largest gain 3.7, largest separation
#: 2.1), of 60 adatom sites 95 % did; the other seeds validate.
SWITCH_PENALTY = 1.0
#: Smallest separation of a switching site's two levels [its noise σ].
MIN_SWITCH_SEPARATION = 2.5
#: Weight, in frames, of the video's common noise in each site's own σ.
SIGMA_PRIOR_FRAMES = 10.0


def _two_level_split(values: np.ndarray) -> float:
    """The split of 1-D values that maximises the between-class variance (Otsu)."""
    ordered = np.sort(values)
    if len(ordered) < 2 or ordered[0] == ordered[-1]:
        return float(ordered[0]) if len(ordered) else 0.0
    counts = np.arange(1, len(ordered))
    low_mean = np.cumsum(ordered)[:-1] / counts
    high_mean = (ordered.sum() - np.cumsum(ordered)[:-1]) / (len(ordered) - counts)
    between = counts * (len(ordered) - counts) * (high_mean - low_mean) ** 2
    best = int(np.argmax(between))
    return 0.5 * float(ordered[best] + ordered[best + 1])


def fit_site_levels(evidence: np.ndarray, observed: np.ndarray | None = None,
                    iterations: int = 200, tolerance: float = 1e-6) -> SiteLevelsFit:
    """Fit a two-state HMM per site whose levels and noise are the site's own (EM).

    For evidence whose empty level differs from site to site: the image intensity at a site
    next to a particle holds the particle's own contrast (Fresnel fringes), which changes from
    site to site but not from frame to frame. Each site gets an empty and an occupied level and
    one noise σ (drawn towards the video's common σ by :data:`SIGMA_PRIOR_FRAMES` frames), and
    the chain is compared with a constant site (one Gaussian): ``switching`` says where the
    series shows two levels (see :class:`SiteLevelsFit`). Where a site does not switch its
    posterior means nothing; the caller decides what a constant site is.

    Parameters
    ----------
    evidence : numpy.ndarray
        (frames, sites) evidence, larger when occupied; NaN: not observed.
    observed : numpy.ndarray, optional
        (frames, sites) bool (default: where `evidence` is finite).
    iterations : int, optional
        Most EM iterations.
    tolerance : float, optional
        Stop when the log-likelihood per observation improves by less.

    Returns
    -------
    SiteLevelsFit
        ``means`` (sites, 2) and ``sigmas`` (sites, 2) are per site (both states share σ).

    Raises
    ------
    TEMAtomsError
        Not (frames, sites), fewer than 2 frames, or no observed evidence.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> states = np.repeat([[0], [1], [1], [0]], 10, axis=0).astype(float)
    >>> fit = fit_site_levels(5.0 + states + rng.normal(0, 0.2, states.shape))
    >>> np.round(fit.occupancy, 2), bool(fit.switching[0])
    (array([0.5]), True)
    """
    evidence, observed = _checked(evidence, observed)
    n_sites = evidence.shape[1]
    filled = np.where(observed, evidence, 0.0)
    seen_frames = observed.sum(axis=0)
    # The constant site: one Gaussian per site (its mean and σ, by maximum likelihood).
    with np.errstate(invalid="ignore", divide="ignore"):
        flat_mean = filled.sum(axis=0) / np.maximum(seen_frames, 1)
        flat_sigma = np.sqrt((observed * (filled - flat_mean) ** 2).sum(axis=0)
                             / np.maximum(seen_frames, 1))
    # Start from each site's own best split into two levels.
    means = np.empty((n_sites, 2))
    within = np.ones(n_sites)
    for site in range(n_sites):
        values = evidence[observed[:, site], site]
        if values.size == 0:
            means[site] = 0.0
            continue
        split = _two_level_split(values)
        low, high = values[values <= split], values[values > split]
        means[site] = [low.mean(), high.mean() if high.size else low.mean()]
        if values.size > 1:  # (a constant site has no upper level)
            within[site] = np.sqrt((np.concatenate([low - means[site, 0], high - means[site, 1]])
                                    ** 2).mean())
    # The video's common noise, the median of the sites' within-level spreads, holds each
    # site's σ back from the narrow levels a chain free to choose would split noise into.
    common_sigma = max(float(np.median(within[seen_frames > 1])) if (seen_frames > 1).any()
                       else 1.0, 1e-9)
    sigma = np.maximum(within, 1e-3 * common_sigma)
    pairs = observed[:-1] & observed[1:]
    flat_sigma = np.maximum(flat_sigma, 1e-3 * common_sigma)
    start_levels = means.copy()
    p_off = np.full(n_sites, 0.1)
    p_on = np.full(n_sites, 0.1)
    previous = -np.inf
    iteration = 0
    while iteration < iterations:
        iteration += 1
        sigmas = np.stack([sigma, sigma], axis=1)
        gamma, counts, seen, site_likelihood = _forward_backward(
            _emissions(filled, observed, means, sigmas), *_chain(p_off, p_on), pairs)
        log_likelihood = float(site_likelihood.sum())
        p_off, p_on = _rates(counts)
        weights = gamma * observed[..., None]
        for state in (0, 1):
            means[:, state] = ((weights[..., state] * filled).sum(axis=0)
                               + PRIOR_FRAMES * start_levels[:, state]) / (
                weights[..., state].sum(axis=0) + PRIOR_FRAMES)
        residual = (weights * (filled[..., None] - means[None]) ** 2).sum(axis=(0, 2))
        sigma = np.maximum(np.sqrt((residual + SIGMA_PRIOR_FRAMES * common_sigma**2)
                                   / (seen_frames + SIGMA_PRIOR_FRAMES)), 1e-3 * common_sigma)
        means[:, 1] = np.maximum(means[:, 1], means[:, 0] + MIN_SEPARATION * sigma)
        if log_likelihood - previous < tolerance * max(int(seen_frames.sum()), 1):
            break
        previous = log_likelihood
    constant = (observed * (-0.5 * ((filled - flat_mean) / flat_sigma) ** 2
                            - np.log(flat_sigma))).sum(axis=0)
    gain = site_likelihood - constant
    penalty = SWITCH_PENALTY * np.log(np.maximum(seen_frames, 2))
    switching = (gain > penalty) & (means[:, 1] - means[:, 0] >= MIN_SWITCH_SEPARATION * sigma)
    posterior = np.where(observed, gamma[..., 1], np.nan)
    return SiteLevelsFit(posterior=posterior, p_off=p_off, p_on=p_on,
                         expected_off=seen[:, 1, 0], expected_on=seen[:, 0, 1],
                         occupied_pairs=seen[:, 1].sum(axis=1),
                         empty_pairs=seen[:, 0].sum(axis=1),
                         means=means, sigmas=np.stack([sigma, sigma], axis=1),
                         log_likelihood=log_likelihood, iterations=iteration, gain=gain,
                         switching=switching)
