"""Faces in training images: found by a detector that ships inside a package, then blurred or
pixelated inside their (widened) boxes only.

Detectors (:data:`FACE_DETECTORS`, ``--face-detector``):

- ``skimage-lbp`` (default): scikit-image's multi-block LBP frontal-face cascade
  (``skimage.data.lbp_frontal_face_cascade_filename()``, the cascade trained for OpenCV) run by
  ``skimage.feature.Cascade.detect_multi_scale``;
- ``opencv-haar``: OpenCV's Haar frontal-face cascade (``haarcascade_frontalface_default.xml``),
  which the OpenCV 4.x wheels carry in ``cv2.data.haarcascades`` (the 5.x wheels do not).

Both find frontal faces of at least ``min_size`` pixels; profiles, small or occluded faces are
missed, so the report says how many images had faces found rather than claiming none remain.
Detection runs on a copy scaled to at most ``max_side`` pixels (the boxes are scaled back), so
that a 4000-pixel photo costs what a 1000-pixel one does.

Anonymization (:func:`anonymize_faces`, searched and applied twice by
:func:`find_and_anonymize`, see there): every box is widened by ``margin`` of its size per side
(a detector's box covers the inner face; the hair line and chin identify too), then the region
is Gaussian-blurred with a radius of a quarter of the box's side, or pixelated into
``PIXEL_CELLS`` cells across; the pixels outside the boxes are not touched.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ...core.errors import InputError, require
from ...core.registry import Registry

#: cells across a pixelated face. Neither a mosaic nor a blur is irreversible against a recogniser
#: trained on obfuscated faces (McPherson, Shokri & Shmatikov 2016, "Defeating Image Obfuscation
#: with Deep Learning"); the strengths here are coarse, and the tests check that the detector no
#: longer finds the face afterwards
PIXEL_CELLS = 8


@dataclass(frozen=True)
class FaceBox:
    """A face in image pixels: top-left corner, size, and the detector's confidence where it has one."""

    x: int
    y: int
    width: int
    height: int
    score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


FACE_DETECTORS: Registry = Registry("face detector", argument="--face-detector")


class SkimageLBP:
    """scikit-image's LBP frontal-face cascade."""

    name = "skimage-lbp"

    def __init__(self, *, min_size: int = 24, scale_factor: float = 1.2, min_neighbours: int = 6):
        feature = require("skimage.feature", "desensitize", "face detection with skimage-lbp")
        data = require("skimage.data", "desensitize", "face detection with skimage-lbp")
        self.cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        self.min_size, self.scale_factor, self.min_neighbours = min_size, scale_factor, min_neighbours

    def __call__(self, gray: np.ndarray) -> list[FaceBox]:
        h, w = gray.shape
        side = min(h, w)
        if side < self.min_size:
            return []
        found = self.cascade.detect_multi_scale(img=gray.astype(np.float32) / 255.0, scale_factor=self.scale_factor,
                                                step_ratio=1, min_size=(self.min_size, self.min_size),
                                                max_size=(side, side), min_neighbor_number=self.min_neighbours)
        return [FaceBox(int(d["c"]), int(d["r"]), int(d["width"]), int(d["height"])) for d in found]


class OpenCVHaar:
    """OpenCV 4.x's Haar frontal-face cascade (the file its wheels carry)."""

    name = "opencv-haar"

    def __init__(self, *, min_size: int = 24, scale_factor: float = 1.1, min_neighbours: int = 5):
        cv2 = require("cv2", "desensitize", "face detection with opencv-haar (pip install 'opencv-python-headless<5')")
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not folder or not hasattr(cv2, "CascadeClassifier") or \
                not os.path.isfile(os.path.join(folder, "haarcascade_frontalface_default.xml")):
            raise InputError.bad("--face-detector", self.name, f"needs OpenCV's bundled Haar cascades, which OpenCV "
                                 f"{cv2.__version__} does not carry (the 4.x wheels do: pip install 'opencv-python-headless<5')")
        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(os.path.join(folder, "haarcascade_frontalface_default.xml"))
        if self.cascade.empty():
            raise InputError.bad("--face-detector", self.name, f"cannot load {folder}haarcascade_frontalface_default.xml")
        self.min_size, self.scale_factor, self.min_neighbours = min_size, scale_factor, min_neighbours

    def __call__(self, gray: np.ndarray) -> list[FaceBox]:
        found = self.cascade.detectMultiScale(np.ascontiguousarray(gray), scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbours, minSize=(self.min_size, self.min_size))
        return [FaceBox(int(x), int(y), int(w), int(h)) for x, y, w, h in (found if len(found) else [])]


