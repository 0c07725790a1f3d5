"""Checkpoints written atomically, sealed with a SHA-256, and read back with checks that say what is wrong.

A checkpoint is one ``torch.save`` file of plain containers and tensors, so it loads with
``weights_only=True`` (no pickled code runs on load). On disk it is an envelope::

    {"format": "textenv.agents.PPO", "sealed": 2, "sha256": "<hex>", "payload": uint8 tensor}

where ``payload`` is the ``torch.save`` bytes of the checkpoint itself and ``sha256`` their digest: a flipped
byte anywhere in the payload is refused on load instead of surfacing later as odd weights. Files written
before the seal (a plain checkpoint dict) still load, unchecked.

Writing goes to a temporary file ``.NAME.<random>.tmp`` in the same folder, flushed to disk, then renamed
over the target: a run killed mid-write leaves the previous checkpoint intact, never half a file. The
writer holds an advisory lock on its temporary file, so the next save can tell a dead writer's leftover
(removed) from a live writer's file (kept).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import gymnasium as gym
import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; leftovers of killed saves are then not cleaned up
    fcntl = None

SEAL_VERSION = 2
"""Version of the envelope above (the unsealed checkpoints of earlier versions have no ``sealed`` key)."""


# ---------------------------------------------------------------------------------------------- writing
def atomic_save(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` sealed with a SHA-256, that either fully happens or leaves ``path`` as it was.

    Raises:
        ValueError: a floating-point tensor in ``obj`` holds NaN or inf (the message names its key).
        OSError: the file could not be written (full disk, permissions); the message names it, and the
            previous checkpoint at ``path`` is untouched.
    """
    path = Path(path)
    bad = first_non_finite(obj)
    if bad is not None:
        raise ValueError(f"refusing to save {path}: tensor {bad} holds NaN or inf (expected finite weights); "
                         "the previous checkpoint there is kept")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    envelope = {
        "format": obj.get("format"),
        "sealed": SEAL_VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    return atomic_write(path, lambda f: torch.save(envelope, f))


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, sync it, and rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # marks this temporary file as a live writer's
            remove_stale_temporaries(path, keep=Path(tmp))  # first: a killed save's leftover may fill the disk
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the target gets a new file's usual mode
            if fcntl is not None:
                os.replace(tmp, path)  # atomic on POSIX; renamed while still locked, so no cleaner can take it
        if fcntl is None:
            os.replace(tmp, path)  # Windows cannot rename an open file; atomic there too on one filesystem
        _sync_folder(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(e, path) from e
        raise
    return path


def remove_stale_temporaries(path: Path, keep: Path) -> list[Path]:
    """Delete the temporary files that killed saves of ``path`` left behind; returns them.

    Only files named like ``path``'s temporaries count, and only those whose writer is gone (nobody holds
    their lock: the OS releases it when a process dies, even by kill -9) and that are not newer than
    ``keep``, this save's own temporary file: a writer that started after this one may not have taken its
    lock yet. (A run's out_dir is locked for the run's life, so there no other writer exists at all.)
    """
    if fcntl is None:
        return []
    removed = []
    own_mtime = keep.stat().st_mtime
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if tmp == keep:
            continue
        try:
            with open(tmp, "rb") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer: leave its file alone
                if os.fstat(f.fileno()).st_mtime <= own_mtime:
                    tmp.unlink()
                    removed.append(tmp)
        except FileNotFoundError:
            continue  # its writer renamed or removed it meanwhile
    return removed


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """fsync the folder so the rename itself survives a power cut (POSIX; a no-op elsewhere)."""
    if fcntl is None:
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(e: OSError, path: Path) -> OSError:
    """The same OSError (errno kept, so callers can still test ``e.errno``) with the file and what was kept."""
    kept = f"the file already at {path} is untouched" if path.exists() else f"nothing was written to {path}"
    message = f"cannot write {path}: {e.strerror or e}; {kept}"
    return OSError(e.errno, message) if e.errno is not None else OSError(message)


# ---------------------------------------------------------------------------------------------- reading
def load_checkpoint(path: str | os.PathLike, expected_format: str) -> dict:
    """Read a checkpoint written by ``atomic_save`` and check its seal, its format and its weights.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: the file is not a readable torch checkpoint (corrupt, truncated, another format), its
            SHA-256 does not match (damaged on disk), or a tensor in it holds NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a file written by {expected_format}.save()")
    obj = _torch_load(path, path)
    found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
    if found != expected_format:
        raise ValueError(f"{path} holds a {found!r} checkpoint, expected a {expected_format!r} checkpoint")
    if "sealed" in obj:
        obj = _unseal(obj, path)
    bad = first_non_finite(obj)
    if bad is not None:
        raise ValueError(f"{path} is damaged: tensor {bad} holds NaN or inf (expected finite weights)")
    return obj


def _torch_load(source, path: Path):
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(
            f"{path} is not a readable checkpoint (corrupt or truncated file?): {type(e).__name__}: {e}"
        ) from e


def _unseal(envelope: dict, path: Path) -> dict:
    """The checkpoint inside a sealed envelope, after checking its SHA-256."""
    if envelope.get("sealed") != SEAL_VERSION:
        raise ValueError(f"{path} is sealed with version {envelope.get('sealed')!r}; this code reads version "
                         f"{SEAL_VERSION} (written by a newer textenv?)")
    payload, digest = envelope.get("payload"), envelope.get("sha256")
    if not isinstance(payload, torch.Tensor) or not isinstance(digest, str):
        raise ValueError(f"{path} is damaged: its envelope lacks the payload or its SHA-256")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{path} is damaged: the SHA-256 of its contents does not match the one saved with it "
                         "(a changed byte on disk?); use an earlier copy or start a fresh run")
    obj = _torch_load(io.BytesIO(data), path)
    if not isinstance(obj, dict) or obj.get("format") != envelope["format"]:
        raise ValueError(f"{path} is damaged: its envelope and its contents disagree on the format")
    return obj


def first_non_finite(obj, key: str = "") -> str | None:
    """The key path (``policy/actor.0.weight``) of the first floating-point tensor holding NaN or inf, or None."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not torch.isfinite(obj).all():
            return key or "(the object itself)"
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        bad = first_non_finite(v, f"{key}/{k}" if key else str(k))
        if bad is not None:
            return bad
    return None


# ---------------------------------------------------------------------------------------------- spaces
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
