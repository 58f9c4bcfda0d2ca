"""Caption filtering and word statistics for the dataset replication audit.

The first steps of the dataset study of Somepalli et al. 2023 ("Understanding and Mitigating
Copying in Diffusion Models", NeurIPS): keep the entries whose captions contain the keywords of
interest, drop captions longer than the text encoder's 77 tokens (they are truncated in training,
so the study leaves them out), and describe each near-duplicate cluster by its most frequent
caption words, stop words removed.

Matching is on whole words, case-insensitively. A caption and a keyword are both reduced to their
sequence of lower-case words (runs of Unicode letters and digits; everything else separates
words), and a keyword matches when its words occur contiguously in the caption's words: "van
gogh" matches "Starry Night by Van Gogh." but not "vangogh", "Night" does not match "nightly",
and "t-shirt" matches "t shirt". The same rule runs in Python (:class:`KeywordFilter.matches`) and
as SQL in DuckDB (:meth:`KeywordFilter.sql`, :func:`filter_parquet`), so a LAION metadata shard of
millions of rows filters in seconds without loading its captions into Python.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..core.errors import InputError, require

#: The context length of the CLIP text encoder of Stable Diffusion v1/v2 (start and end included).
MAX_TOKENS = 77

_WORD = re.compile(r"[^\W_]+")
#: the pieces CLIP's tokenizer splits a lower-cased text into before its byte-pair merges (its
#: ``pat``: contractions, runs of letters, single digits, runs of other symbols)
_CLIP_PIECE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")
#: the characters of a word-level tokenizer's words (:func:`sdguard.models.components.build_tokenizer`)
WORD_CHARS = string.ascii_lowercase + string.digits + "'-"
_TOKEN_ESTIMATE = re.compile(r"[^\W_]+|[^\w\s]|_")

#: English function words left out of the frequent-word lists (articles, pronouns, prepositions,
#: conjunctions, auxiliaries and a few caption fillers). Content words such as "top", "night" or
#: "bottom" are kept on purpose: in captions they carry meaning.
STOP_WORDS: frozenset[str] = frozenset(
    """
    a an the and or but nor so yet if then else than as of at by for from in into onto on off out
    over under up down to with without within about above below across after against along among
    around before behind beneath beside besides between beyond during except inside near outside
    past since through throughout toward towards upon via per
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves one ones
    this that these those who whom whose which what when where why how there here
    is am are was were be been being have has had having do does did doing done will would shall
    should can could may might must ought not no nor only very too also just ever even still
    all any both each every few more most other some such own same many much several
    s t d ll m o re ve y
    """.split()
)


def normalize_text(text: str) -> str:
    """A caption as its lower-case words joined by single spaces (the unit of keyword matching)."""
    if not isinstance(text, str):
        return ""
    return " ".join(_WORD.findall(unicodedata.normalize("NFC", text).lower()))


def words(text: str) -> list[str]:
    """The lower-case words of ``text`` (runs of letters and digits)."""
    return _WORD.findall(unicodedata.normalize("NFC", text).lower()) if isinstance(text, str) else []


def tokenizer_pieces(text: str) -> list[str]:
    """The pieces of ``text`` that CLIP's tokenizer looks up (lower case, whitespace collapsed):
    ``"Aldora's 2 lighthouses, red"`` gives ``aldora 's 2 lighthouses , red``."""
    if not isinstance(text, str):
        return []
    return _CLIP_PIECE.findall(" ".join(text.lower().split()))


def caption_vocabulary(texts: Iterable[str], max_words: int | None = None) -> list[str]:
    """The word vocabulary of a word-level tokenizer made from captions (sorted): every piece of
    :func:`tokenizer_pieces` written in :data:`WORD_CHARS` (letters outside a-z, punctuation and
    symbols are left to the tokenizer's character fallback). With ``max_words``, the words found in
    the most captions (ties alphabetically)."""
    allowed = frozenset(WORD_CHARS)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update({p for p in tokenizer_pieces(text) if allowed.issuperset(p)})
    if max_words is None:
        return sorted(counts)
    return sorted(sorted(counts, key=lambda w: (-counts[w], w))[:max_words])


