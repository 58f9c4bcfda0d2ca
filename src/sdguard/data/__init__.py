"""data"""

from .world import WORLD_DEFAULTS, load_world, make_world
from .captions import KeywordFilter, filter_captions, filter_parquet, frequent_words
from .datasets import FORMATS, Dataset, Entries, detect_format, open_dataset
