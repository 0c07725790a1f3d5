"""Turning the env's arguments (names, paths, modules) into models and tokenizers, with the checks that are
particular to them (batch sizes, models, vocabularies, special tokens); the plain ones are in rlcore.checks.
Prompt sources are in ``textenv.text.prompts``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rlcore.checks import describe


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


def fork_safe_threads() -> None:
    """One torch CPU thread in a process forked from one that had imported torch (``gym.make_vec(...,
    vectorization_mode="async")`` forks on Linux): torch's OpenMP thread pool does not survive a fork, and the
    first multi-threaded operation of the child would wait forever for the parent's threads. PyTorch's own
    DataLoader workers do the same. Call ``torch.set_num_threads`` after making the env to choose otherwise."""
    import textenv

    if getattr(textenv, "forked_after_torch", False) and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


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
