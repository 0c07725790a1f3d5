"""The checks every plain env argument passes before anything changes: numbers, flags, seeds, reset options.

Both envs (GridWorld and TextGen, single and vector) use these, so a seed or an option means the same thing
everywhere and is refused with the same words. They are strict on purpose: ``"0.1"``, ``True``, ``2.0`` or
``b"text"`` are never silently read as a number, a count, a flag or token ids; numpy integers are ints.
Each error names the argument, what it got and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages must stay readable for huge inputs)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(value) -> str:
    """The type and a bounded repr of a bad argument: ``str 'abc'``, ``bool True``."""
    return f"{type(value).__name__} {short(value)}"


def is_int(value) -> bool:
    """A Python or numpy integer, and not a bool (``True`` is an int to Python, never a count or an id here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as a Python int in ``[low, high]`` (numpy integers would overflow in later ``s + i``)."""
    expected = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if not is_int(value):
        raise TypeError(f"{name} must be {expected}, got {describe(value)}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {expected}, got {short(value)}")
    return int(value)


def check_real(name: str, value, low: float | None = None, high: float | None = None, why: str = "") -> float:
    """A finite int or float (numpy's too, not bool) in ``[low, high]``, as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number (int or float, not bool or str), got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    bounds = (f" >= {low:g}" if low is not None else "") + (f" and <= {high:g}" if high is not None else "")
    if not (math.isfinite(number) and (low is None or number >= low) and (high is None or number <= high)):
        raise ValueError(f"{name} must be a finite number{bounds}{why}, got {short(value)}")
    return number


def check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):  # bool("False") is True: strings and numbers are refused
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def check_seed(seed, name: str = "seed") -> int | None:
    """``None`` or an int >= 0 (numpy integers too) -> ``None`` or a Python int (what Gymnasium's seeding takes)."""
    if seed is None:
        return None
    if not is_int(seed):
        raise TypeError(f"{name} must be None or an int >= 0, got {describe(seed)}")
    if seed < 0:
        raise ValueError(f"{name} must be None or an int >= 0, got {seed!r}")
    return int(seed)


def check_row_seeds(seed, n: int) -> list[int | None]:
    """A vector env's ``reset(seed=...)`` -> one seed per row, all checked before any row is reseeded.

    As in ``SyncVectorEnv``: an int ``s`` seeds row ``i`` with ``s + i``; a sequence (or 1-D array) gives each
    row its own (None: keep drawing from the row's generator).
    """
    if isinstance(seed, np.ndarray) and seed.ndim == 1:
        seed = seed.tolist()
    if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes, bytearray)):
        if len(seed) != n:
            raise ValueError(f"reset(seed=[...]) needs {n} seeds (one per row), got {len(seed)}")
        return [check_seed(s, f"seed[{i}]") for i, s in enumerate(seed)]
    if seed is not None and not is_int(seed):
        raise TypeError(
            f"seed must be None, an int >= 0 or a list of {n} per-row seeds (each None or an int >= 0), got {describe(seed)}"
        )
    first = check_seed(seed)
    return [None] * n if first is None else [first + i for i in range(n)]


def check_options(options, known: tuple[str, ...]) -> dict:
    """``reset(options=...)``: None or a mapping whose keys are all in ``known``; returns a dict copy."""
    if options is None:
        return {}
    expected = f"a dict with keys from {list(known)}" if known else "{} (this env takes no reset options)"
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be None or {expected}, got {describe(options)}")
    unknown = [k for k in options if k not in known]
    if unknown:
        takes = f"the known options are {list(known)}" if known else "this env takes none (options=None or {})"
        raise ValueError(f"unknown reset option {unknown[0]!r}; {takes}")
    return dict(options)
