"""Turning the env's arguments (names, paths, modules, prompt sources) into models, tokenizers and prompts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch


def resolve_device(device: str | torch.device, module: torch.nn.Module | None = None) -> torch.device:
    """``"auto"``: the device of a model passed as a module, else CUDA when available, else CPU."""
    if device != "auto":
        return torch.device(device)
    if isinstance(module, torch.nn.Module):
        params = list(module.parameters())
        if params:
            return params[0].device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" progress bar, then restore the user's setting.

    Envs load two or three small models each; a bar per load buries the training output.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_causal_lm(spec, device: torch.device) -> torch.nn.Module:
    """A causal LM from a module (returned as is) or a name/path (loaded in eval mode onto ``device``)."""
    if isinstance(spec, torch.nn.Module):
        return spec
    if isinstance(spec, (str, Path)):
        from transformers import AutoModelForCausalLM

        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(str(spec)).to(device).eval()
    raise TypeError(f"a causal LM must be a name, a path or an nn.Module, got {type(spec).__name__}")


def load_tokenizer(tokenizer, model_spec):
    """The tokenizer given, or the one saved next to the model (its path or ``name_or_path``)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import AutoTokenizer

    source = tokenizer
    if source is None:
        if isinstance(model_spec, (str, Path)):
            source = model_spec
        else:
            source = getattr(model_spec, "name_or_path", "") or getattr(getattr(model_spec, "config", None), "_name_or_path", "")
        if not source:
            raise ValueError("pass tokenizer= when the model is a module (it has no name_or_path to load one from)")
    return AutoTokenizer.from_pretrained(str(source))


def output_vocab_size(model: torch.nn.Module) -> int:
    """Number of logits the model produces per position (the LM head's rows, else ``config.vocab_size``)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(model.config.vocab_size)


def max_positions(model: torch.nn.Module) -> int | None:
    """The longest context the model's position embeddings cover (``None`` when unknown)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def load_prompts(prompts) -> list[str]:
    """A list of prompt strings from a list, a ``datasets.Dataset`` with a "prompt" column, or a file/dir path.

    Paths: a ``datasets.save_to_disk`` directory, ``.txt`` (one prompt per line), ``.json`` / ``.jsonl``
    (objects with a "prompt" field, or a JSON list of strings), ``.csv`` / ``.parquet`` (a "prompt" column).
    """
    if isinstance(prompts, (str, Path)):
        return _prompts_from_path(Path(prompts))
    column_names = getattr(prompts, "column_names", None)
    if column_names is not None:  # datasets.Dataset
        if "prompt" not in column_names:
            raise ValueError(f'the prompts dataset needs a "prompt" column; it has {column_names}')
        out = list(prompts["prompt"])
    elif isinstance(prompts, Sequence):
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


def _prompts_from_path(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"prompts path {str(path)!r} does not exist (pass a list of str for literal prompts)")
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        return load_prompts(ds)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return load_prompts([line for line in path.read_text().splitlines() if line.strip()])
    if suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            return load_prompts(data)
        return load_prompts([row["prompt"] for row in data])
    if suffix == ".jsonl":
        return load_prompts([json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()])
    if suffix in (".csv", ".parquet"):
        import datasets

        return load_prompts(datasets.load_dataset(suffix[1:], data_files=str(path), split="train"))
    raise ValueError(f"don't know how to read prompts from {str(path)!r}; use .txt, .json, .jsonl, .csv, .parquet or a dataset dir")
