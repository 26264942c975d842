"""Emotion scoring: the Scorer interface, the hand-crafted baseline and the nested ONNX model."""

from moodgate.emotion.base import Emotion, Scorer, VATarget, aggregate, score

__all__ = ["Emotion", "Scorer", "VATarget", "aggregate", "score"]
