"""``sdguard desensitize``'s options: one config, each option declared once (the near-duplicate
search's options are ``sdguard audit data``'s, :class:`~sdguard.audit.dataset_replication.ClusterOptions`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator, model_validator

from ...audit.dataset_replication import ClusterOptions
from ...core.config import ResumableConfig, option
from ...core.errors import InputError
from .diversify import DIVERSIFY_METHODS

DEDUP_HELP = "off, keep-one (one image per near-duplicate cluster) or cap:K (at most K per cluster)"


def parse_dedup(value: str, argument: str = "--dedup") -> int | None:
    """Copies kept per cluster: None for ``off``, 1 for ``keep-one``, K for ``cap:K``."""
    if value == "off":
        return None
    if value == "keep-one":
        return 1
    m = re.fullmatch(r"cap:(\d+)", value)
    if m and int(m.group(1)) >= 1:
        return int(m.group(1))
    raise InputError.bad(argument, value, f"is not a deduplication policy; use {DEDUP_HELP}")


class DesensitizeConfig(ResumableConfig, ClusterOptions):
    """Desensitize a dataset before training: personal data in captions, faces, metadata, near-duplicates."""

    python_positional = ("dataset", "out")
    #: the progress of a run and where it goes change no record
    presentation_fields = ResumableConfig.presentation_fields | {"cache", "cache_dir", "threads"}

    dataset: str = option(positional=True, help="the dataset to clean (any format: imagefolder, webdataset shards, "
                          "parquet with image bytes, a caption table); never modified")
    out: str = option(help="output folder: the cleaned dataset in the same format, manifest.jsonl, the report")
    # captions
    pii: list[str] = option(default_factory=lambda: ["replace"], help="what to do with personal data in captions: "
                            "replace, mask, drop (the record) or off, for every entity type, or TYPE=ACTION for one "
                            "(repeat; later ones win)")
    entities: list[str] = option(flag="--entity", default_factory=list, help="an entity type to search for (repeat; "
                                 "default all: EMAIL_ADDRESS, PHONE_NUMBER, URL, CREDIT_CARD, IP_ADDRESS, IBAN_CODE, "
                                 "and PERSON, LOCATION with --spacy-model)")
    spacy_model: str | None = option(None, help="a local spaCy pipeline (folder or installed package) for PERSON and "
                                     "LOCATION names (without it, the regex recognizers only)")
    pii_replacement: str | None = option(None, help="text put in place of a replaced entity (default <ENTITY_TYPE>; "
                                         "'' removes it)")
    pii_min_score: float = option(0.0, ge=0.0, le=1.0, help="ignore findings Presidio scores below this")
    drop_fields: list[str] = option(flag="--drop-field", default_factory=lambda: ["exif"],
                                    help="a metadata field removed from every record (repeat; img2dataset keeps the "
                                    "source EXIF in 'exif'); --drop-field '' keeps them all")
    # images
    face_action: Literal["blur", "pixelate", "off"] = option("blur", help="blur, pixelate or off: what is done to "
                                                             "the faces found")
    face_detector: str = option("skimage-lbp", help="the face detector (skimage-lbp: scikit-image's LBP cascade; "
                                "opencv-haar: OpenCV 4's Haar cascade)")
    face_margin: float = option(0.15, ge=0.0, le=1.0, help="each face box is widened by this share of its size "
                                "per side before it is blurred")
    metadata: Literal["strip", "keep"] = option("strip", help="strip (EXIF with GPS, XMP, IPTC, comments, PNG text "
                                                "chunks; lossless, pixels unchanged) or keep")
    strip_icc: bool = option(False, help="also remove ICC colour profiles (kept by default: they decide the colours)")
    # near-duplicates
    dedup: str = option("off", help=DEDUP_HELP)
    dedup_from: str | None = option(None, help="an `sdguard audit data` output folder whose clusters.parquet is used "
                                    "(default: the clusters are computed here with the search options)")
    diversify: Literal[tuple(DIVERSIFY_METHODS)] = option("off", help="diversify the captions of near-duplicates "  # type: ignore[valid-type]
                                                          "left after --dedup (Somepalli et al. 2023b): "
                                                          + ", ".join(DIVERSIFY_METHODS))
    diversify_words: int = option(2, ge=1, le=16, help="words or numbers added per caption by --diversify")

    @field_validator("dedup")
    @classmethod
    def _dedup(cls, value: str) -> str:
        parse_dedup(value)
        return value

    @model_validator(mode="after")
    def _together(self) -> "DesensitizeConfig":
        if self.dedup_from is not None and self.dedup == "off" and self.diversify == "off":
            raise InputError.bad("--dedup-from", self.dedup_from, "is given without --dedup or --diversify")
        return self

    @property
    def keep_per_cluster(self) -> int | None:
        return parse_dedup(self.dedup)

    @property
    def needs_clusters(self) -> bool:
        return self.dedup != "off" or self.diversify != "off"
