"""Prompt sources: prompts from lists, datasets, files, folders or the Hub, held-out splits, prefixes, and the
encoder that turns one prompt (text or token ids) into the env's token ids, cut from the left.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rlcore.checks import describe, is_int, short


PROMPT_COLUMNS = ("prompt", "query", "text")
"""The columns a prompts dataset or file is read from when none is named, in this order (TRL's "query", the
"text" of raw corpora such as IMDB)."""
FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")


def load_prompts(prompts, column: str | None = None, split: str | None = None) -> list[str]:
    """A list of prompt strings from a list, a ``datasets.Dataset``, a file or folder, or a Hub dataset name.

    - ``column``: the column (or JSON field) holding the prompts; None: the first of ``PROMPT_COLUMNS``
      ("prompt", "query", "text") that the data has.
    - paths: a ``datasets.save_to_disk`` folder (a ``DatasetDict``'s ``split``, else its "train" split, else
      its only one), ``.txt`` (one prompt per line), ``.json`` (a list of strings, or of objects) /
      ``.jsonl`` (one object per line), ``.csv`` / ``.parquet`` (columns).
    - any other string: a Hugging Face Hub dataset, ``"name"`` or ``"name:split"`` (or ``split=``; default
      "train"), loaded with ``datasets.load_dataset``. Where the Hub cannot be reached this is a
      ConnectionError that says how to pass the data from a local copy instead.
    """
    if column is not None and not isinstance(column, str):
        raise TypeError(f"prompt column must be a str or None, got {describe(column)}")
    if isinstance(prompts, (str, Path)):
        return _prompts_from_source(prompts, column, split)
    if isinstance(prompts, dict) and getattr(prompts, "column_names", None) is not None:  # datasets.DatasetDict
        return load_prompts(_pick_split(prompts, split, "the prompts DatasetDict"), column)
    column_names = getattr(prompts, "column_names", None)
    if column_names is not None:  # datasets.Dataset
        out = list(prompts[_pick_column(list(column_names), column, "the prompts dataset")])
    elif isinstance(prompts, Sequence):
        if column is not None and column not in PROMPT_COLUMNS:
            raise ValueError(f"prompt column {column!r} was named, but the prompts are a list of strings (no columns)")
        out = list(prompts)
    else:
        raise TypeError(f"prompts must be a list of str, a datasets.Dataset or a path, got {type(prompts).__name__}")
    if not out:
        raise ValueError("the prompt list is empty")
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is a {type(p).__name__}, expected str")
        if not p.strip():
            raise ValueError(f"prompt {i} is empty ({p!r}); every prompt needs at least one token")
    return out


def _pick_column(columns: list[str], column: str | None, what: str) -> str:
    if column is not None:
        if column not in columns:
            raise ValueError(f"{what} has no column {column!r}; its columns are {columns}")
        return column
    for name in PROMPT_COLUMNS:
        if name in columns:
            return name
    raise ValueError(f"{what} has none of the columns {', '.join(map(repr, PROMPT_COLUMNS))} that prompts are read "
                     f"from by default; its columns are {columns}: name one (prompt_column= / --prompt-column)")


def _pick_split(dataset_dict, split: str | None, what: str):
    names = list(dataset_dict)
    if split is not None:
        if split not in dataset_dict:
            raise ValueError(f"{what} has no split {split!r}; its splits are {names}")
        return dataset_dict[split]
    if "train" in dataset_dict:
        return dataset_dict["train"]
    if len(names) == 1:
        return dataset_dict[names[0]]
    raise ValueError(f"{what} has the splits {names} and none is called 'train': name one (prompt_split= / --prompt-split)")


def _rows_column(rows: list, column: str | None, path: Path) -> list:
    """The prompts of JSON rows: the strings themselves, or the ``column`` field of objects."""
    if all(isinstance(r, str) for r in rows):
        return rows
    keys = list(rows[0]) if rows and isinstance(rows[0], dict) else []
    name = _pick_column(keys, column, f"{str(path)!r}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or name not in r:
            raise ValueError(f"row {i} of {str(path)!r} has no field {name!r}: {short(r)}")
    return [r[name] for r in rows]


def looks_like_hub_name(text: str) -> bool:
    """``"name"``, ``"org/name"`` or either with ``":split"``, and not a file name or a path."""
    name = text.split(":", 1)[0]
    if not name or name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or Path(name).suffix.lower() in FILE_SUFFIXES:
        return False
    return all(c.isalnum() or c in "-_./" for c in name)


def _prompts_from_source(source, column: str | None, split: str | None) -> list[str]:
    path = Path(source)
    if path.exists():
        return _prompts_from_path(path, column, split)
    if isinstance(source, str) and looks_like_hub_name(source):
        return _prompts_from_hub(source, column, split)
    raise FileNotFoundError(f"prompts path {str(path)!r} does not exist (pass a list of str for literal prompts, or a "
                            f"Hub dataset as NAME or NAME:SPLIT)")


def _prompts_from_hub(source: str, column: str | None, split: str | None) -> list[str]:
    name, _, named_split = source.partition(":")
    if named_split and split is not None and named_split != split:
        raise ValueError(f"the prompts {source!r} name the split {named_split!r} but prompt_split={split!r}; give one")
    split = named_split or split or "train"
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except (ConnectionError, OSError, ValueError) as e:
        kind = ConnectionError if isinstance(e, ConnectionError) else FileNotFoundError
        raise kind(
            f"could not load the prompts from the Hugging Face Hub dataset {name!r} (split {split!r}; there is no "
            f"local file or folder of that name): {e}. Without access to the Hub, save it where the Hub is reachable "
            f"(datasets.load_dataset({name!r}, split={split!r}).save_to_disk(FOLDER)) and pass that folder, or pass "
            f"a local .txt/.jsonl/.csv/.parquet file"
        ) from e
    return load_prompts(ds, column)


def _prompts_from_path(path: Path, column: str | None = None, split: str | None = None) -> list[str]:
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = _pick_split(ds, split, f"the DatasetDict at {str(path)!r}")
        return load_prompts(ds, column)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if column is not None and column not in PROMPT_COLUMNS:
            raise ValueError(f"prompt column {column!r} was named, but {str(path)!r} is a .txt file: one prompt per line")
        return load_prompts([line for line in path.read_text().splitlines() if line.strip()])
    if suffix == ".json":
        return load_prompts(_rows_column(json.loads(path.read_text()), column, path))
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return load_prompts(_rows_column(rows, column, path))
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
        return load_prompts(frame[_pick_column(list(frame.columns), column, f"{str(path)!r}")].tolist())
    raise ValueError(f"don't know how to read prompts from {str(path)!r}; use .txt, .json, .jsonl, .csv, .parquet or a dataset dir")


def split_prompts(prompts: Sequence[str], n_held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, held_out)``: ``n_held_out`` prompts drawn with ``seed`` and held out, the others kept for training.

    Held out by text: a prompt that occurs several times is on one side only, so no evaluation prompt is ever a
    training prompt. The draw depends on ``seed`` and the prompts only (the same split every run and resume);
    both sides keep the prompts' order.
    """
    distinct = list(dict.fromkeys(prompts))
    if not 1 <= n_held_out < len(distinct):
        raise ValueError(f"cannot hold out {n_held_out} of {len(distinct)} distinct prompts and train on the rest; "
                         f"pass an evaluation file, or more prompts")
    held = {distinct[i] for i in np.random.default_rng(seed).choice(len(distinct), n_held_out, replace=False)}
    return [p for p in prompts if p not in held], [p for p in distinct if p in held]


