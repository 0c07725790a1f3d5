"""Turning the env's arguments (names, paths, modules, prompt sources) into models, tokenizers and prompts,
with the checks that are particular to text (sizes, models, prompts); the plain ones are in textenv.checks.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from textenv.checks import describe, is_int, short


MAX_NUM_ENVS = 2**16
"""The most rows of a vector env: a documented bound far above the tens to few thousands of rows one
batched language-model forward is run with, so that a typo fails with a clear error, not a MemoryError."""
MAX_STATE_BYTES = 2**31
"""The most memory (2 GiB) the (N, L) int64 token and mask arrays may take, checked before allocating them."""


def check_sizes(num_envs: int, seq_len: int) -> None:
    """Refuse batch shapes whose state would not fit memory, before allocating anything."""
    if num_envs > MAX_NUM_ENVS:
        raise ValueError(f"num_envs must be an int in [1, {MAX_NUM_ENVS}] (one batched forward per step), got {num_envs}")
    nbytes = 2 * 8 * num_envs * seq_len
    if nbytes > MAX_STATE_BYTES:
        raise ValueError(
            f"num_envs * (max_prompt_tokens + max_new_tokens) = {num_envs} * {seq_len} tokens need "
            f"{nbytes / 2**30:.3g} GiB for the token and mask arrays alone; the limit is {MAX_STATE_BYTES / 2**30:g} GiB: "
            f"use fewer rows or shorter episodes"
        )


def resolve_device(device: str | torch.device, module: torch.nn.Module | None = None) -> torch.device:
    """``"auto"``: the device of a model passed as a module, else CUDA when available, else CPU."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f'device must be "auto", a device name such as "cpu" or a torch.device, got {describe(device)}')
    if device != "auto":
        try:
            return torch.device(device)
        except RuntimeError as e:  # an unknown device name
            raise ValueError(f'device must be "auto" or a torch device such as "cpu" or "cuda:0", got {device!r} ({e})') from None
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


def load_causal_lm(spec, device: torch.device, name: str = "model") -> torch.nn.Module:
    """A causal LM from a module (returned as is) or a name/path (loaded in eval mode onto ``device``)."""
    if isinstance(spec, torch.nn.Module):
        check_causal_lm(spec, name)
        if getattr(spec, "config", None) is None:  # its context length, vocabulary and EOS are read from there
            raise TypeError(f"{name} must be a causal LM with a .config (e.g. AutoModelForCausalLM), got {type(spec).__name__}")
        return spec
    if isinstance(spec, (str, Path)):
        from transformers import AutoModelForCausalLM

        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(str(spec)).to(device).eval()
    raise TypeError(f"{name} must be a causal LM: a name, a path or an nn.Module, got {describe(spec)}")


def check_causal_lm(module: torch.nn.Module, name: str) -> None:
    """A module the env can run as a causal LM: its forward takes ``input_ids`` (and returns ``.logits``).

    Only the signature is read: a trial forward would draw random numbers in a module left in train mode.
    """
    params = inspect.signature(module.forward).parameters.values()
    if not any(p.name == "input_ids" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(
            f"{name} must be a causal LM (e.g. AutoModelForCausalLM) whose forward takes input_ids and returns "
            f"logits; got {type(module).__name__} with forward{inspect.signature(module.forward)}"
        )


def load_tokenizer(tokenizer, model_spec):
    """The tokenizer given, or the one saved next to the model (its path or ``name_or_path``)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        if not (callable(tokenizer) and hasattr(tokenizer, "decode") and hasattr(tokenizer, "__len__")):
            raise TypeError(
                "tokenizer must be a tokenizer (e.g. AutoTokenizer.from_pretrained(...): callable on text, with "
                f"decode() and len()), its name or path, or None for the one saved with the model; got {describe(tokenizer)}"
            )
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


def check_fit(model: torch.nn.Module, tokenizer, vocab_size: int, max_prompt_tokens: int, max_new_tokens: int) -> None:
    """The episode fits the model's positions and the tokenizer's ids fit its ``vocab_size`` logits."""
    n_pos, seq_len = max_positions(model), max_prompt_tokens + max_new_tokens
    if n_pos is not None and seq_len > n_pos:
        raise ValueError(
            f"max_prompt_tokens + max_new_tokens = {max_prompt_tokens} + {max_new_tokens} = {seq_len} "
            f"exceeds the model's context of {n_pos} positions"
        )
    n_tok = len(tokenizer)
    if n_tok > vocab_size:
        raise ValueError(
            f"the tokenizer has {n_tok} tokens but the model only produces {vocab_size} logits; "
            f"they do not belong together (token ids >= {vocab_size} would have no action)"
        )


def special_ids(tokenizer, model: torch.nn.Module, vocab_size: int, stop_at_eos: bool) -> tuple[int, int]:
    """(eos id, pad id): the tokenizer's, else the model config's EOS; -1 when there is none (and none is needed)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
    if eos is None and stop_at_eos:
        raise ValueError(
            "no EOS token: the tokenizer has no eos_token and the model config has no eos_token_id. "
            "Set tokenizer.eos_token, or pass stop_at_eos=False to generate max_new_tokens every episode"
        )
    if eos is not None and not 0 <= int(eos) < vocab_size:
        raise ValueError(f"eos token id {eos} is outside the model's vocabulary [0, {vocab_size})")
    pad = tokenizer.pad_token_id
    if pad is None:  # padding positions are masked out, any in-vocabulary id will do
        pad = eos if eos is not None else 0
    return (-1 if eos is None else int(eos)), int(pad)


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
