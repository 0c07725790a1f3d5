"""Guards around a training run: its output folder, the signals that stop it, and the errors it reports.

    with RunFolder(out_dir, "out_dir"):          # writable, and no other live run writes there
        with StopSignals() as signals:           # Ctrl-C / SIGTERM: finish the iteration, save, stop
            ...                                  # the loop reads signals.received at its safe points

- ``check_writable`` creates (and removes) a file in the folder before any work, so a read-only folder is
  refused at the start rather than after the first iteration.
- ``FolderLock`` holds ``fcntl.flock`` on ``folder/.lock`` for the run's life, so a second live run on the
  same folder is refused with the first one's pid. The OS drops the lock when its process dies, even by
  kill -9, so no stale lock outlives its run. (POSIX only; on Windows nothing is locked.)
- ``StopSignals`` turns the first SIGINT / SIGTERM into a flag read at the next safe point; a second one
  interrupts at once (KeyboardInterrupt), for a run that must die now.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class FolderBusyError(RuntimeError):
    """Another live run holds the folder's lock."""


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM at a safe point, after writing its checkpoint.

    A KeyboardInterrupt, so ``except Exception`` does not swallow it and code after the training call does
    not run as if training had finished.

    Attributes:
        signal_name: "SIGINT" or "SIGTERM".
        iteration: the last iteration completed (and saved).
        checkpoint: the checkpoint written at that iteration.
    """

    def __init__(self, signal_name: str, iteration: int, checkpoint: Path, resume_hint: str = "resume=True"):
        self.signal_name, self.iteration, self.checkpoint = signal_name, iteration, checkpoint
        super().__init__(f"stopped by {signal_name} at iteration {iteration}; checkpoint saved to {checkpoint}; "
                         f"resume with {resume_hint}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number (130, 143)."""
        return 128 + int(getattr(signal, self.signal_name))


# ---------------------------------------------------------------------------------------------- the folder
def check_writable(folder: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``folder`` if needed and check that files can be created in it; returns it as a Path.

    Raises:
        OSError (PermissionError, NotADirectoryError, ...): the message names ``what``, the folder and the cause.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        message = (f"{what} {folder} is not writable ({e.strerror or e}): expected a folder this process can "
                   f"create files in; fix its permissions or choose another {what}")
        raise (OSError(e.errno, message) if e.errno is not None else OSError(message)) from e
    return folder


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.lock``, held until ``release``.

    Raises:
        FolderBusyError: another live process holds it (the message names the folder and that pid).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.path = Path(folder) / ".lock"
        self._file = None
        if fcntl is None:
            return
        try:
            f = open(self.path, "a+")
        except OSError as e:
            raise with_context(e, f"cannot open the lock file {self.path} of {what} {Path(folder)}") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise FolderBusyError(
                f"{what} {Path(folder)} is in use by another live run (pid {holder} holds {self.path}): wait for "
                f"it to finish, or give this run another {what}"
            ) from None
        except BaseException:
            f.close()
            raise
        f.truncate(0)  # the lock file is kept (removing it would let a third run lock a new file); refresh the pid
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder(FolderLock):
    """A run's output folder: ``check_writable`` then ``FolderLock``, before any work starts."""

    def __init__(self, folder: str | os.PathLike, what: str = "out_dir"):
        super().__init__(check_writable(folder, what), what)
        self.folder = Path(folder)


# ---------------------------------------------------------------------------------------------- signals
class StopSignals:
    """While active, the first SIGINT or SIGTERM sets ``received`` (its name) instead of killing the run.

    Only the main thread can install signal handlers; elsewhere this does nothing and signals act as usual.
    The previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, note: str = "finishing the current iteration, then saving a checkpoint and stopping"):
        self.note = note
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise KeyboardInterrupt(f"second stop signal ({name}): stopping at once, without a checkpoint")
        self.received = name
        # os.write, not print: a handler may run in the middle of a print to the same stream.
        os.write(2, f"\n{name} received: {self.note} ({name} again stops at once)\n".encode())

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


# ---------------------------------------------------------------------------------------------- errors
_REBUILDABLE = (ValueError, TypeError, RuntimeError, FloatingPointError, ZeroDivisionError, OverflowError,
                ArithmeticError, IndexError, AssertionError, NotImplementedError)


def with_context(error: Exception, context: str, note: str = "") -> Exception:
    """The same kind of error with ``context`` in front of its message (and ``note`` in brackets after it),
    to be raised ``from error``.

    The type is kept where it can be rebuilt from a message (callers keep catching ValueError, and
    OSError keeps its errno); any other error becomes a RuntimeError that names its original type.
    """
    after = f" ({note})" if note else ""
    if isinstance(error, OSError):
        detail = error.strerror or str(error)
        if error.filename is not None:
            detail += f": {error.filename!r}"
        message = f"{context}: {detail}{after}"
        return OSError(error.errno, message) if error.errno is not None else OSError(message)
    if type(error) in _REBUILDABLE:
        return type(error)(f"{context}: {error}{after}")
    return RuntimeError(f"{context}: {type(error).__name__}: {error}{after}")
