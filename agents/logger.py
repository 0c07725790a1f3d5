"""Per-iteration metrics to the console (a progress bar), a CSV file and TensorBoard."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from tqdm.auto import tqdm

from agents.checkpoint import atomic_write
from agents.run_guard import FolderLock, check_writable, with_context

# The metrics shown on the progress bar; everything goes to CSV and TensorBoard.
BAR_KEYS = ("episode_return", "rm_score", "gold_score", "kl", "approx_kl", "steps_per_s", "tokens_per_s")


class Logger:
    """Writes one row of metrics per iteration.

    Args:
        log_dir: folder for ``progress.csv`` and the TensorBoard events; None writes no files. It is checked
            for writability and locked (``agents.run_guard``) before anything is written, so a second live
            run on the same folder is refused instead of overwriting this one's progress.csv.
        total: iterations planned, for the progress bar.
        progress_bar: show a tqdm bar on the console.
        tensorboard: also write TensorBoard events (needs the ``tensorboard`` package).
    Raises:
        OSError: log_dir is not writable (the message names it); FolderBusyError: another run holds it.
    """

    def __init__(self, log_dir: str | Path | None, total: int, progress_bar: bool = True, tensorboard: bool = True):
        self.bar = self.tb = self.lock = None
        self.rows: list[dict[str, float]] = []
        if log_dir is not None:
            self.log_dir = check_writable(log_dir, "log_dir")
            self.lock = FolderLock(self.log_dir, "log_dir")  # before progress.csv is opened (and truncated)
            self.csv_path = self.log_dir / "progress.csv"
            try:
                if tensorboard:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(self.log_dir))
            except BaseException as e:
                self.close()
                if isinstance(e, OSError):
                    raise with_context(e, f"cannot write to log_dir {self.log_dir}") from e
                raise
        self.bar = tqdm(total=total, disable=not progress_bar, dynamic_ncols=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.bar.update(1)
        self.bar.set_postfix({k: f"{scalars[k]:.3g}" for k in BAR_KEYS if k in scalars and math.isfinite(scalars[k])})
        self.rows.append(scalars)
        if self.lock is not None:
            write_progress(self.csv_path, self.rows)
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        """Close the files and release log_dir (safe to call twice)."""
        for handle in (self.bar, self.tb):
            if handle is not None:
                handle.close()
        self.bar = self.tb = None
        if self.lock is not None:
            self.lock.release()


def write_progress(path: Path, rows: list[dict]) -> None:
    """The whole curve so far as CSV at ``path``, rewritten atomically (a reader never sees half a file).

    Columns are the union of the rows' number-valued keys in the order they first appear (a metric that
    appears late, such as the first finished episode's return, gets a column then); missing cells are empty.

    Raises:
        OSError: the file could not be written (the message names it; the previous file is kept).
    """
    fields: dict[str, None] = {}
    for row in rows:
        fields.update({k: None for k, v in row.items() if isinstance(v, (int, float))})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(fields), restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))