def contains_phrase(text: str, phrase: str) -> bool:
    """The one whole-word matcher of captions and prompts: the words of ``phrase`` occur
    contiguously among the words of ``text`` (:func:`words`: case, punctuation and spacing
    ignored, so "Astronaut," and "an astronaut." both hold "astronaut"; "astro" does not)."""
    needle = normalize_text(phrase)
    return bool(needle) and f" {needle} " in f" {normalize_text(text)} "


def without_word(text: str, word: str) -> str:
    """``text`` without the space-separated tokens whose words are exactly ``word`` (its other
    tokens, punctuation included, kept as written)."""
    return " ".join(t for t in text.split() if normalize_text(t) != normalize_text(word))


def estimate_tokens(text: str) -> int:
    """A lower bound of the CLIP token count of ``text``: its words and punctuation marks, plus the
    start and end tokens. CLIP's byte-pair encoding never uses fewer tokens than this, often more
    for rare words; pass a tokenizer to :func:`count_tokens` for the exact number."""
    if not isinstance(text, str):
        return 2
    return len(_TOKEN_ESTIMATE.findall(text)) + 2


def count_tokens(texts: Sequence[str], tokenizer=None, *, truncate: bool = False) -> list[int]:
    """The one token count: tokens of each text with start and end tokens, exact with a tokenizer
    (a ``transformers`` tokenizer object, or a folder or hub id that ``CLIPTokenizer`` loads; a
    diffusers pipeline folder is searched for ``tokenizer/``), else :func:`estimate_tokens`.
    ``truncate``: at most the tokenizer's ``model_max_length`` (what the text encoder reads)."""
    if tokenizer is None:
        counts = [estimate_tokens(t) for t in texts]
        return [min(c, MAX_TOKENS) for c in counts] if truncate else counts
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    ids = tok([t if isinstance(t, str) else "" for t in texts], add_special_tokens=True, truncation=False)["input_ids"]
    limit = int(tok.model_max_length)
    return [min(len(x), limit) if truncate else len(x) for x in ids]


def load_tokenizer(spec: str | Path):
    """Load a CLIP tokenizer from a folder (or its ``tokenizer/`` subfolder) or a hub id."""
    from transformers import CLIPTokenizer

    path = Path(spec)
    candidates = [path / "tokenizer", path] if path.is_dir() else [spec]
    last: Exception | None = None
    for cand in candidates:
        try:
            return CLIPTokenizer.from_pretrained(str(cand))
        except Exception as exc:  # noqa: BLE001 - transformers raises several kinds
            last = exc
    raise InputError.bad("--tokenizer", str(spec), f"is not a CLIP tokenizer folder or reachable hub id ({last})")


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class KeywordFilter:
    """Entries whose caption contains all (``any=False``) or any (``any=True``) of ``keywords``.

    No keywords selects every entry. Each keyword is matched as whole words, case-insensitively
    (see the module docstring); a keyword without any letter or digit is an input error.
    """

    keywords: tuple[str, ...] = ()
    any: bool = False
    normalized: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        kws = tuple(self.keywords or ())
        normed = []
        for kw in kws:
            if not isinstance(kw, str):
                raise InputError.bad("--keyword", kw, "is not text")
            n = normalize_text(kw)
            if not n:
                raise InputError.bad("--keyword", kw, "has no letter or digit to match")
            normed.append(n)
        object.__setattr__(self, "keywords", kws)
        object.__setattr__(self, "normalized", tuple(normed))

    @property
    def mode(self) -> str:
        return "any" if self.any else "all"

    def describe(self) -> str:
        if not self.keywords:
            return "all entries"
        joiner = " OR " if self.any else " AND "
        return joiner.join(repr(k) for k in self.keywords)

    def matches(self, text: str) -> bool:
        if not self.normalized:
            return True
        hits = (contains_phrase(text, kw) for kw in self.normalized)
        return any(hits) if self.any else all(hits)

    def mask(self, texts: Iterable[str]) -> list[bool]:
        return [self.matches(t) for t in texts]

    def sql(self, column: str) -> str:
        """A DuckDB boolean expression of this filter over the caption column ``column``.

        Each keyword becomes one RE2 match, case-insensitive, of its words separated by runs of
        non-letters and bounded by the caption's ends or non-letters: the rule of
        :meth:`matches`, at about a million captions per second and core.
        """
        if not self.normalized:
            return "TRUE"
        col = f'CAST("{column}" AS VARCHAR)'
        terms = []
        for kw in self.normalized:
            body = "[^\\pL\\pN]+".join(kw.split(" "))  # words are letters and digits only
            pattern = "(^|[^\\pL\\pN])" + body + "($|[^\\pL\\pN])"
            terms.append(f"coalesce(regexp_matches({col}, {_sql_literal(pattern)}, 'i'), FALSE)")
        return "(" + (" OR " if self.any else " AND ").join(terms) + ")"


