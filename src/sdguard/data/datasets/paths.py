"""Keeping what a dataset points at inside its folder (DESIGN.md, "Datasets are untrusted").

A dataset is input from someone else: its metadata may name ``../../home/me/private.png``, an
absolute path, or an image (or a folder on the way) that is a symlink out of the dataset. None of
those is ever read: the record is refused with one sentence naming it, before its image is opened,
so it can never reach an embedding or a ``report.html`` thumbnail. Symlinks that stay inside the
dataset folder are fine; ``allow_symlinks=True`` (an option of :func:`open_dataset`) also permits
symlinks that point outside, for datasets assembled from links on purpose. ``..`` and absolute
paths are refused either way.

Absolute and ``..`` paths are checked for every record when the dataset is opened (a string test);
symlinks when the record's image is about to be read (one ``lstat`` per image, and one ``realpath``
per folder), so opening a dataset of millions of records does not touch millions of files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ...core.errors import InputError


def outside(dataset: str | Path, record: int | str, column: str, name: str) -> InputError:
    """The one sentence refusing ``record`` (its 1-based position, or a file name) of ``dataset``."""
    what = f"record {record} ({column} {name!r})" if isinstance(record, int) else repr(str(record))
    return InputError(f"DATASET {str(dataset)!r}: {what} points outside the dataset folder.")


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


class RecordPaths:
    """The image paths of a dataset's records, kept inside their folder (see the module docstring).

    ``dataset`` is the dataset as the user named it (for messages); ``column`` the name of the
    metadata field that holds the paths (``file_name``, ``image_path``, ...).
    """

    def __init__(self, dataset: str | Path, allow_symlinks: bool = False):
        self.dataset, self.allow_symlinks = dataset, allow_symlinks
        self._real: dict[str, str] = {}  # folder -> its realpath

    def relative(self, record: int, column: str, name: str) -> str:
        """``name`` normalised (``a/./b`` is ``a/b``); refused when absolute or climbing out with ``..``."""
        if os.path.isabs(name) or os.path.splitdrive(name)[0] or name.startswith(("/", os.sep)):
            raise outside(self.dataset, record, column, name)
        norm = os.path.normpath(name)
        if norm == os.pardir or norm.startswith(os.pardir + os.sep):
            raise outside(self.dataset, record, column, name)
        return norm

    def check_all(self, column: str, names: Iterable[str], start: int = 1) -> None:
        """:meth:`relative` for every non-empty name (records numbered from ``start``)."""
        for k, name in enumerate(names, start):
            if name:
                self.relative(k, column, name)

    def _realdir(self, folder: str) -> str:
        real = self._real.get(folder)
        if real is None:
            real = self._real[folder] = os.path.realpath(folder)
        return real

    def resolve(self, record: int, column: str, name: str, root: Path) -> Path:
        """The path to read for ``name`` under ``root``; refused when it leaves ``root`` (through a
        symlink too, unless ``allow_symlinks``)."""
        path = os.path.join(root, self.relative(record, column, name))
        if self.allow_symlinks or "\0" in path:  # a NUL byte cannot be opened: it reads as unreadable
            return Path(path)
        parent, base = os.path.split(path)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(self._realdir(parent), base)
        if not _within(real, self._realdir(str(root))):
            raise outside(self.dataset, record, column, name)
        return Path(real)


def check_files_inside(dataset: Path, files: Iterable[Path], allow_symlinks: bool = False) -> None:
    """The shards or tables found in the folder ``dataset`` must not be symlinks out of it."""
    if allow_symlinks:
        return
    root = os.path.realpath(dataset)
    for f in files:
        if not _within(os.path.realpath(f), root):
            raise outside(dataset, f.name, "", f.name)