FACE_DETECTORS.register("skimage-lbp", SkimageLBP, description="scikit-image's LBP frontal-face cascade")
FACE_DETECTORS.register("opencv-haar", OpenCVHaar, description="OpenCV 4.x's Haar frontal-face cascade")


class FaceDetector:
    """A registered detector run on a grey copy of at most ``max_side`` pixels."""

    def __init__(self, name: str, *, max_side: int = 1024, **options):
        self.name, self.max_side = name, max_side
        self.impl = FACE_DETECTORS.get(name)(**options)

    def __call__(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in ``image`` (``uint8`` H x W x 3 RGB, or H x W grey), in its own pixels."""
        from PIL import Image

        im = Image.fromarray(image)
        gray = im.convert("L")
        scale = 1.0
        if max(gray.size) > self.max_side:
            scale = max(gray.size) / self.max_side
            gray = gray.resize((round(gray.width / scale), round(gray.height / scale)), Image.BILINEAR)
        boxes = merge_overlapping(self.impl(np.asarray(gray)))
        if scale == 1.0:
            return boxes
        return [FaceBox(round(b.x * scale), round(b.y * scale), round(b.width * scale), round(b.height * scale),
                        b.score) for b in boxes]

    def config(self) -> dict:
        return {"name": self.name, "max_side": self.max_side, "min_size": self.impl.min_size,
                "scale_factor": self.impl.scale_factor, "min_neighbours": self.impl.min_neighbours}


def merge_overlapping(boxes: Sequence[FaceBox], overlap: float = 0.5) -> list[FaceBox]:
    """Boxes of one face merged: two boxes whose intersection covers ``overlap`` of the smaller one
    become their union (the cascades' own grouping leaves such pairs at neighbouring scales)."""
    out = [list((b.x, b.y, b.x + b.width, b.y + b.height)) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
                small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                if iw > 0 and ih > 0 and iw * ih >= overlap * small:
                    out[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return [FaceBox(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in sorted(out)]


def create_face_detector(name: str, **options) -> FaceDetector:
    """The detector called ``name`` (see :data:`FACE_DETECTORS`); an unknown name is one sentence."""
    FACE_DETECTORS.entry(name)
    return FaceDetector(name, **options)


def find_and_anonymize(image, detector: FaceDetector, *, method: str = "blur", margin: float = 0.15,
                       passes: int = 2):
    """``(anonymized image, boxes)``: the faces ``detector`` finds in the PIL ``image`` anonymized,
    then the result searched again and what is found there anonymized too, up to ``passes`` rounds
    (a cascade's grouping of windows changes when some are blurred, and a face it had merged into
    a neighbour can surface). ``boxes`` are all the boxes anonymized, in image pixels."""
    done: list[FaceBox] = []
    for _ in range(passes):
        boxes = detector(np.asarray(image.convert("RGB")))
        if not boxes:
            break
        image = anonymize_faces(image, boxes, method=method, margin=margin)
        done += boxes
    return image, done


def widen(box: FaceBox, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` widened by ``margin`` of its size per side, clipped to the image: (x0, y0, x1, y1)."""
    dx, dy = round(box.width * margin), round(box.height * margin)
    return (max(0, box.x - dx), max(0, box.y - dy), min(width, box.x + box.width + dx),
            min(height, box.y + box.height + dy))


def anonymize_faces(image, boxes: Sequence[FaceBox], *, method: str = "blur", margin: float = 0.15):
    """A copy of the PIL ``image`` with the regions of ``boxes`` blurred or pixelated (``method``);
    nothing outside the widened boxes changes."""
    from PIL import Image, ImageFilter

    if method not in ("blur", "pixelate"):
        raise InputError.bad("--face-action", method, "is not a face anonymization (use blur, pixelate or off)")
    out = image.copy()
    for box in boxes:
        x0, y0, x1, y1 = widen(box, margin, out.width, out.height)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out.crop((x0, y0, x1, y1))
        side = max(x1 - x0, y1 - y0)
        if method == "blur":
            # blur a padded crop so the border pixels average real neighbours, then paste the box only
            pad = side // 2
            px0, py0 = max(0, x0 - pad), max(0, y0 - pad)
            padded = out.crop((px0, py0, min(out.width, x1 + pad), min(out.height, y1 + pad)))
            blurred = padded.filter(ImageFilter.GaussianBlur(radius=max(2.0, side / 4)))
            region = blurred.crop((x0 - px0, y0 - py0, x1 - px0, y1 - py0))
        else:
            cells = max(1, min(PIXEL_CELLS, side))
            small = region.resize((max(1, round(cells * region.width / side)), max(1, round(cells * region.height / side))),
                                  Image.BOX)
            region = small.resize(region.size, Image.NEAREST)
        out.paste(region, (x0, y0))
    return out
