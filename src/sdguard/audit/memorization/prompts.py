"""The prompts a memorization audit scores, their labels, and the ordinary prompts its threshold is
calibrated on.

- :func:`read_prompt_set` reads a user's file: text (one prompt per line; ``memorized<TAB>PROMPT``
  or ``ordinary<TAB>PROMPT`` labels a line), JSON lines (``prompt``, ``caption`` or ``text``; an
  optional ``memorized`` true/false or ``label``) or CSV (the same columns).
- :func:`suite` builds the public protocols: ``sdv1-500`` (the 500 captions Stable Diffusion v1 is
  known to reproduce, Webster 2023, as used by Wen et al. 2024, against 500 COCO captions, and 500
  other COCO captions to calibrate on: ``sdguard/data/prompts/README.md``) and ``world`` (a
  synthetic world's planted artworks' captions against its plain scene captions).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ...core.io import read_json_lines, read_text
from ..prompt_suites import read_prompt_file

SUITES = ("sdv1-500", "world")
_TRUE = {"memorized", "memorised", "mem", "1", "true", "yes"}
_FALSE = {"ordinary", "nonmemorized", "non-memorized", "nmem", "0", "false", "no"}
_TEXT_KEYS = ("prompt", "caption", "text")


@dataclass
class PromptSet:
    """Prompts with their labels (True: memorized, False: ordinary, None: unknown)."""

    prompts: list[str]
    labels: list[bool | None]
    source: str
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def labelled(self) -> bool:
        return any(v is not None for v in self.labels)

    def with_label(self, value: bool | None) -> list[str]:
        return [p for p, v in zip(self.prompts, self.labels) if v is value]


def _label(value, argument: str, path: str, where: str) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError.bad(argument, path, f"{where} has the label {value!r}: write memorized or ordinary (or true/false)")


def _row_prompt(row: dict, argument: str, path: str, where: str) -> str:
    for key in _TEXT_KEYS:
        v = row.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    raise InputError.bad(argument, path, f"{where} has no prompt (a non-empty {', '.join(_TEXT_KEYS)} field)")


def read_prompt_set(path: str | Path, argument: str = "--prompts") -> PromptSet:
    """A user's prompt file (see the module docstring); one sentence naming the file and line for
    anything it cannot read."""
    p = Path(path)
    if not p.is_file():
        raise InputError.bad(argument, str(path), "does not exist or is not a file")
    prompts: list[str] = []
    labels: list[bool | None] = []
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for number, row in read_json_lines(p, argument):
            prompts.append(_row_prompt(row, argument, str(path), f"line {number}"))
            labels.append(_label(row.get("memorized", row.get("label")), argument, str(path), f"line {number}"))
    elif suffix == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(read_text(p, argument))))
        except csv.Error as exc:
            raise InputError.bad(argument, str(path), f"is not a readable CSV file ({exc})") from None
        for number, row in enumerate(rows, start=2):
            prompts.append(_row_prompt(row, argument, str(path), f"row {number}"))
            labels.append(_label(row.get("memorized", row.get("label")), argument, str(path), f"row {number}"))
    else:
        for spec in read_prompt_file(p, argument):
            prompts.append(spec.prompt)
            labels.append(None if spec.kind == "user" else _label(spec.kind, argument, str(path), repr(spec.prompt)))
    if not prompts:
        raise InputError.bad(argument, str(path), "holds no prompt")
    return PromptSet(prompts, labels, str(path))


def _packaged(name: str) -> str:
    return resources.files("sdguard.data").joinpath("prompts", name).read_text(encoding="utf-8")


def sdv1_500(n_ordinary: int = 500, seed: int = 0) -> tuple[PromptSet, list[str]]:
    """The public GPU protocol: (500 memorized + ``n_ordinary`` COCO captions, ``n_ordinary`` other
    COCO captions to calibrate the threshold on), the COCO ones drawn with ``seed``."""
    mem = [json.loads(line)["caption"] for line in _packaged("sdv1_500_memorized.jsonl").splitlines() if line.strip()]
    coco = [r["prompt"] for r in csv.DictReader(io.StringIO(_packaged("coco_captions_2000.csv")))]
    coco = [c for c in dict.fromkeys(coco) if c not in set(mem)]
    order = np.random.default_rng([seed, 0xC0C0]).permutation(len(coco))
    k = min(n_ordinary, len(coco) // 2)
    ordinary = [coco[i] for i in order[:k]]
    calibration = [coco[i] for i in order[k:2 * k]]
    return PromptSet(mem + ordinary, [True] * len(mem) + [False] * len(ordinary), "sdv1-500",
                     {"memorized": "Webster 2023 / Wen et al. 2024 (500 captions)", "ordinary": f"COCO captions ({k})"}), \
        calibration


def world_suite(world, n_ordinary: int = 200, seed: int = 0) -> tuple[PromptSet, list[str]]:
    """A synthetic world's protocol: the distinct captions of its planted artworks' images
    (memorized) against distinct captions of its plain scene images (``kind == "scene"``: no artwork,
    style or planted object), ``n_ordinary`` scored and ``n_ordinary`` others to calibrate on."""
    mem = sorted({t for t, lab in zip(world.texts, world.labels) if lab.get("artwork")})
    scene = sorted({t for t, lab in zip(world.texts, world.labels) if lab.get("kind") == "scene"} - set(mem))
    if not mem or len(scene) < 4:
        raise InputError.bad("--dataset", str(world.root), "is a world without planted artworks or scene captions")
    order = np.random.default_rng([seed, 0x5CE]).permutation(len(scene))
    k = min(n_ordinary, len(scene) // 2)
    return PromptSet(mem + [scene[i] for i in order[:k]], [True] * len(mem) + [False] * k, f"world {world.root}",
                     {"memorized": f"captions of the planted artworks ({len(mem)})", "ordinary": f"scene captions ({k})"}), \
        [scene[i] for i in order[k:2 * k]]


__all__ = ["PromptSet", "SUITES", "read_prompt_set", "sdv1_500", "world_suite"]
