"""One crawl per SQLite file: an exclusive ``flock`` on a lock file beside the database.

``spotify.db`` is guarded by ``spotify.db.lock``, which holds the holder's pid, host and start
time as JSON (for the message a second crawl prints; the lock itself is the ``flock``). The
kernel drops a ``flock`` when its process dies, however it dies (SIGKILL, OOM killer), so a lock
file left behind by a dead crawl is stale by construction and the next crawl simply takes it over.

The holder removes the file when it stops. A process that opened the file just before that
removal would lock an inode no longer at that path, so the lock counts only once the locked
descriptor and the path name the same inode; otherwise the taker opens the path again.

Readers (``stats``, ``export``, ``limits``) take no lock: they open the database read-only,
which SQLite's WAL lets them do beside the writer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import StoreError

__all__ = ["DatabaseInUseError", "DatabaseLock", "ensure_free", "lock_path"]

_TRIES = 5  # opens of the path that may each meet a file removed under us


class DatabaseInUseError(StoreError):
    """Another live crawl holds the database's lock file."""


def lock_path(db: Path) -> Path:
    """The lock file of the database ``db``: beside the file itself, whatever symlink names it."""
    real = db.resolve()
    return real.with_name(real.name + ".lock")


def _holder_text(info: dict[str, Any]) -> str:
    """``pid 123, started 14:02`` (with the host when it is another machine's)."""
    parts = [f"pid {info.get('pid', '?')}"]
    host = info.get("host")
    if host and host != socket.gethostname():
        parts[0] += f" on {host}"
    started = info.get("started")
    if isinstance(started, (int, float)):
        when = _dt.datetime.fromtimestamp(started).astimezone()
        today = when.date() == _dt.datetime.now().astimezone().date()
        parts.append("started " + when.strftime("%H:%M" if today else "%Y-%m-%d %H:%M"))
    return ", ".join(parts)


def _in_use(db: Path, fd: int) -> DatabaseInUseError:
    holder = _holder_text(_read_info(fd))
    return DatabaseInUseError(f"another crawl ({holder}) is using {db.name}; stop it first")


def ensure_free(db: Path) -> None:
    """Raise :class:`DatabaseInUseError` if a live crawl holds the lock of ``db``; takes nothing.

    A crawl calls it before its start-up work, to refuse at once; :meth:`DatabaseLock.acquire`
    decides.
    """
    try:
        fd = os.open(lock_path(db), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file: no crawl (a folder that is not there is named later)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(db, fd) from None
    except OSError:
        return
    finally:
        os.close(fd)


class DatabaseLock:
    """The exclusive lock of one database file, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = lock_path(db)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DatabaseInUseError` naming its holder at once."""
        for _ in range(_TRIES):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                error = _in_use(self.db, fd)
                os.close(fd)
                raise error from None
            except OSError as exc:
                os.close(fd)
                raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from None
            if _same_file(fd, self.path):
                self._fd = fd
                self._write_info()
                return
            os.close(fd)  # the holder removed the file as we opened it: open the new one
        raise StoreError(f"cannot lock {self.path}: it keeps being replaced; try again")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create the lock file {self.path}: {exc.strerror} (a crawl needs to "
                f"write in {self.path.parent})"
            ) from None

    def _write_info(self) -> None:
        assert self._fd is not None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        data = json.dumps(info).encode() + b"\n"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Remove the lock file and drop the lock (removal first: see the module docstring)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> DatabaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_info(fd: int) -> dict[str, Any]:
    """What the holder wrote in the lock file ({} when unreadable: it may be writing it now)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
