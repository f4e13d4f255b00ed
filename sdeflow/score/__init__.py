"""Score functions: one object reads a model in any parameterisation through its SDE and counts every call."""

from sdeflow.score.compiled import Compiled, compile_score
from sdeflow.score.function import (
    EpsPrediction,
    FlowPrediction,
    Prediction,
    ScoreFunction,
    ScorePrediction,
    VPrediction,
    X0Prediction,
)

__all__ = [
    "ScoreFunction",
    "Prediction",
    "ScorePrediction",
    "EpsPrediction",
    "X0Prediction",
    "VPrediction",
    "FlowPrediction",
    "Compiled",
    "compile_score",
]
