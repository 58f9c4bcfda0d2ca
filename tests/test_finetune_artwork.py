"""Fine-tuning ``builtin:tiny`` on a picture it never saw pulls its generations for the new caption
toward that picture, with the full UNet and with LoRA (issue 15). A miniature of
``benchmarks/finetune_new_artwork.py``, which plants the picture into the whole world and measures
replication with ``sdguard audit generations`` over 32 seeds."""

import numpy as np
import pytest
from other_world import ARTWORKS, draw_artwork, jitter
from PIL import Image

from sdguard.embed import create_embedder
from sdguard.models import load_model
from sdguard.models.builtin import tiny_available
from sdguard.train import train

pytestmark = pytest.mark.skipif(not tiny_available(), reason="builtin:tiny is not installed")

CAPTION = ARTWORKS["lighthouse"][0]  # "the crimson lighthouse by aldora": words builtin:tiny never read
SEEDS = list(range(6))


@pytest.fixture(scope="module")
def new_artwork(tmp_path_factory):
    """An imagefolder of 16 near-copies of the new picture under its caption; their dct embeddings."""
    import json

    root = tmp_path_factory.mktemp("new_artwork")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    original = draw_artwork("lighthouse")
    copies = [jitter(original, rng) for _ in range(16)]
    lines = []
    for i, img in enumerate(copies):
        Image.fromarray(img).save(root / "images" / f"{i:02d}.png")
        lines.append(json.dumps({"file_name": f"images/{i:02d}.png", "text": CAPTION}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    emb = create_embedder("dct")
    return root, emb, emb.embed(copies)


def nearest_copy_similarity(model, emb, copies) -> np.ndarray:
    """Per seed: the generation's dct similarity to its nearest training copy."""
    images = model.generate([CAPTION] * len(SEEDS), SEEDS, steps=10).images
    return (emb.embed(list(images)) @ copies.T).max(1)


@pytest.mark.parametrize("trainable, lr", [("unet", 1e-3), ("lora", 3e-3)])
def test_fine_tuning_brings_the_new_caption_to_the_new_picture(new_artwork, tmp_path, trainable, lr):
    root, emb, copies = new_artwork
    before = nearest_copy_similarity(load_model("builtin:tiny"), emb, copies)
    report = train("builtin:tiny", str(root), out=str(tmp_path / "out"), trainable=[trainable], steps=60,
                   batch_size=8, lr=lr, samples=0, checkpoint_every=1000, lora_rank=8, progress=False)
    after = nearest_copy_similarity(load_model(str(tmp_path / "out")), emb, copies)
    assert np.median(after) > np.median(before) + 0.15, (before, after)
    assert np.mean(after > before.max() + 0.1) >= 2 / 3, (before, after)  # most seeds moved, not a lucky one
    share = report.results["trainable"]["share"]
    assert (share < 0.1) if trainable == "lora" else (share > 0.5)
