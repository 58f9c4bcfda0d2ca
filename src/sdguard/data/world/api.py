"""Writing a world (:func:`make_world`) and reading it back (:func:`load_world`, :class:`World`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Literal, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

from ...core.config import RunConfig, build, option
from ...core.errors import InputError
from ...core.io import output_dir
from .artworks import ARTWORKS, paint_artwork
from .captions import MAX_CAPTION_WORDS, tokenize
from .plan import image_labels, plan_world
from .render import render_image
from .truth import ground_truth

__all__ = ["WORLD_DEFAULTS", "WorldConfig", "MIN_SIZE", "MAX_SIZE", "IMAGE_SIZES", "Record", "World", "make_world", "load_world"]

#: The world the builtin tiny model is trained on: ``make_world(out, **WORLD_DEFAULTS)``.
WORLD_DEFAULTS: Mapping[str, int] = MappingProxyType({"seed": 0, "size": 5000, "image_size": 32})
MIN_SIZE = 500
#: a bound on a world made on one machine (5000 images take about 10 s; 1M about an hour and 2 GB)
MAX_SIZE = 1_000_000
IMAGE_SIZES = (32, 64)


class Record(NamedTuple):
    """One line of ``metadata.jsonl``."""

    file_name: str
    text: str


class WorldConfig(RunConfig):
    """Make the synthetic captioned world with planted replication (imagefolder + ground_truth.json)."""

    out: str = option(positional=True, metavar="OUT", help="folder to create")
    seed: int = option(0, strict=True, ge=0, le=2**32 - 1, help="world seed (0: the world builtin:tiny was trained on)")
    size: int = option(5000, strict=True, ge=MIN_SIZE, le=MAX_SIZE, help="number of images")
    image_size: Literal[IMAGE_SIZES] = option(32, help=" or ".join(map(str, IMAGE_SIZES)) +  # type: ignore[valid-type]
                                              " pixels square")


def make_world(*args: Any, **values: Any) -> dict[str, Any]:
    """Write the synthetic captioned image world to ``out`` and return its ground truth.

    ``make_world(out, seed=0, size=5000, image_size=32)`` or ``make_world(WorldConfig(...))``.
    ``out`` receives ``images/00000.png ...`` (RGB, ``image_size`` square), ``metadata.jsonl``
    (``file_name``, ``text``: the Hugging Face imagefolder convention), ``labels.jsonl`` (the
    generator's labels of every image) and ``ground_truth.json`` (the planted cases, see the
    package docstring; Somepalli et al. 2023). The folder is built beside ``out`` and renamed into
    place at the end, so a failure leaves nothing behind. The same arguments give byte-identical
    files.

    Raises:
        InputError (a ValueError): ``out`` exists and is not an empty folder, ``size`` outside
            [500, 1,000,000], ``image_size`` not 32 or 64, or ``seed`` not a non-negative integer.
    """
    cfg = build(WorldConfig, args, values)
    seed, size, image_size = cfg.seed, cfg.size, cfg.image_size
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError.bad("OUT", str(out), "is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError.bad("OUT", str(out), "already exists and is not empty; choose a new folder")

    plan, held = plan_world(seed, size)
    artworks = {a.name: paint_artwork(a, image_size) for a in ARTWORKS}
    streams = np.random.SeedSequence([seed, 2]).spawn(len(plan))
    width = max(5, len(str(size - 1)))
    records: list[Record] = []
    labels: list[dict[str, Any]] = []
    with output_dir(out, command="data make-world", argument="OUT") as staging:
        (staging / "images").mkdir()
        for i, spec in enumerate(plan):
            file_name = f"images/{i:0{width}d}.png"
            img = render_image(spec, image_size, np.random.default_rng(streams[i]), artworks)
            Image.fromarray(img, "RGB").save(staging / file_name, format="PNG")
            records.append(Record(file_name, spec["text"]))
            labels.append({"file_name": file_name, **image_labels(spec)})
        too_long = [r.text for r in records if len(tokenize(r.text)) > MAX_CAPTION_WORDS]
        if too_long:  # pragma: no cover - a bug in the caption tables
            raise RuntimeError(f"captions longer than {MAX_CAPTION_WORDS} words: {too_long[:3]}")
        _write_lines(staging / "metadata.jsonl", ({"file_name": r.file_name, "text": r.text} for r in records))
        _write_lines(staging / "labels.jsonl", labels)
        # the ground truth is computed from the files as written
        written = [Record(d["file_name"], d["text"]) for d in _read_lines(staging / "metadata.jsonl")]
        truth = ground_truth(seed, size, image_size, written, _read_lines(staging / "labels.jsonl"), held)
        (staging / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def _write_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _read_lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class World:
    """A world written by :func:`make_world`, read back by :func:`load_world`.

    ``records`` and ``labels`` are in file order (index ``i`` of one is index ``i`` of the
    other); ``ground_truth`` is ``ground_truth.json``.
    """

    root: Path
    records: list[Record]
    labels: list[dict[str, Any]]
    ground_truth: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_size(self) -> int:
        return int(self.ground_truth["image_size"])

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    @property
    def file_names(self) -> list[str]:
        return [r.file_name for r in self.records]

    def index_of(self, file_name: str) -> int:
        """Position of ``file_name`` (as written in metadata.jsonl) in the world."""
        table = self._cache.get("index")
        if table is None:
            table = self._cache["index"] = {r.file_name: i for i, r in enumerate(self.records)}
        return table[file_name]

    def where(self, **conditions: Any) -> np.ndarray:
        """Indices of the images whose labels equal all ``conditions``, e.g. ``where(kind="scene")``."""
        return np.array(
            [i for i, lab in enumerate(self.labels) if all(lab.get(k) == v for k, v in conditions.items())], np.int64
        )

    def artwork_of(self, index: int) -> str | None:
        """Name of the artwork image ``index`` is a copy of, or None."""
        return self.labels[int(index)]["artwork"]

    def load_images(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Images as float32 ``N x H x W x 3`` in [0, 1]; all of them when ``indices`` is None.

        The whole world is decoded once and kept (5000 32x32 images are 60 MB).
        """
        images = self._cache.get("images")
        if images is None:
            s = self.image_size
            images = np.empty((len(self), s, s, 3), np.float32)
            for i, r in enumerate(self.records):
                with Image.open(self.root / r.file_name) as im:
                    images[i] = np.asarray(im.convert("RGB"), np.float32) / 255.0
            self._cache["images"] = images
        if indices is None:
            return images
        return images[np.asarray(indices, np.int64)]


def load_world(root: str | Path) -> World:
    """Read a world written by :func:`make_world`.

    Raises:
        InputError (a ValueError): ``root`` is not a world folder.
    """
    root = Path(root)
    needed = ("metadata.jsonl", "labels.jsonl", "ground_truth.json")
    if not root.is_dir():
        raise InputError.bad("world", str(root), "is not a folder")
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise InputError.bad(
            "world", str(root), f"is not a world folder ({', '.join(missing)} missing); make one with make_world"
        )
    records = [Record(d["file_name"], d["text"]) for d in _read_lines(root / "metadata.jsonl")]
    labels = _read_lines(root / "labels.jsonl")
    truth = json.loads((root / "ground_truth.json").read_text(encoding="utf-8"))
    if len(records) != len(labels) or any(r.file_name != lab["file_name"] for r, lab in zip(records, labels)):
        raise InputError.bad("world", str(root), "is inconsistent: metadata.jsonl and labels.jsonl do not match")
    return World(root=root, records=records, labels=labels, ground_truth=truth)
