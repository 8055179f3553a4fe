"""Text-only classifier training."""
from .classifier import TextClassifier, TrainConfig, ranking_loss, train_classifier

__all__ = ["TextClassifier", "TrainConfig", "ranking_loss", "train_classifier"]