def prompt_prefixes(prompts: Sequence[str], tokenizer, low: int, high: int, seed: int = 0) -> list[str]:
    """Each prompt cut to its first k tokens, k drawn per prompt from ``range(low, high)`` with ``seed``: the
    prompts of TRL's gpt2-sentiment notebook (``LengthSampler(2, 8)``: 2 to 7 tokens of an IMDB review).

    Tokenized without special tokens and decoded back (the env tokenizes the text again); prompts with fewer
    than k tokens stay whole. Only the first 1000 characters are read (k tokens never need more)."""
    if not (is_int(low) and is_int(high) and 1 <= low < high):
        raise ValueError(f"prompt lengths need 1 <= low < high (k is drawn from range(low, high)), got {low}, {high}")
    lengths = np.random.default_rng(seed).integers(low, high, size=len(prompts))
    ids = tokenizer([p[:1000] for p in prompts], add_special_tokens=False)["input_ids"]
    out = [tokenizer.decode(row[:int(k)]) for row, k in zip(ids, lengths)]
    return [p if p.strip() else whole for p, whole in zip(out, prompts)]


class PromptEncoder:
    """A prompt (text, or a list of token ids) -> (token ids, text), truncated from the left to ``max_tokens``.

    Text prompts are tokenized with the tokenizer's special tokens (e.g. the BOS the model was fine-tuned
    after) and only once: they come from a fixed list and recur every few episodes, and tokenizing each
    reset row again cost ~7% of a rollout step (benchmarks/bench_textgen.py).
    """

    def __init__(self, tokenizer, vocab_size: int, max_tokens: int) -> None:
        self.tokenizer, self.vocab_size, self.max_tokens = tokenizer, vocab_size, max_tokens
        self.memo: dict[str, tuple[int, ...]] = {}  # text -> token ids

    def __call__(self, prompt) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError(f"empty prompt {prompt!r}: a prompt needs at least one token")
            ids, text = self._tokenize(prompt), prompt
        else:
            ids, text = prompt_token_ids(prompt, self.vocab_size), None
        if not ids:
            raise ValueError(f"prompt {short(prompt)} has no tokens")
        if len(ids) > self.max_tokens:
            # Keep the end (what comes next depends on it most) and a leading BOS the model was trained with.
            bos = self.tokenizer.bos_token_id
            keep_bos = bos is not None and ids[0] == bos and self.max_tokens > 1
            tail = self.max_tokens - int(keep_bos)
            warnings.warn(
                f"prompt of {len(ids)} tokens is longer than max_prompt_tokens={self.max_tokens}; "
                f"keeping its last {tail} tokens" + (" after the BOS token" if keep_bos else ""),
                stacklevel=3,
            )
            ids, text = ([bos] if keep_bos else []) + ids[-tail:], None
        if text is None:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return ids, text

    def _tokenize(self, text: str) -> list[int]:
        ids = self.memo.get(text)
        if ids is None:
            if len(self.memo) >= 100_000:  # bound the memory for endless streams of distinct prompts
                self.memo.clear()
            ids = self.memo[text] = tuple(self.tokenizer(text)["input_ids"])
        return list(ids)


