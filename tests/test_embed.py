"""Embedders (registry, weight-free pixels/dct, CLIP from a folder, SSCD TorchScript) and the
resumable on-disk embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sdguard.core.errors import InputError
from sdguard.data.datasets import SkipCounter, open_dataset
from sdguard.embed import (
    EMBEDDERS,
    MISSING,
    OK,
    UNREADABLE,
    EmbeddingCache,
    create_embedder,
    embed_dataset,
    parse_spec,
)


def _smooth(seed: int, size: int = 32) -> np.ndarray:
    """A smooth random picture (a few blobs), like a downscaled photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3), np.float32)
    for _ in range(5):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.4)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)[..., None] * rng.uniform(0, 120, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cos(a, b):
    return float(np.dot(a, b))


def test_registry():
    assert {"pixels", "dct", "clip", "sscd"} <= set(EMBEDDERS.names())
    assert parse_spec("pixels:16") == ("pixels", {"size": 16})
    assert parse_spec("clip:/models/clip") == ("clip", {"model": "/models/clip"})
    with pytest.raises(InputError, match="pixels"):
        create_embedder("nope")
    with pytest.raises(InputError):
        create_embedder("pixels", colour=True)
    with pytest.raises(InputError):
        parse_spec("pixels:big")

    class Const:
        name, dim, default_threshold = "const", 2, 0.9

        def embed(self, images):
            return np.tile(np.asarray([[1.0, 0.0]], np.float32), (len(images), 1))

        def config(self):
            return {"name": "const"}

    EMBEDDERS.register("const-test", Const)
    assert create_embedder("const-test").embed([np.zeros((4, 4, 3), np.uint8)]).shape == (1, 2)


@pytest.mark.parametrize("name", ["pixels", "pixels:16", "dct"])
def test_weight_free_embedders_find_near_duplicates(name):
    emb = create_embedder(name)
    base = _smooth(0)
    rng = np.random.default_rng(1)
    copies = [
        base,
        np.clip(base.astype(np.float32) * 1.08 + 5, 0, 255).astype(np.uint8),  # brightness / contrast
        np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8),  # noise
        np.asarray(Image.fromarray(base).resize((64, 64), Image.BILINEAR)),  # resized
        np.pad(base, ((1, 0), (1, 0), (0, 0)), mode="edge")[:-1, :-1],  # shifted one pixel
    ]
    others = [_smooth(s) for s in range(10, 30)]
    x = emb.embed(copies + others)
    assert x.shape == (len(copies) + len(others), emb.dim) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    copy_sims = [_cos(x[0], x[i]) for i in range(1, len(copies))]
    other_sims = [_cos(x[0], x[i]) for i in range(len(copies), len(x))]
    assert min(copy_sims) > emb.default_threshold
    assert max(other_sims) < min(copy_sims)
    assert _cos(x[0], x[0]) == pytest.approx(1.0, abs=1e-5)


def test_flat_images_are_not_duplicates_of_anything():
    emb = create_embedder("pixels")
    x = emb.embed([np.full((16, 16, 3), 200, np.uint8), np.full((16, 16, 3), 30, np.uint8), _smooth(3)])
    assert np.allclose(x[0], 0) and np.allclose(x[1], 0)
    assert abs(_cos(x[0], x[2])) < 1e-6


def test_dct_matches_scipy():
    from scipy.fft import dctn

    from sdguard.embed.pixels import _thumbnail

    emb = create_embedder("dct", size=32, k=6)
    img = _smooth(5)
    ref = dctn(_thumbnail(img, 32, "L"), norm="ortho")[:6, :6].reshape(-1)[1:]
    assert np.allclose(emb.embed([img])[0], ref / np.linalg.norm(ref), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).save_pretrained(folder)
    return folder


def test_clip_from_a_local_folder(tiny_clip):
    emb = create_embedder(f"clip:{tiny_clip}")
    assert emb.dim == 8 and emb.image_size == 32
    x = emb.embed([_smooth(0), _smooth(0, 48), _smooth(1)[:20]])  # any size and aspect
    assert x.shape == (3, 8)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert emb.config()["model"][0] == str(tiny_clip.resolve())
    # the model computes what CLIPModel.get_image_features defines: the projected pooled output
    import torch

    pix = torch.from_numpy(emb.preprocess(_smooth(0))[None])
    with torch.inference_mode():
        ref = emb._net.visual_projection(emb._net.vision_model(pixel_values=pix).pooler_output)[0].numpy()
    assert np.allclose(x[0], ref / np.linalg.norm(ref), atol=1e-5)


def test_clip_unreachable_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="could not be loaded"):
        create_embedder("clip", model=str(tmp_path / "no-such-model"))


