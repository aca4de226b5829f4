"""Files and folders that appear whole or not at all: written under a temporary name beside their
target, flushed to disk, then renamed into place (a rename within one file system is atomic).

A process killed mid-write leaves at most a temporary ``.<name>.<pid>.tmp<suffix>`` (or a staging
folder ``.<name>.<random>.tmp``), never a torn target; readers never see half a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """The temporary name of ``path`` while it is written; it keeps the suffix, because some writers
    choose the format by it (``np.savez`` appends ``.npz`` to any other name)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer to fill; when the block succeeds it is
    flushed to disk and moved onto ``path``, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


@contextlib.contextmanager
def atomic_directory(path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block succeeds it replaces ``path``
    (an older folder there is moved aside first and then deleted), otherwise it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the folder is for reading
        yield staging
        previous = None
        if path.exists():
            previous = path.with_name(f".{path.name}.{os.getpid()}.old")
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(path, previous)
        os.replace(staging, path)
        if previous is not None:
            shutil.rmtree(previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_new_path(path) -> Iterator[Path]:
    """Yield a not-yet-existing path named like ``path`` inside a staging folder beside it, for writers
    that create their target themselves and name its contents after it (a rosbag2 folder); when the
    block succeeds it is moved onto ``path`` (FileExistsError if something appeared there),
    otherwise deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging / path.name
        if path.exists():
            raise FileExistsError(f"{path} appeared while it was written")
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
