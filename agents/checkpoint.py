"""Checkpoints written atomically and read back with checks that say what is wrong.

A checkpoint is one ``torch.save`` file of plain containers and tensors, so it loads with
``weights_only=True`` (no pickled code runs on load). It is written to a temporary file in the same
folder, flushed to disk, then renamed over the target: a run killed mid-write leaves the previous
checkpoint intact, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gymnasium as gym
import torch


def atomic_save(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` that either fully happens or leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows when both are on one filesystem
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, expected_format: str) -> dict:
    """Read a checkpoint written by ``atomic_save`` and check that it is of ``expected_format``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the file is not a readable torch checkpoint (corrupt, truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a file written by {expected_format}.save()")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(
            f"{path} is not a readable checkpoint (corrupt or truncated file?): {type(e).__name__}: {e}"
        ) from e
    found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
    if found != expected_format:
        raise ValueError(f"{path} holds a {found!r} checkpoint, expected a {expected_format!r} checkpoint")
    return obj


def space_to_dict(space: gym.Space) -> dict:
    """A plain-data description of a space, enough to compare spaces and rebuild the default policy."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    return {"type": type(space).__name__, "repr": repr(space)}


def space_from_dict(d: dict) -> gym.Space:
    """Inverse of ``space_to_dict`` for Discrete, Box (unbounded) and Dict spaces."""
    if d["type"] == "Discrete":
        return gym.spaces.Discrete(d["n"], start=d["start"])
    if d["type"] == "Box":
        return gym.spaces.Box(-float("inf"), float("inf"), shape=tuple(d["shape"]), dtype=d["dtype"])
    if d["type"] == "Dict":
        return gym.spaces.Dict({k: space_from_dict(v) for k, v in d["spaces"].items()})
    raise ValueError(f"cannot rebuild a {d['type']} space from a checkpoint")
