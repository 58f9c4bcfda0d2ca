"""The synthetic captioned image world: a small, seeded dataset with planted ground truth.

No data set can be downloaded where sdguard is built and tested, so the package generates its
own: small RGB images with captions from a closed vocabulary, in the Hugging Face imagefolder
format, with the replication cases of the published case studies planted in it and written
down in ``ground_truth.json`` (Somepalli et al. 2023, "Diffusion Art or Digital Forgery?
Investigating Data Replication in Diffusion Models", CVPR; Somepalli et al. 2023,
"Understanding and Mitigating Copying in Diffusion Models", NeurIPS):

1. **Word-level replication.** Five fixed, procedurally painted artworks ("the starry night by
   van gogh", ...) are duplicated at graded rates from 2% down to 0.25% of the world, as exact
   copies and light augmentations (a pixel of shift, a little brightness change and noise),
   under varied captions that share the artwork's keywords. Some caption words ("night",
   "blue", "sky", "moon", ...) also occur in unrelated scene captions, so that prompts made of
   keywords only, of a related caption, of an unrelated caption plus the keywords and of a long
   description without the keywords behave differently (``duplicates[*].prompts``).
2. **Keyword co-occurrence.** Half of the entries whose captions hold both "almond" and
   "blossoming" are copies of one artwork; the others are diverse scenes (``cooccurrence``).
3. **A spread keyword.** "sunflower" appears in many diverse scene captions and in a few copies
   of one artwork, whose cluster holds only a few percent of the keyword's entries (``spread``).
4. **Object-level replication.** About 28% of the "astronaut" images show a flag at a fixed
   place in the top-left corner, although no caption anywhere names it (``objects``).
5. **Artist styles.** Scenes painted in the styles of "monet" (pastel dabs), "hokusai" (Prussian
   blue waves) and "picasso" (hard quantized facets), a few percent of the world each.
6. **Compositional scenes.** The bulk of the world: a coloured shape at a position over a
   background ("a red circle on the left over a white background"). Some (shape, colour,
   position) combinations never occur (``held_out``), so generalization can be tested.
   Half of the plain scenes are under-described, as web captions are: their captions name the
   colour and shape and at most one of position and background ("a photo of a purple ring"),
   while the image has all four (``under_described``; ``labels.jsonl``). A tiny model trained
   on fully described captions only followed every scene word of an unrelated caption and
   ignored the keywords added to it; under-described captions leave room for them.

The default world (5000 images) holds 3545 scenes (250 with a sunflower, 50 with a blossoming
almond tree, 50 with only "almond", 50 with only "blossoming"; of the other 3145, 1572 are
under-described), 205 artwork copies
(starry_night 100, almond_blossoms 50, the_scream 25, pearl_earring 18, sunflower_vase 12),
900 styled scenes (300 per style) and 350 astronaut images (98 with the flag).

:func:`make_world` writes the world; :func:`load_world` reads it back as a :class:`World`.
The default world (:data:`WORLD_DEFAULTS`: seed 0, 5000 images of 32x32) is the one the tiny
Stable Diffusion of the package is trained on. The same arguments always give byte-identical
files.

Modules: :mod:`.palette` (attribute values), :mod:`.canvas` (drawing primitives), :mod:`.styles`
and :mod:`.artworks` (the artist styles and the fixed paintings), :mod:`.render` (one image from
its plan), :mod:`.captions` (caption templates and writers), :mod:`.plan` (which image is what),
:mod:`.truth` (``ground_truth.json``), :mod:`.api` (:func:`make_world`, :func:`load_world`);
:mod:`.probes` holds the probes fitted on a world (imported on demand: it needs scikit-learn).
"""

from __future__ import annotations

from .api import (
    IMAGE_SIZES,
    MAX_SIZE,
    MIN_SIZE,
    WORLD_DEFAULTS,
    Record,
    World,
    WorldConfig,
    load_world,
    make_world,
)
from .artworks import ARTWORKS
from .captions import MAX_CAPTION_WORDS, caption_contains, scene_caption, tokenize
from .palette import (
    BACKGROUNDS,
    COLORS,
    KINDS,
    OBJECT_BOX,
    OBJECT_KEYWORD,
    OBJECT_NAME,
    POSITIONS,
    SHAPES,
    STYLES,
)
from .truth import WORLD_FORMAT_VERSION

__all__ = [
    "WORLD_DEFAULTS",
    "WORLD_FORMAT_VERSION",
    "MIN_SIZE",
    "MAX_SIZE",
    "WorldConfig",
    "IMAGE_SIZES",
    "SHAPES",
    "COLORS",
    "POSITIONS",
    "BACKGROUNDS",
    "STYLES",
    "ARTWORKS",
    "KINDS",
    "OBJECT_KEYWORD",
    "OBJECT_NAME",
    "OBJECT_BOX",
    "MAX_CAPTION_WORDS",
    "Record",
    "World",
    "make_world",
    "load_world",
    "caption_contains",
    "tokenize",
    "scene_caption",
]
