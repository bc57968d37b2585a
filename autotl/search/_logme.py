"""LogME: how well a backbone's frozen features suit a labelled dataset, before any training.

You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"
(ICML 2021). For each class c, a Bayesian linear model y_c = F w + noise with prior
w ~ N(0, I/alpha) and noise ~ N(0, I/beta) is fitted to the one-hot column y_c by
maximising its evidence p(y_c | F, alpha, beta) over alpha and beta (MacKay's fixed-point
updates). The score is the maximum log evidence per image, averaged over classes:
higher means a linear model on these features explains the labels better.

With one thin SVD F = U S V^T (sigma_i = s_i^2, the nonzero eigenvalues of F^T F) every
quantity in the update is a sum over the k = min(N, D) singular values:
    m      = beta (alpha I + beta F^T F)^-1 F^T y  (the posterior mean of w)
    gamma  = sum_i beta sigma_i / (alpha + beta sigma_i)
    alpha <- gamma / |m|^2,   beta <- (N - gamma) / |F m - y|^2
    log evidence = D/2 log alpha + N/2 log beta - N/2 log 2 pi - beta/2 |F m - y|^2
                   - alpha/2 |m|^2 - 1/2 log det(alpha I + beta F^T F)
"""

from __future__ import annotations

import math

import numpy as np

MAX_ITERATIONS = 100
TOLERANCE = 1e-6
MAX_PRECISION = 1e8  # beta's cap: features that fit every label exactly (N <= D) drive beta to infinity
_TINY = 1e-12


def evidence(features: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence log p(target | features, alpha, beta) of the Bayesian linear model, per image."""
    f, y = np.asarray(features, dtype=np.float64), np.asarray(target, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return _log_evidence(u.T @ y, s**2, y @ y, n, d, alpha, beta) / n


def maximum_evidence(features: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """(log evidence per image, alpha, beta) at the evidence's maximum over alpha and beta."""
    f, y = np.asarray(features, dtype=np.float64), np.asarray(target, dtype=np.float64)
    n, d = f.shape
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    return _maximise(u.T @ y, s**2, y @ y, n, d)


def logme(features, labels) -> float:
    """The LogME score of ``features`` (N x D) for integer class ``labels`` (N): mean over classes."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if f.ndim != 2 or len(f) != len(labels) or len(f) < 2:
        raise ValueError(f"need an N x D feature matrix and N labels with N >= 2, got {f.shape} and {labels.shape}")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    scores = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        scores.append(_maximise(u.T @ y, sigma, y @ y, n, d)[0])
    return float(np.mean(scores))


def _maximise(z, sigma, yy, n, d):
    """MacKay's fixed point from alpha = beta = 1; ``z`` = U^T y, ``yy`` = |y|^2."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        gamma, m_norm, residual = _terms(z, sigma, yy, alpha, beta)
        new_alpha = gamma / max(m_norm, _TINY)
        new_beta = min(max(n - gamma, _TINY) / max(residual, _TINY), MAX_PRECISION)
        done = abs(new_alpha - alpha) <= TOLERANCE * alpha and abs(new_beta - beta) <= TOLERANCE * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _log_evidence(z, sigma, yy, n, d, alpha, beta) / n, alpha, beta


def _terms(z, sigma, yy, alpha, beta):
    """(gamma, |m|^2, |F m - y|^2) for the current alpha and beta."""
    shrink = beta * sigma / (alpha + beta * sigma)
    m_norm = np.sum((beta * np.sqrt(sigma) * z / (alpha + beta * sigma)) ** 2)
    residual = yy - z @ z + np.sum((z * (1 - shrink)) ** 2)
    return shrink.sum(), m_norm, residual


def _log_evidence(z, sigma, yy, n, d, alpha, beta):
    _, m_norm, residual = _terms(z, sigma, yy, alpha, beta)
    log_det = np.sum(np.log(alpha + beta * sigma)) + (d - len(sigma)) * math.log(alpha)
    return (
        d / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual
        - alpha / 2 * m_norm
        - log_det / 2
    )
