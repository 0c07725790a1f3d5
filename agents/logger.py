"""Per-iteration metrics to the console (a progress bar), a CSV file and TensorBoard."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from tqdm.auto import tqdm

# The metrics shown on the progress bar; everything goes to CSV and TensorBoard.
BAR_KEYS = ("episode_return", "rm_score", "gold_score", "kl", "approx_kl", "steps_per_s", "tokens_per_s")


class Logger:
    """Writes one row of metrics per iteration.

    Args:
        log_dir: folder for ``progress.csv`` and the TensorBoard events; None writes no files.
        total: iterations planned, for the progress bar.
        progress_bar: show a tqdm bar on the console.
        tensorboard: also write TensorBoard events (needs the ``tensorboard`` package).
    """

    def __init__(self, log_dir: str | Path | None, total: int, progress_bar: bool = True, tensorboard: bool = True):
        self.bar = tqdm(total=total, disable=not progress_bar, dynamic_ncols=True)
        self.csv_file = self.writer = self.tb = None
        self.fields: list[str] | None = None
        self.rows: list[dict[str, float]] = []
        if log_dir is not None:
            self.log_dir = Path(log_dir)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.csv_file = open(self.log_dir / "progress.csv", "w", newline="")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.bar.update(1)
        self.bar.set_postfix({k: f"{scalars[k]:.3g}" for k in BAR_KEYS if k in scalars and math.isfinite(scalars[k])})
        if self.csv_file is not None:
            self.rows.append(scalars)
            new = [k for k in scalars if k not in (self.fields or [])]
            if new:  # a metric appeared late (e.g. the first rollout finished no episode): rewrite with it
                self.fields = (self.fields or []) + new
                self.csv_file.seek(0)
                self.csv_file.truncate()
                self.writer = csv.DictWriter(self.csv_file, fieldnames=self.fields, restval="")
                self.writer.writeheader()
                self.writer.writerows(self.rows)
            else:
                self.writer.writerow(scalars)
            self.csv_file.flush()
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.bar.close()
        if self.csv_file is not None:
            self.csv_file.close()
        if self.tb is not None:
            self.tb.close()
