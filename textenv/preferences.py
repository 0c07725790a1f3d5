"""Preference data for reward models: rankings -> pairwise comparisons, and loading them from disk.

The layout is one row per comparison, as the course notes describe (rank N completions of a prompt, then
turn the ranking into all N-choose-2 pairs, the preferred completion first):

    prompt    chosen           rejected         margin (optional)
    str       str              str              float: how much better chosen is (>= 0)

``chosen`` and ``rejected`` are completions of ``prompt``; the reward model scores ``prompt + completion``.

    >>> rankings_to_pairs("The movie was", [" dull.", " great.", " fine."], [-1.0, 1.0, 0.0])[0]
    {'prompt': 'The movie was', 'chosen': ' great.', 'rejected': ' fine.', 'margin': 1.0}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
OPTIONAL_COLUMNS = ("margin",)
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def rankings_to_pairs(prompt: str, completions: Sequence[str], scores: Sequence[float],
                      tie_tolerance: float = 0.0) -> list[dict[str, Any]]:
    """All pairs of ``completions`` ordered by ``scores`` (higher is better), ties dropped.

    A pair whose scores differ by ``tie_tolerance`` or less carries no preference and is left out, so
    N completions give at most N*(N-1)/2 pairs. Pairs come best-first: (1st, 2nd), (1st, 3rd), ...,
    (2nd, 3rd), ...; equal scores keep the completions' order. ``margin`` is the score difference.
    """
    if len(completions) != len(scores):
        raise ValueError(f"rankings_to_pairs needs one score per completion, got {len(completions)} "
                         f"completions and {len(scores)} scores")
    if not all(math.isfinite(float(s)) for s in scores):
        raise ValueError(f"scores must be finite numbers, got {list(scores)}")
    ranked = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # stable: ties keep order
    pairs = []
    for a, i in enumerate(ranked):
        for j in ranked[a + 1:]:
            margin = float(scores[i]) - float(scores[j])
            if margin > tie_tolerance:
                pairs.append({"prompt": prompt, "chosen": completions[i], "rejected": completions[j],
                              "margin": margin})
    return pairs


def join_text(prompt: str, completion: str) -> str:
    """The text a prompt and its completion make, whitespace normalised: what judges and reward models read.

    GPT-2-style completions keep their leading space (" great."), so this is usually ``prompt +
    completion``; a completion without one ("great.") still gets a space unless it starts with
    punctuation, so "The movie was" + "great." never becomes "wasgreat".
    """
    if completion and prompt and not completion[0].isspace() and not prompt[-1].isspace() \
            and completion[0] not in ".,":
        completion = " " + completion
    return " ".join((prompt + completion).split())


def build_preferences(prompts: Sequence[str], completions: Sequence[Sequence[str]],
                      scores: Sequence[Sequence[float]], tie_tolerance: float = 0.0):
    """A preference ``datasets.Dataset`` from N ranked completions per prompt (see ``rankings_to_pairs``)."""
    from datasets import Dataset

    if not len(prompts) == len(completions) == len(scores):
        raise ValueError(f"build_preferences needs one list of completions and of scores per prompt, got "
                         f"{len(prompts)} prompts, {len(completions)} completion lists, {len(scores)} "
                         f"score lists")
    rows = [row for p, c, s in zip(prompts, completions, scores)
            for row in rankings_to_pairs(p, c, s, tie_tolerance)]
    columns = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    return Dataset.from_dict({k: [r[k] for r in rows] for k in columns})


def _read_file(path: Path) -> list[dict[str, Any]] | Any:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"cannot read preference data from {path}: expected a file ending in "
                         f"{', '.join(SUPPORTED_SUFFIXES)}, got {suffix or 'no suffix'}")
    if not path.is_file():
        raise FileNotFoundError(f"preference data file not found: {path}")
    import pandas as pd

    if suffix == ".csv":
        # keep_default_na=False: an empty completion stays "" instead of becoming NaN.
        return pd.read_csv(path, keep_default_na=False, dtype={c: str for c in REQUIRED_COLUMNS})
    if suffix == ".parquet":
        return pd.read_parquet(path)
    with open(path, encoding="utf-8") as f:  # .jsonl, or a .json file holding one object per line
        return [json.loads(line) for line in f if line.strip()]


def load_preferences(source: str | Path | Iterable[dict[str, Any]] | Any):
    """Preference pairs as a ``datasets.Dataset`` with columns prompt, chosen, rejected (and margin).

    Args:
        source: a path to a .jsonl, .csv or .parquet file, a ``datasets.Dataset``, a pandas
            DataFrame, or a list of dicts, each holding at least the columns prompt, chosen and rejected.

    Raises:
        ValueError: when a required column is missing (the message names it and the expected ones).
    """
    from datasets import Dataset

    if isinstance(source, (str, Path)):
        source = _read_file(Path(source))
    if isinstance(source, Dataset):
        data = source
    elif hasattr(source, "to_dict") and hasattr(source, "columns"):  # a pandas DataFrame
        data = Dataset.from_pandas(source, preserve_index=False)
    else:
        rows = list(source)
        if rows and not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"preference rows must be dicts with keys {', '.join(REQUIRED_COLUMNS)}, "
                             f"got a {type(rows[0]).__name__}")
        keys = list(dict.fromkeys(k for r in rows for k in r))
        data = Dataset.from_dict({k: [r.get(k) for r in rows] for k in keys})
    missing = [c for c in REQUIRED_COLUMNS if c not in data.column_names]
    if missing:
        raise ValueError(f"preference data is missing column(s) {', '.join(missing)}: expected columns "
                         f"{', '.join(REQUIRED_COLUMNS)} (optionally {', '.join(OPTIONAL_COLUMNS)}), "
                         f"got {', '.join(data.column_names) or 'none'}")
    return data


def save_preferences(data, path: str | Path) -> Path:
    """Write preference pairs to ``path`` (.parquet, .jsonl or .csv, by its suffix); returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        data.to_parquet(str(path))
    elif suffix in (".jsonl", ".json"):
        data.to_json(str(path), lines=True, force_ascii=False)
    elif suffix == ".csv":
        data.to_csv(str(path), index=False)
    else:
        raise ValueError(f"cannot write preference data to {path}: expected a .parquet, .jsonl or .csv path")
    return path
