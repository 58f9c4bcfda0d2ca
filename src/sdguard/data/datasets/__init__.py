"""Image-caption datasets in the formats users have (DESIGN.md, "Dataset").

- ``imagefolder``: a folder with images and ``metadata.jsonl`` (one JSON object per line with
  ``file_name`` and ``text``: the Hugging Face imagefolder convention; ``metadata.csv`` works too).
  The path may also be the ``metadata.jsonl`` file itself.
- ``webdataset``: img2dataset's webdataset output, a ``.tar`` shard or a folder of them, where the
  members of one sample share a key (``000000123.jpg``, ``000000123.txt``, ``000000123.json``).
- ``parquet-images``: img2dataset's parquet output, ``.parquet`` file(s) (or a folder of them)
  with the image bytes in a column (``jpg``, ``png``, ``webp``, ``image``, ...) beside the caption.
- ``captions``: a caption table, ``.csv`` or ``.parquet`` (or a folder of them), with a column of
  image paths (``file_name``, ``image_path``, ``path``, ...; relative to the table's folder) and a
  caption column (``text``, ``caption``, ``prompt``).

Every format reads as a :class:`Dataset`: a sequence of entries (``row``, ``file_name``,
``text``) and the images behind them. Captions are filtered where they live: in memory for
small formats, in DuckDB over parquet (see :mod:`sdguard.data.captions`), so metadata of
millions of rows never passes through Python. Images are decoded only when asked for; a missing
or unreadable image is reported per entry and counted, never fatal.

Datasets are untrusted input (:mod:`.paths`): a record whose image path leaves the dataset folder
(``..``, an absolute path, a symlink out unless ``open_dataset(..., allow_symlinks=True)``) is
refused before anything is read; truncated shards, unparseable metadata and invalid UTF-8 are
refused naming the file and line; captions that are not text read as "" and are counted per
reason in ``Dataset.issues`` (``describe()["issues"]``).
"""

from .base import (
    CAPTION_ISSUES,
    FORMATS,
    Dataset,
    Entries,
    LoadedImage,
    SkipCounter,
    decode_image,
    formats_sentence,
    issues_sentence,
)
from .folder import ImageFolder
from .open import detect_format, open_dataset
from .parquet import CaptionTable, ParquetImages
from .paths import RecordPaths
from .webdataset import WebDataset

__all__ = [
    "FORMATS", "Dataset", "Entries", "LoadedImage", "SkipCounter", "ImageFolder", "WebDataset", "ParquetImages",
    "CaptionTable", "open_dataset", "detect_format", "decode_image", "formats_sentence", "CAPTION_ISSUES",
    "issues_sentence", "RecordPaths",
]
