"""Result files written atomically, run folders locked: a crash, a kill or a second run never loses work.

A write goes to a hidden temporary file beside its target (`.<name>.<random>.tmp`), is fsynced and
renamed over the target. A process killed mid-write leaves only that temporary file, which the next
run in the folder removes (`remove_stale_temporaries`). Files get the user's umask like any other.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from pathlib import Path

TMP_SUFFIX = ".tmp"


class RunFolderLocked(ValueError):
    """Another process holds the run folder."""


class NonFiniteResult(ValueError):
    """A result about to be written holds NaN or infinity."""


def check_finite(obj, what: str = "result") -> None:
    """Refuse NaN and infinity anywhere in `obj` (nested dicts, lists, floats), naming where: they never reach disk."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise NonFiniteResult(
            f"{what} is {obj}; a non-finite number is never written (the run that produced it failed)"
        )
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{what}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{what}[{i}]")


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    # os.open applies the umask to 0o666, as open() does; mkstemp's files would be 0600 whatever the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path, obj) -> Path:
    """Atomically write `obj` as indented JSON; refused if it holds NaN or infinity."""
    check_finite(obj, Path(path).name)
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def write_csv(path, rows: list[dict]) -> Path:
    """Atomically write dict rows as CSV (the header is the union of keys in first-seen order); refused if they hold NaN
    or infinity."""
    check_finite(rows, Path(path).name)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_bytes(path, buf.getvalue().encode())


def read_csv(path) -> list[dict]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def remove_stale_temporaries(folder) -> int:
    """Delete the temporary files that killed writes left in `folder`; returns how many bytes were freed.

    Call it only while holding the folder (`lock_run_folder`), so no live write is removed.
    """
    freed = 0
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if tmp.is_file():
            freed += tmp.stat().st_size
            tmp.unlink(missing_ok=True)
    return freed


def lock_run_folder(folder, what: str = "run"):
    """Hold `folder` until the returned file is closed or the process ends: a second process asking for it gets a clear
    error.

    The lock is the operating system's (flock), so a killed process releases it at once. Returns the
    open lock file; keep a reference to it for as long as the folder is in use.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        raise RunFolderLocked(
            f"another {what} is using {folder} (pid {owner}); wait for it to finish, or choose another "
            "folder with hydra.run.dir=..."
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
