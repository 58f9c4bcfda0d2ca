"""The webdataset format: img2dataset ``.tar`` shards whose members share a key per sample."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from ...core.errors import InputError
from .base import InMemoryDataset, caption_of

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


class WebDataset(InMemoryDataset):
    """img2dataset webdataset shards: the members of one sample share a key (``KEY.jpg``, ``KEY.txt``)."""

    format = "webdataset"

    def __init__(self, path: str | Path):
        path = Path(path)
        self.shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
        self._members: list[tuple[int, tarfile.TarInfo | None]] = []
        self._open: dict[int, tarfile.TarFile] = {}
        names, texts = [], []
        for s, shard in enumerate(self.shards):
            try:
                tar = tarfile.open(shard, "r:*")
            except (tarfile.TarError, OSError) as exc:
                raise InputError.bad("DATASET", str(shard), f"is not a readable tar shard ({exc})") from None
            samples: dict[str, dict] = {}
            with tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    base = info.name.rsplit("/", 1)[-1]
                    if "." not in base:
                        continue
                    key = info.name[: len(info.name) - len(base)] + base.split(".", 1)[0]
                    ext = base.split(".", 1)[1].lower()
                    sample = samples.setdefault(key, {})
                    if ext in IMAGE_EXTENSIONS and "image" not in sample:
                        sample["image"] = info
                    elif ext == "txt":
                        sample["text"] = tar.extractfile(info).read().decode("utf-8", "replace").strip()
                    elif ext == "json" and "json_text" not in sample:
                        try:
                            meta = json.loads(tar.extractfile(info).read())
                            sample["json_text"] = caption_of(meta) if isinstance(meta, dict) else ""
                        except (ValueError, UnicodeDecodeError):
                            pass
            for key, sample in samples.items():
                if "image" not in sample and "text" not in sample and "json_text" not in sample:
                    continue
                info = sample.get("image")
                names.append(f"{shard.name}/{info.name if info is not None else key}")
                texts.append(sample.get("text", sample.get("json_text", "")))
                self._members.append((s, info))
        super().__init__(path, names, texts)

    def _index_files(self) -> list[Path]:
        return list(self.shards)

    def _sources(self, rows):
        for r in rows:
            s, info = self._members[r]
            if info is None:
                yield r, None
                continue
            tar = self._open.get(s)
            if tar is None:
                tar = self._open[s] = tarfile.open(self.shards[s], "r:*")
            try:
                yield r, tar.extractfile(info).read()
            except (tarfile.TarError, OSError):
                yield r, b""  # decodes as unreadable

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