def test_sscd_torchscript(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 5, stride=4)
            self.fc = torch.nn.Linear(6, 12)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    path = tmp_path / "sscd.torchscript.pt"
    torch.jit.script(Net()).save(str(path))
    emb = create_embedder(f"sscd:{path}", size=64)
    x = emb.embed([_smooth(0), _smooth(0), _smooth(2)])
    assert x.shape == (3, 12) and emb.default_threshold == 0.5
    assert _cos(x[0], x[1]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError, match="needs the TorchScript"):
        create_embedder("sscd")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError, match="TorchScript"):
        create_embedder("sscd", path=str(bad))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(30):
        Image.fromarray(_smooth(i)).save(root / "images" / f"{i}.png")
        lines.append({"file_name": f"images/{i}.png", "text": f"picture {i}"})
    (root / "images" / "7.png").write_bytes(b"corrupt")
    lines.append({"file_name": "images/gone.png", "text": "missing"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


class _Counting:
    """Wraps an embedder, counting the images it embeds; optionally fails after ``fail_after`` calls."""

    def __init__(self, inner, fail_after=None):
        self.inner, self.fail_after, self.images, self.calls = inner, fail_after, 0, 0
        self.name, self.dim, self.default_threshold = inner.name, inner.dim, inner.default_threshold

    def config(self):
        return self.inner.config()

    def embed(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        self.images += len(images)
        return self.inner.embed(images)


def test_cache_resumes_after_an_interruption(folder, tmp_path):
    ds = open_dataset(folder)
    entries = ds.entries()
    reference, status = embed_dataset(ds, entries, create_embedder("pixels"))
    assert (status == OK).sum() == 29 and status[7] == UNREADABLE and status[-1] == MISSING

    cache_root = tmp_path / "cache"
    first = _Counting(create_embedder("pixels"), fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(ds, entries, first, cache=EmbeddingCache.for_dataset(ds, first, cache_root), chunk_size=8)
    assert first.images == 15  # two chunks of 8, less the corrupt image

    second = _Counting(create_embedder("pixels"))
    skipped = SkipCounter()
    vectors, status2 = embed_dataset(ds, entries, second, cache=EmbeddingCache.for_dataset(ds, second, cache_root),
                                     chunk_size=8, skipped=skipped)
    assert second.images == 29 - 15  # only what the interrupted run had not stored
    assert np.allclose(vectors, reference) and np.array_equal(status, status2)
    assert (skipped.missing, skipped.unreadable) == (1, 1)

    third = _Counting(create_embedder("pixels"))
    vectors3, _ = embed_dataset(ds, entries, third, cache=EmbeddingCache.for_dataset(ds, third, cache_root))
    assert third.images == 0 and np.allclose(vectors3, reference)
    # another embedder configuration has its own cache
    other = EmbeddingCache.for_dataset(ds, create_embedder("pixels:16"), cache_root)
    assert len(other) == 0


@pytest.fixture(scope="module")
def tiny_clip_with_text(tmp_path_factory):
    """A full random CLIPModel with a tokenizer saved beside it (what zero-shot detection needs)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from sdguard.models.components import build_tokenizer

    tok = build_tokenizer(["a", "photo", "with", "flag", "cat"], max_length=16)
    torch.manual_seed(1)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    folder = tmp_path_factory.mktemp("clip_text")
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_clip_text_features_and_zero_shot_object_score(tiny_clip_with_text):
    import torch

    from sdguard.audit.objects import CLIPObjectDetector

    emb = create_embedder(f"clip:{tiny_clip_with_text}")
    t = emb.embed_text(["a photo with a flag", "a photo"])
    assert t.shape == (2, 8) and np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    # what CLIPModel defines as text features: the projected pooled output of the text tower
    ids = emb._tokenizer(["a photo"], return_tensors="pt").input_ids
    with torch.inference_mode():
        ref = emb._net.text_projection(emb._net.text_model(input_ids=ids).pooler_output)[0].numpy()
    assert np.allclose(t[1], ref / np.linalg.norm(ref), atol=1e-5)
    # the zero-shot detector: softmax over CLIP's scaled similarities to "with a flag" vs "a photo"
    det = CLIPObjectDetector(str(tiny_clip_with_text), "flag")
    images = [_smooth(0), _smooth(1)]
    img = emb.embed(images)
    logits = 100.0 * img @ t.T
    expected = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
    assert np.allclose(det.score(images), expected, atol=1e-4)
    assert det.detect(images).tolist() == (expected >= 0.5).tolist()


def test_clip_text_features_need_the_text_tower(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=8)
    CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path)
    emb = create_embedder(f"clip:{tmp_path}")
    with pytest.raises(InputError, match="vision tower"):
        emb.embed_text(["a photo"])
