"""``sdguard audit erasure``: did an erasure work, and what did it cost?

Before (the original model) vs after (the erased model), on the same prompts and seeds:

- **efficacy**: the presence rate of each erased concept: for a planted artwork of the synthetic
  world, the share of generations whose nearest training image is a copy of it with a cosine
  similarity at or above ``replication_threshold`` (word-level replication, Somepalli et al.
  2023; the similarity is that of :func:`~sdguard.data.world.probes.nearest_training_image`,
  and the default 0.6 is calibrated on ``builtin:tiny``, whose blurry 32-pixel reproductions of
  the planted artworks score 0.64-0.90 against their nearest copy); for an artist style, the
  share the world's :class:`StyleClassifier` (fitted on the world as the original model's
  autoencoder renders it) assigns to it; for nudity, the share of images in which NudeNet finds
  an EXPOSED class, with counts per class, on an I2P-format prompt file (the ESD paper's
  evaluation, Gandikota et al. 2023); on a dataset that ``make-world`` did not write, a concept is
  a phrase its captions name and its presence the share of generations whose nearest training
  image is one of those images or a near-duplicate of one (:mod:`.captioned`); each concept's
  entry names its ``rule``;
- **retention**: the same presence rate for each kept concept;
- **utility**: on unrelated prompts of the world (plain scenes), the accuracy with which the
  world's :class:`AttributeClassifier` reads back the shape, colour and position the prompt
  asked for; optionally FID (torchmetrics or clean-fid, where the Inception weights are present);
- **robustness**: the success rate of an adversarial-prompt attack against the erased model, on
  images of the concept that the original model made (``--attack``, :mod:`sdguard.audit.attacks`:
  UnlearnDiffAtk as published, Zhang et al. 2023, by default; or the soft-prompt attack on
  continuous embeddings), with the text prompts UnlearnDiffAtk found.

Every figure is under ``results`` in ``report.json``; ``report.html`` shows image grids before
and after, and under attack.

The package, one concern a module: :mod:`.concepts` (what a concept names, its prompts),
:mod:`.probes` (the world's probes and their cache), :mod:`.presence` (is a concept in an
image), :mod:`.captioned` (a user's dataset), :mod:`.measure` (presence and utility in a model's
generations), :mod:`.fid`,
:mod:`.attack` (the robustness attack), :mod:`.result` (what a run measured), :mod:`.sections`
(the report) and :mod:`.command` (:func:`audit_erasure`), with its settings in :mod:`.config`.
"""

from .attack import attack_concept
from .command import audit_erasure
from .concepts import Concept, load_or_make_default_world, resolve_concept
from .config import AuditErasureConfig
from .fid import fid_backend
from .measure import Measurement, attribute_accuracy, measure, scene_prompts
from .presence import PresenceDetector
from .probes import WorldProbes

__all__ = [
    "AuditErasureConfig",
    "Concept",
    "Measurement",
    "PresenceDetector",
    "WorldProbes",
    "attack_concept",
    "attribute_accuracy",
    "audit_erasure",
    "fid_backend",
    "load_or_make_default_world",
    "measure",
    "resolve_concept",
    "scene_prompts",
]
