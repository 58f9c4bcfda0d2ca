"""Datasets in the formats users have, caption tools, and the synthetic world."""

from .captions import KeywordFilter, filter_captions, filter_parquet, frequent_words
from .datasets import FORMATS, Dataset, Entries, detect_format, open_dataset
from .world import WORLD_DEFAULTS, load_world, make_world

__all__ = ["KeywordFilter", "filter_captions", "filter_parquet", "frequent_words", "FORMATS", "Dataset", "Entries",
           "detect_format", "open_dataset", "WORLD_DEFAULTS", "load_world", "make_world"]
