"""Caption templates and writers of the world, and its word-level tokenization."""

from __future__ import annotations

from typing import Any, Mapping

from ..captions import contains_phrase

__all__ = [
    "MAX_CAPTION_WORDS",
    "SCENE_TEMPLATES",
    "TERSE_TEMPLATES",
    "STYLE_TEMPLATES",
    "DECORATION_PHRASES",
    "ASTRONAUT_TEMPLATES",
    "tokenize",
    "caption_contains",
    "scene_caption",
    "astronaut_caption",
]

MAX_CAPTION_WORDS = 20

_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
_BACKGROUND_PHRASES = {
    "white": "over a white background",
    "black": "over a black background",
    "gray": "over a gray background",
    "blue sky": "under a blue sky",
    "night sky": "under a night sky",
}

SCENE_TEMPLATES = (
    "a {color} {shape} {position} {background}",
    "a {color} {shape} {position} {background}",
    "a photo of a {color} {shape} {position} {background}",
    "a simple drawing of a {color} {shape} {position} {background}",
)
#: under-described scene captions, as web captions often are: colour and shape always, the position
#: or the background only sometimes (the scene's other attributes are drawn all the same)
TERSE_TEMPLATES = (
    "a {color} {shape}",
    "a photo of a {color} {shape}",
    "a {color} {shape} {position}",
    "a {color} {shape} {background}",
)
STYLE_TEMPLATES = (
    "a {color} {shape} {position} in the style of {style}",
    "a {color} {shape} {position} {background} in the style of {style}",
    "a painting of a {color} {shape} {position} by {style}",
    "{style} style painting of a {color} {shape} {position}",
)

#: decorations: small motifs in a free corner of a scene, with the caption phrases naming them
DECORATION_PHRASES = {
    "sunflower": ("with a sunflower", "next to a sunflower", "and a sunflower"),
    "almond blossom": ("near a blossoming almond tree", "with blossoming almond branches"),
    "almond tree": ("near an almond tree", "with an almond tree"),
    "blossoming tree": ("near a blossoming tree", "with a blossoming branch"),
}

#: astronaut background -> caption templates (``{position}``: the astronaut's position phrase)
ASTRONAUT_TEMPLATES = {
    "space": (
        "an astronaut floating in space",
        "a photo of an astronaut floating in space",
        "an astronaut in space with stars",
        "an astronaut in a white suit floating in space {position}",
        "an astronaut {position} in space",
    ),
    "moon": (
        "an astronaut on the moon",
        "a photo of an astronaut standing on the moon",
        "an astronaut in a white suit on the moon",
        "an astronaut {position} standing on the moon",
        "a photo of an astronaut on the moon {position}",
    ),
}
_ASTRONAUT_POSITION_PHRASES = {"left": "on the left", "center": "in the center", "right": "on the right"}


def tokenize(text: str) -> list[str]:
    """The world's word-level tokenization: captions are lowercase words separated by spaces."""
    return text.split()


def caption_contains(text: str, keyword: str) -> bool:
    """True if the words of ``keyword`` occur contiguously in ``text`` (whole words only; the one
    matcher of :func:`sdguard.data.captions.contains_phrase`)."""
    return contains_phrase(text, keyword)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fix_articles(text: str) -> str:
    words = tokenize(text)
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = _article(words[i + 1])
    return " ".join(words)


def scene_caption(spec: Mapping[str, Any], template: str, phrase: str | None) -> str:
    """The caption of a scene ``spec`` (its ``color``, ``shape``, ``position``, ``background`` and
    ``style`` if any) in ``template``, with ``phrase`` appended, and articles fixed ("an orange")."""
    text = template.format(
        color=spec["color"],
        shape=spec["shape"],
        position=_POSITION_PHRASES[spec["position"]],
        background=_BACKGROUND_PHRASES[spec["background"]],
        style=spec.get("style") or "",
    )
    if phrase:
        text = f"{text} {phrase}"
    return _fix_articles(text)


def astronaut_caption(template: str, position: str) -> str:
    """An astronaut caption: one of :data:`ASTRONAUT_TEMPLATES` with the position's phrase."""
    return template.format(position=_ASTRONAUT_POSITION_PHRASES[position])
