"""The closed world's attribute values: shapes, colours, positions, backgrounds, styles, the object."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = [
    "Color",
    "rgb",
    "KINDS",
    "SHAPES",
    "COLORS",
    "POSITIONS",
    "BACKGROUNDS",
    "STYLES",
    "OBJECT_KEYWORD",
    "OBJECT_NAME",
    "OBJECT_BOX",
    "ASTRONAUT_X",
]

Color = tuple[float, float, float]


def rgb(r: int, g: int, b: int) -> Color:
    """An 8-bit RGB colour as floats in [0, 1]."""
    return (r / 255.0, g / 255.0, b / 255.0)


KINDS = ("scene", "artwork", "style", "object")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLORS: Mapping[str, Color] = MappingProxyType(
    {
        "red": rgb(220, 40, 40),
        "orange": rgb(245, 140, 20),
        "yellow": rgb(245, 220, 40),
        "green": rgb(40, 170, 60),
        "blue": rgb(40, 80, 220),
        "purple": rgb(140, 50, 180),
        "pink": rgb(250, 130, 190),
    }
)
#: position name -> (x, y) centre in [0, 1] image coordinates (x to the right, y down)
POSITIONS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"left": (0.26, 0.5), "right": (0.74, 0.5), "top": (0.5, 0.26), "bottom": (0.5, 0.74), "center": (0.5, 0.5)}
)
#: background name -> (top colour, bottom colour)
BACKGROUNDS: Mapping[str, tuple[Color, Color]] = MappingProxyType(
    {
        "white": (rgb(242, 242, 236), rgb(242, 242, 236)),
        "black": (rgb(22, 22, 24), rgb(22, 22, 24)),
        "gray": (rgb(128, 128, 128), rgb(128, 128, 128)),
        "blue sky": (rgb(105, 160, 228), rgb(175, 208, 242)),
        "night sky": (rgb(8, 12, 40), rgb(22, 30, 70)),
    }
)

STYLES = ("monet", "hokusai", "picasso")

#: the planted object (Somepalli et al. 2023, object-level replication)
OBJECT_KEYWORD = "astronaut"
OBJECT_NAME = "flag"
#: the object's fixed place, (x0, y0, x1, y1) in [0, 1] image coordinates (flag cloth and pole)
OBJECT_BOX = (0.06, 0.04, 0.35, 0.50)
#: astronaut position name -> x of the astronaut's centre
ASTRONAUT_X = {"left": 0.38, "center": 0.55, "right": 0.72}