@dataclass
class FilterResult:
    """Indices of kept entries, and how many matched before long captions were dropped."""

    kept: list[int]
    matched: int
    dropped_long: int
    max_tokens: int

    def to_dict(self) -> dict:
        return {"matched": self.matched, "dropped_long": self.dropped_long, "kept": len(self.kept),
                "max_tokens": self.max_tokens}


def drop_long(texts: Sequence[str], max_tokens: int = MAX_TOKENS, tokenizer=None) -> list[bool]:
    """``True`` for captions that fit in ``max_tokens`` tokens (start and end tokens included)."""
    return [n <= max_tokens for n in count_tokens(texts, tokenizer)]


def filter_captions(texts: Sequence[str], keywords: Sequence[str] | KeywordFilter = (), *, any: bool = False,
                    max_tokens: int | None = MAX_TOKENS, tokenizer=None) -> FilterResult:
    """Keyword filter over captions in memory, then long captions dropped (Somepalli et al. 2023)."""
    flt = keywords if isinstance(keywords, KeywordFilter) else KeywordFilter(tuple(keywords), any)
    matched = [i for i, t in enumerate(texts) if flt.matches(t)]
    if max_tokens is None:
        return FilterResult(matched, len(matched), 0, 0)
    fits = drop_long([texts[i] for i in matched], max_tokens, tokenizer)
    kept = [i for i, ok in zip(matched, fits) if ok]
    return FilterResult(kept, len(matched), len(matched) - len(kept), max_tokens)


def duckdb_connect(threads: int | None = None):
    """A DuckDB connection (the ``[scale]`` extra)."""
    duckdb = require("duckdb", "scale", "caption filtering over parquet")
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def parquet_list_sql(paths: Sequence[str | Path]) -> str:
    return "[" + ", ".join(_sql_literal(str(p)) for p in paths) + "]"


