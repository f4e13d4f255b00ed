"""Evaluation: feature statistics, Frechet distance, KID, precision/recall, likelihood."""

from sdeflow.eval.likelihood import bits_per_dim, log_likelihood
from sdeflow.eval.stats import (
    FeatureStats,
    StatsFileError,
    kid,
    load_stats,
    precision_recall,
    save_stats,
)

__all__ = [
    "FeatureStats",
    "StatsFileError",
    "kid",
    "precision_recall",
    "load_stats",
    "save_stats",
    "log_likelihood",
    "bits_per_dim",
]
