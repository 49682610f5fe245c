"""Who runs a process: the llmos program that owns it, and whether that program is still alive.

Each llmos program (one OS process) that runs processes of a database holds a
lock file ``run/<pid>-<random>.lock`` next to ``llmos.db`` (``$LLMOS_HOME/run/``),
locked with ``flock`` for its whole life. The file's token is recorded with
every process the program creates or runs (fs/records.py). When the program ends in any way (exit, crash,
SIGKILL), the operating system drops the lock; another program that can take
the lock, or finds no file, knows the owner is gone. Unlike a bare pid, a token
is never reused, and unlike ``/proc`` start times it works across pid
namespaces (containers sharing one home).

The file is made under a temporary name, locked, and only then renamed to its
``.lock`` name, so nobody ever sees an unlocked file of a live owner.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import secrets
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: processes are recorded without an owner
    fcntl = None

log = logging.getLogger("llmos.fs")

SUFFIX = ".lock"

_owners: dict[tuple[int, Path], "Owner"] = {}
_guard = threading.Lock()


class Owner:
    """This program's lock file in one run folder, held until the program ends."""

    def __init__(self, run_dir: Path) -> None:
        self.pid = os.getpid()
        self.token = f"{self.pid}-{secrets.token_hex(6)}"
        self.path = run_dir / f"{self.token}{SUFFIX}"
        run_dir.mkdir(parents=True, exist_ok=True)
        staging = run_dir / f".{self.token}.new"
        self._fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, f"{self.pid}\n".encode())
            os.rename(staging, self.path)
        except BaseException:
            os.close(self._fd)
            _unlink(staging)
            raise

    def release(self) -> None:
        """At exit: remove the file, then let the lock go (in that order: never unlocked while present)."""
        _unlink(self.path)
        try:
            os.close(self._fd)
        except OSError:
            pass


def this_program(run_dir: Path) -> Owner | None:
    """This program's owner for ``run_dir``, made on first use; None if the folder cannot be written
    (its processes are then recorded without an owner and never marked crashed)."""
    if fcntl is None:
        return None
    key = (os.getpid(), run_dir)  # a forked child is a program of its own
    with _guard:
        owner = _owners.get(key)
        if owner is not None and not owner.path.exists():  # the folder was wiped under us: start again
            owner.release()
            owner = None
        if owner is None:
            try:
                owner = Owner(run_dir)
            except OSError as error:
                log.warning("cannot make a lock file in %s (%s): processes are recorded without an owner",
                            run_dir, error)
                return None
            _owners[key] = owner
            if len(_owners) == 1:
                atexit.register(_release_all)
        return owner


def own_tokens() -> set[str]:
    """The tokens of this program (never checked by a lock: they are alive by definition)."""
    pid = os.getpid()
    return {owner.token for (owner_pid, _), owner in _owners.items() if owner_pid == pid}


class Gone:
    """The lock files of owners found gone, held locked until :meth:`forget` removes them."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self._held: list[tuple[Path, int]] = []

    def forget(self) -> None:
        """Remove the gone owners' files (their processes have been marked)."""
        for path, fd in self._held:
            _unlink(path)
            os.close(fd)
        self._held.clear()

    def release(self) -> None:
        """Let the locks go and keep the files (the database could not be updated)."""
        for _path, fd in self._held:
            os.close(fd)
        self._held.clear()


def listed(run_dir: Path) -> set[str]:
    """The tokens of every lock file in ``run_dir``."""
    try:
        return {path.name[:-len(SUFFIX)] for path in run_dir.iterdir() if path.name.endswith(SUFFIX)}
    except OSError:  # no folder yet
        return set()


def find_gone(run_dir: Path, tokens: set[str]) -> Gone:
    """Which of ``tokens`` belong to programs that have ended.

    An owner is gone when its lock file is missing or can be locked. The locks taken
    here are kept until :meth:`Gone.forget` (after the database has been updated)."""
    gone = Gone()
    if fcntl is None:
        return gone
    mine = own_tokens()
    for token in sorted(tokens - mine):
        if not _valid(token):
            continue
        path = run_dir / f"{token}{SUFFIX}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            gone.tokens.append(token)
            continue
        except OSError as error:  # cannot tell: assume alive, never mark a live owner's process
            log.warning("cannot check the owner %s (%s)", token, error)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                log.warning("cannot check the owner %s (%s)", token, error)
            continue  # locked: alive
        gone.tokens.append(token)
        gone._held.append((path, fd))
    return gone


def _valid(token: str) -> bool:
    """A token this module made (so a path built from it stays inside the run folder)."""
    pid, _, suffix = token.partition("-")
    return pid.isdigit() and len(suffix) == 12 and all(c in "0123456789abcdef" for c in suffix)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot remove %s: %s", path, error)


def _release_all() -> None:
    pid = os.getpid()
    with _guard:
        for (owner_pid, _), owner in list(_owners.items()):
            if owner_pid == pid:
                owner.release()