def filter_parquet(paths: str | Path | Sequence[str | Path], keywords: Sequence[str] | KeywordFilter = (), *,
                   any: bool = False, text_column: str = "text", columns: Sequence[str] = (),
                   row_number: bool = True, con=None):
    """Run the keyword filter in DuckDB over parquet file(s); returns a ``pyarrow.Table``.

    The table holds ``columns`` (default: the caption column), the caption as ``text``, and, with
    ``row_number``, ``row`` — the entry's position in the concatenation of ``paths`` in order —
    so the caller can fetch the matching images. Long captions are *not* dropped here (see
    :func:`drop_long`): the token count needs the caption in Python, and after filtering few
    remain.
    """
    flt = keywords if isinstance(keywords, KeywordFilter) else KeywordFilter(tuple(keywords), any)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    con = con or duckdb_connect()
    select = [f'"{c}"' for c in columns if c != text_column]
    source = f"read_parquet({parquet_list_sql(paths)}, file_row_number = true, filename = true)"
    # a global row number in file order: per-file offsets plus the row's position in its file
    offsets = ""
    if row_number:
        counts = con.execute(
            f"SELECT filename, count(*) AS n FROM read_parquet({parquet_list_sql(paths)}, filename = true) GROUP BY filename"
        ).fetchall()
        by_name = {name: n for name, n in counts}
        start, cases = 0, []
        for p in paths:
            key = _match_filename(str(p), by_name)
            cases.append(f"WHEN filename = {_sql_literal(key)} THEN {start}")
            start += by_name.get(key, 0)
        offsets = "file_row_number AS row, "
        if cases:
            offsets = "(CASE " + " ".join(cases) + " ELSE 0 END) + " + offsets
    query = (f"SELECT {offsets}{', '.join(select) + ', ' if select else ''}CAST(\"{text_column}\" AS VARCHAR) AS text "
             f"FROM {source} WHERE {flt.sql(text_column)}")
    if row_number:
        query += " ORDER BY row"
    return arrow_result(con.sql(query))


def arrow_result(result):
    """A DuckDB relation as a ``pyarrow.Table`` (the method's name changed across DuckDB versions)."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        fetch = getattr(result, name, None)
        if fetch is not None:
            return fetch()
    raise AttributeError("this DuckDB version has no Arrow export")  # pragma: no cover


def _match_filename(path: str, names: dict[str, int]) -> str:
    if path in names:
        return path
    resolved = str(Path(path).resolve())
    for name in names:
        if name == resolved or str(Path(name).resolve()) == resolved:
            return name
    return path


def frequent_words(texts: Iterable[str], top: int = 10, *, stop_words: Iterable[str] = STOP_WORDS,
                   min_length: int = 1) -> list[dict]:
    """The ``top`` words found in the most captions of ``texts`` (each caption counts a word once),
    stop words removed: ``[{"word", "count", "share"}]``, ties broken alphabetically."""
    stop = frozenset(stop_words)
    counts: Counter[str] = Counter()
    n = 0
    for text in texts:
        n += 1
        counts.update({w for w in words(text) if w not in stop and len(w) >= min_length and not w.isdigit()})
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"word": w, "count": c, "share": c / n} for w, c in ranked]


def frequent_phrases(texts: Iterable[str], top: int = 10, *, stop_words: Iterable[str] = STOP_WORDS,
                     min_count: int = 3, collocation: float = 0.5) -> list[dict]:
    """The ``top`` phrases of one or two words found in the most captions (each caption counts a
    phrase once, stop words removed before pairing): a pair of neighbouring words is a phrase when
    it is in at least ``collocation`` of the captions of its rarer word ("pearl earring", "van
    gogh"), and a single word is one when no chosen pair holds it. ``[{"phrase", "count", "share"}]``,
    ties broken alphabetically; phrases in fewer than ``min_count`` captions are left out."""
    stop = frozenset(stop_words)
    one: Counter[str] = Counter()
    two: Counter[str] = Counter()
    n = 0
    for text in texts:
        n += 1
        ws = [w for w in words(text) if w not in stop and not w.isdigit()]
        one.update(set(ws))
        two.update({f"{a} {b}" for a, b in zip(ws, ws[1:]) if a != b})
    pairs = {p: c for p, c in two.items() if c >= min_count and c >= collocation * min(one[w] for w in p.split())}
    paired = {w for p in pairs for w in p.split()}
    # a word is covered by its pair only where the pair is nearly all of its captions
    singles = {w: c for w, c in one.items() if c >= min_count and
               (w not in paired or max(pc for p, pc in pairs.items() if w in p.split()) < collocation * c)}
    ranked = sorted({**pairs, **singles}.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"phrase": p, "count": c, "share": c / max(1, n)} for p, c in ranked]