def prompt_token_ids(prompt, vocab_size: int) -> list[int]:
    """A prompt given as token ids (list, tuple, 1-D integer array or tensor) -> a list of ints in [0, vocab_size).

    Bytes, floats, bools and strings are refused rather than read as ids (``b"The"`` would be [84, 104, 101]).
    """
    expected = f"a prompt must be a str or a list of int token ids in [0, {vocab_size})"
    if isinstance(prompt, np.ndarray) or torch.is_tensor(prompt):
        integer = np.issubdtype(prompt.dtype, np.integer) if isinstance(prompt, np.ndarray) else not (
            prompt.is_floating_point() or prompt.is_complex() or prompt.dtype == torch.bool)
        if prompt.ndim != 1 or not integer:
            raise TypeError(f"{expected}, got a {prompt.dtype} array of shape {tuple(prompt.shape)}")
        prompt = prompt.tolist()
    if isinstance(prompt, (bytes, bytearray)):
        raise TypeError(f"{expected}, got bytes {short(prompt)}: decode it to str first")
    if not isinstance(prompt, Sequence) or isinstance(prompt, str):
        raise TypeError(f"{expected}, got {describe(prompt)}")
    for t in prompt:
        if not is_int(t):
            raise TypeError(f"{expected}, got {short(prompt)}, which holds {describe(t)}")
    ids = [int(t) for t in prompt]
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
    return ids
