"""Evaluation: classification metrics, confusion-matrix files and few-shot linear accuracy."""

from vitcli.evaluate.confusion import write_confusion_matrix
from vitcli.evaluate.fewshot import few_shot_accuracy
from vitcli.evaluate.metrics import classification_metrics

__all__ = ["classification_metrics", "few_shot_accuracy", "write_confusion_matrix"]
