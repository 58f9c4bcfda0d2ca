"""The webdataset format: img2dataset ``.tar`` shards whose members share a key per sample.

A shard that ends in the middle of a member (an interrupted download or copy) is refused with one
sentence naming it, rather than read as the samples before the cut: how many samples were lost
cannot be known, and an audit of a silently partial dataset understates what it measures.
Re-download the shard or remove it from the folder.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections import Counter
from pathlib import Path

from ...core.errors import InputError
from .base import InMemoryDataset, caption_of

try:  # pragma: no cover - lzma is optional in some Python builds
    from lzma import LZMAError
except ImportError:  # pragma: no cover
    LZMAError = OSError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
#: what reading a damaged or truncated (possibly compressed) tar raises
TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, LZMAError, ValueError)


class WebDataset(InMemoryDataset):
    """img2dataset webdataset shards: the members of one sample share a key (``KEY.jpg``, ``KEY.txt``)."""

    format = "webdataset"

    def __init__(self, path: str | Path):
        path = Path(path)
        super().__init__(path, [], [])
        self.shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
        self._members: list[tuple[int, tarfile.TarInfo | None]] = []
        self._open: dict[int, tarfile.TarFile] = {}
        for s, shard in enumerate(self.shards):
            for key, sample in _read_shard(shard, self.issues).items():
                info = sample.get("image")
                self._file_names.append(f"{shard.name}/{info.name if info is not None else key}")
                self._texts.append(sample.get("text", sample.get("json_text", "")))
                self._members.append((s, info))

    def _index_files(self) -> list[Path]:
        return list(self.shards)

    def _sources(self, rows):
        for r in rows:
            s, info = self._members[r]
            if info is None:
                yield r, None
                continue
            try:
                tar = self._open.get(s)
                if tar is None:
                    tar = self._open[s] = tarfile.open(self.shards[s], "r:*")
                data = tar.extractfile(info).read()
            except TAR_ERRORS:
                data = b""  # decodes as unreadable
            yield r, data

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _read_shard(shard: Path, issues: Counter) -> dict[str, dict]:
    """The samples of one shard (key -> image member, caption), refused when it is truncated."""
    try:
        tar = tarfile.open(shard, "r:*")
    except TAR_ERRORS as exc:  # "r:*" lists every method it tried, one per line
        why = "neither a tar archive nor a gz, bz2 or xz compressed one" if "\n" in str(exc) else str(exc)
        raise InputError.bad("DATASET", str(shard), f"is not a readable tar shard ({why})") from None
    samples: dict[str, dict] = {}
    with tar:
        try:
            for info in tar:
                if info.isfile():
                    _add_member(tar, info, samples)
            _check_complete(shard, tar)
        except TAR_ERRORS as exc:
            last = tar.members[-1].name if tar.members else None
            where = f" at member {last!r}" if last else ""
            raise InputError.bad("DATASET", str(shard), f"is truncated or damaged{where} ({exc}); re-download "
                                 "it or remove it from the dataset") from None
    out = {}
    for key, sample in samples.items():
        if "image" not in sample and "text" not in sample and not sample.get("json"):
            continue
        if sample.pop("not_utf8", False):
            issues["captions_not_utf8"] += 1
        if "text" not in sample:
            if "json" in sample:
                sample["json_text"] = caption_of(sample.pop("json"), issues)
            else:
                issues["captions_missing"] += 1
        out[key] = sample
    return out


def _add_member(tar: tarfile.TarFile, info: tarfile.TarInfo, samples: dict[str, dict]) -> None:
    base = info.name.rsplit("/", 1)[-1]
    if "." not in base:
        return
    key = info.name[: len(info.name) - len(base)] + base.split(".", 1)[0]
    ext = base.split(".", 1)[1].lower()
    sample = samples.setdefault(key, {})
    if ext in IMAGE_EXTENSIONS and "image" not in sample:
        sample["image"] = info
    elif ext == "txt":
        raw = tar.extractfile(info).read()
        try:
            sample["text"] = raw.decode("utf-8").strip()
            sample.pop("not_utf8", None)
        except UnicodeDecodeError:
            sample["text"], sample["not_utf8"] = raw.decode("utf-8", "replace").strip(), True
    elif ext == "json" and "json" not in sample:
        try:
            meta = json.loads(tar.extractfile(info).read())
        except (ValueError, RecursionError):  # malformed JSON or text (UnicodeDecodeError is a ValueError)
            meta = None
        sample["json"] = meta if isinstance(meta, dict) else {}


def _check_complete(shard: Path, tar: tarfile.TarFile) -> None:
    """tarfile stops without a word at a cut inside (or right before) a member's header: the last
    member's data must be whole and followed by the end-of-archive marker (zero bytes)."""
    f = tar.fileobj
    if tar.members:
        last = tar.members[-1]
        if last.size:
            f.seek(last.offset_data + last.size - 1)
            if len(f.read(1)) != 1:
                raise tarfile.ReadError(f"member {last.name!r} ends early")
    f.seek(tar.offset)
    tail = f.read(tarfile.BLOCKSIZE)
    if not tail and tar.members:
        raise tarfile.ReadError("the shard ends right after it, without the end-of-archive marker")
    if tail.strip(b"\0"):
        raise tarfile.ReadError(f"a damaged or partial member header follows at byte {tar.offset}")
