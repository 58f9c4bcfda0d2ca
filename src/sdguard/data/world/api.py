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
from ...core.io import output_dir, read_json_lines, read_text
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
        written = [Record(d["file_name"], d["text"])
                   for d in _read_world_lines(staging / "metadata.jsonl", "OUT", ("file_name", "text"))]
        labels_written = _read_world_lines(staging / "labels.jsonl", "OUT", ("file_name",))
        truth = ground_truth(seed, size, image_size, written, labels_written, held)
        (staging / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def _write_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


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
    argument: str = field(default="world", repr=False, compare=False)  # what its errors name

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
                images[i] = self._read_image(r.file_name, s)
            self._cache["images"] = images
        if indices is None:
            return images
        return images[np.asarray(indices, np.int64)]

    def _read_image(self, file_name: str, size: int) -> np.ndarray:
        """One image of the world in [0, 1]; an unreadable or wrong-sized file is one sentence naming it."""
        path = self.root / file_name
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"), np.float32) / 255.0
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise InputError.bad(self.argument, str(path), f"is not a readable image ({exc}); {REMAKE}") from None
        if img.shape != (size, size, 3):
            raise InputError.bad(self.argument, str(path), f"is {img.shape[1]}x{img.shape[0]} pixels, not the world's "
                                 f"{size}x{size}; {REMAKE}")
        return img


#: the keys of ``ground_truth.json`` that :func:`make_world` writes and the readers of a world use
TRUTH_KEYS = ("format", "version", "seed", "size", "image_size", "counts", "duplicates", "cooccurrence", "spread",
              "objects", "styles", "held_out", "under_described", "vocabulary", "attributes")
REMAKE = "make the world again with `sdguard data make-world`"


def load_world(root: str | Path, argument: str = "world") -> World:
    """Read a world written by :func:`make_world` (its images are read by :meth:`World.load_images`).

    Raises:
        InputError (a ValueError): ``root`` is not a world folder, or one of its files is not
            what :func:`make_world` writes (the sentence names the file).
    """
    root = Path(root)
    needed = ("metadata.jsonl", "labels.jsonl", "ground_truth.json")
    if not root.is_dir():
        raise InputError.bad(argument, str(root), "is not a folder")
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise InputError.bad(
            argument, str(root), f"is not a world folder ({', '.join(missing)} missing); make one with make_world"
        )
    rows = _read_world_lines(root / "metadata.jsonl", argument, ("file_name", "text"))
    records = [Record(d["file_name"], d["text"]) for d in rows]
    labels = _read_world_lines(root / "labels.jsonl", argument, ("file_name",))
    truth = _read_truth(root / "ground_truth.json", argument)
    if len(records) != len(labels) or any(r.file_name != lab["file_name"] for r, lab in zip(records, labels)):
        raise InputError.bad(argument, str(root), "is inconsistent: metadata.jsonl and labels.jsonl do not match")
    return World(root=root, records=records, labels=labels, ground_truth=truth, argument=argument)


def _read_world_lines(path: Path, argument: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON lines of a world file, each an object with string ``keys``."""
    rows = []
    for number, row in read_json_lines(path, argument, REMAKE):
        if not all(isinstance(row.get(k), str) for k in keys):
            raise InputError.bad(argument, str(path), f"line {number} lacks {' or '.join(keys)}; {REMAKE}")
        rows.append(row)
    return rows


def _read_truth(path: Path, argument: str) -> dict[str, Any]:
    """``ground_truth.json``, checked for the keys a world has."""
    try:
        truth = json.loads(read_text(path, argument))
    except json.JSONDecodeError as exc:
        raise InputError.bad(argument, str(path), f"is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg}); {REMAKE}") from None
    if not isinstance(truth, dict):
        raise InputError.bad(argument, str(path), f"is not a JSON object; {REMAKE}")
    absent = [k for k in TRUTH_KEYS if k not in truth]
    if absent:
        raise InputError.bad(argument, str(path), f"lacks the key(s) {', '.join(absent)}; {REMAKE}")
    if truth["image_size"] not in IMAGE_SIZES or not isinstance(truth["image_size"], int):
        raise InputError.bad(argument, str(path), f"gives the image size {truth['image_size']!r}, not one of "
                             f"{', '.join(map(str, IMAGE_SIZES))}; {REMAKE}")
    vocabulary = truth["vocabulary"]
    if not isinstance(vocabulary, list) or not vocabulary or not all(isinstance(w, str) for w in vocabulary):
        raise InputError.bad(argument, str(path), f"gives no vocabulary (a list of words); {REMAKE}")
    return truth
