"""Does a model trained on the synthetic world really memorize what was planted in it?

Measures, on generations of the model, the planted cases of the world (Somepalli et al. 2023):
word-level replication of each artwork from its keyword prompt (the share of seeds whose nearest
training image is a copy of that artwork) against unrelated scene prompts; object-level
replication (the share of "astronaut" generations showing the flag, against control prompts,
with Fisher's exact test); style (a style classifier fitted on the world); and generalization
to (shape, colour, position) combinations held out of training (an attribute classifier),
beside the same measure on seen combinations.
Used by the tests of ``builtin:tiny`` and by ``benchmarks/train_tiny.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import fisher_exact

from ..data.world import World
from ..data.world.probes import (
    AttributeClassifier,
    ObjectDetector,
    StyleClassifier,
    artwork_of,
    nearest_training_image,
)


@dataclass
class WorldCheckSettings:
    seeds: int = 64
    steps: int = 25
    guidance: float = 5.0
    batch_size: int = 64
    seed: int = 0


def _scene_prompts(world: World, n: int, rng: np.random.Generator) -> list[str]:
    scenes = world.where(kind="scene")
    artwork_words = {w for d in world.ground_truth["duplicates"] for k in d["keywords"] for w in k.split()}
    pool = [world.records[i].text for i in scenes if not artwork_words & set(world.records[i].text.split())]
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def _spread(prompts: list[str], total: int) -> list[str]:
    """``total`` prompts cycling over ``prompts`` (each prompt gets its share of the seeds)."""
    return [prompts[i % len(prompts)] for i in range(total)]


def autoencoded(world: World, model, batch: int = 256) -> World:
    """The world as ``model``'s autoencoder renders it: every image encoded and decoded.

    A model can only produce what its decoder can draw; probes fitted on these images judge
    generations against the best the model could do, not against sharper originals.
    """
    import torch

    images = world.load_images()
    out = np.empty_like(images)
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2) * 2 - 1
            out[i:i + batch] = model.decode_latents(model.encode_images(x)).astype(np.float32) / 255.0
    return World(root=world.root, records=world.records, labels=world.labels, ground_truth=world.ground_truth,
                 _cache={"images": out})


def check_world_model(model, world: World, settings: WorldCheckSettings | None = None) -> dict:
    """Measure the planted cases on ``model`` (a DiffusionModel trained on ``world``).

    Replication is measured against the original training images; the style, attribute and
    object probes are fitted on the world as the model's autoencoder renders it (:func:`autoencoded`).
    """
    s = settings or WorldCheckSettings()
    rng = np.random.default_rng(s.seed)
    seen = autoencoded(world, model)

    def gen(prompts: list[str]) -> np.ndarray:
        return model.generate(prompts, seeds=s.seed, steps=s.steps, guidance=s.guidance, batch_size=s.batch_size).images

    results: dict = {"settings": s.__dict__, "artworks": [], "styles": []}
    # word-level replication
    for dup in world.ground_truth["duplicates"]:
        images = gen([dup["prompts"]["keywords"]] * s.seeds)
        nearest, sims = nearest_training_image(images, world)
        hits = np.array([a == dup["name"] for a in artwork_of(nearest, world)])
        results["artworks"].append({"name": dup["name"], "rate": dup["rate"], "prompt": dup["prompts"]["keywords"],
                                    "replication": float(hits.mean()), "mean_similarity": float(sims.mean())})
    control_prompts = _spread(_scene_prompts(world, 16, rng), s.seeds)
    control = gen(control_prompts)
    nearest, _ = nearest_training_image(control, world)
    results["control_any_artwork"] = float(np.mean([a is not None for a in artwork_of(nearest, world)]))
    # object-level replication
    obj = world.ground_truth["objects"][0]
    keyword_captions = sorted({world.records[i].text for i in world.where(kind="object")})
    object_prompts = _spread([keyword_captions[i] for i in rng.permutation(len(keyword_captions))], s.seeds)
    detector = ObjectDetector().fit(seen)
    with_kw = detector.detect(gen(object_prompts))
    without = detector.detect(control)
    table = [[int(with_kw.sum()), int((~with_kw).sum())], [int(without.sum()), int((~without).sum())]]
    _, p_value = fisher_exact(table, alternative="greater")
    results["object"] = {"keyword": obj["keyword"], "object": obj["object"], "training_share": obj["share"],
                         "keyword_share": float(with_kw.mean()), "control_share": float(without.mean()),
                         "fisher_p": float(p_value)}
    # styles
    styles = StyleClassifier().fit(seen)
    for st in world.ground_truth["styles"]:
        idx = [world.index_of(f) for f in st["files"]]
        captions = sorted({world.records[i].text for i in idx})
        prompts = _spread([captions[i] for i in rng.permutation(len(captions))], s.seeds)
        predicted = styles.predict(gen(prompts))
        results["styles"].append({"name": st["name"], "accuracy": float(np.mean([p == st["name"] for p in predicted]))})
    control_styles = styles.predict(control)
    results["control_styled"] = float(np.mean([p != "none" for p in control_styles]))
    # generalization to held-out combinations
    results["held_out"] = _held_out(world, seen, gen, s, rng)
    return results


def _held_out(world: World, seen: World, gen, s: WorldCheckSettings, rng: np.random.Generator) -> dict:
    """Attributes of (shape, colour, position) combinations never seen in training, read back by
    an attribute classifier, in two caption forms of the world ("... over a white background" and
    the under-described "a red circle on the left"), ``s.seeds`` generations each; beside them the
    same measure on as many seen combinations (what the model renders at best), and a one-sided
    binomial test of the pooled held-out accuracy against chance."""
    from scipy.stats import binomtest

    from ..data.world import (
        scene_caption,  # the world's own caption writer (phrases, articles)
    )

    held = [(h["shape"], h["color"], h["position"]) for h in world.ground_truth["held_out"]]
    values = world.ground_truth["attributes"]
    all_combos = [(a, b, c) for a in values["shape"] for b in values["color"] for c in values["position"]]
    unseen = set(held)
    seen_pool = [c for c in all_combos if c not in unseen]
    seen_combos = [seen_pool[i] for i in rng.choice(len(seen_pool), size=len(held), replace=False)]
    forms = {"white_background": "a {color} {shape} {position} {background}",
             "under_described": "a {color} {shape} {position}"}
    attrs = AttributeClassifier().fit(seen)
    names = ("shape", "color", "position")
    correct: dict = {group: {form: {} for form in forms} for group in ("held_out", "seen")}
    for group, combos in (("held_out", held), ("seen", seen_combos)):
        for form, template in forms.items():
            truth = [combos[k % len(combos)] for k in range(s.seeds)]
            prompts = [scene_caption({"shape": sh, "color": c, "position": p, "background": "white"}, template, None)
                       for sh, c, p in truth]
            predicted = attrs.predict(gen(prompts))
            for j, attr in enumerate(names):
                correct[group][form][attr] = [p == t[j] for p, t in zip(predicted[attr], truth)]
    out = {}
    for attr in names:
        chance = 1.0 / len(values[attr])
        pooled = [x for form in forms for x in correct["held_out"][form][attr]]
        out[attr] = {
            "accuracy": float(np.mean(pooled)), "chance": chance,
            "p_value": float(binomtest(int(np.sum(pooled)), len(pooled), chance, alternative="greater").pvalue),
            "by_form": {form: float(np.mean(correct["held_out"][form][attr])) for form in forms},
            "seen_accuracy": float(np.mean([x for form in forms for x in correct["seen"][form][attr]])),
            "seen_by_form": {form: float(np.mean(correct["seen"][form][attr])) for form in forms},
        }
    return out
