"""What the training loop reports, and to whom: the library never prints, it calls these."""

from __future__ import annotations


class TrainingCallbacks:
    """No-op base; the CLI's progress display and tests override what they need."""

    def on_start(self, info: dict) -> None:
        """Once, before the first step: total/start step, batch sizes, what was loaded."""

    def on_log(self, record: dict) -> None:
        """Every `log_every` steps: step, epoch, loss, lr, images_per_sec."""

    def on_eval(self, record: dict) -> None:
        """After each validation: step and val_* metrics."""

    def on_message(self, text: str) -> None:
        """A line worth showing the user (a warning, a saved file)."""

    def on_end(self, summary: dict) -> None:
        """Once, at the end (also after an interruption)."""
