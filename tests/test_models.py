import numpy as np
import pytest
import torch

from sdguard.core.errors import InputError
from sdguard.models import DiffusionModel, build_pipeline, build_tokenizer, load_model

PROMPTS = ["a red circle on the left", "a blue square", "night sky", "a red circle on the left"]


def test_same_seeds_same_images(tiny_random):
    a = tiny_random.generate(PROMPTS, seeds=3, steps=4)
    b = tiny_random.generate(PROMPTS, seeds=3, steps=4)
    assert np.array_equal(a.images, b.images)
    assert torch.equal(a.latents, b.latents)
    assert a.seeds == [3, 4, 5, 6]


def test_different_seeds_different_images(tiny_random):
    a = tiny_random.generate(PROMPTS[:1], seeds=[1], steps=4)
    b = tiny_random.generate(PROMPTS[:1], seeds=[2], steps=4)
    assert np.abs(a.images.astype(int) - b.images).mean() > 5
    # the same prompt with seeds 3 and 6 inside one request differs too
    g = tiny_random.generate(PROMPTS, seeds=3, steps=4)
    assert np.abs(g.images[0].astype(int) - g.images[3]).mean() > 5


def test_batch_size_does_not_change_images(tiny_random):
    one = tiny_random.generate(PROMPTS, seeds=11, steps=4, batch_size=1)
    four = tiny_random.generate(PROMPTS, seeds=11, steps=4, batch_size=4)
    three = tiny_random.generate(PROMPTS, seeds=11, steps=4, batch_size=3)
    # identical up to float rounding of batched kernels: at most one grey level anywhere
    assert np.abs(one.images.astype(int) - four.images).max() <= 1
    assert np.abs(one.images.astype(int) - three.images).max() <= 1
    assert torch.allclose(one.latents, four.latents, atol=1e-3)


def test_image_depends_only_on_its_own_seed(tiny_random):
    alone = tiny_random.generate(["night sky"], seeds=[42], steps=4)
    mixed = tiny_random.generate(["a blue square", "night sky"], seeds=[7, 42], steps=4, batch_size=2)
    assert np.abs(alone.images[0].astype(int) - mixed.images[1]).max() <= 1


def test_parameter_groups_partition_unet(tiny_random):
    groups = tiny_random.parameter_groups()
    cross, rest, unet = (set(groups[g]) for g in ("cross_attn", "non_cross_attn", "unet"))
    assert cross and rest
    assert not cross & rest
    assert cross | rest == unet == {n for n, _ in tiny_random.unet.named_parameters()}
    assert all(".attn2." in n for n in cross)
    assert set(groups["text_encoder"]) == {n for n, _ in tiny_random.text_encoder.named_parameters()}
    counts = tiny_random.parameter_counts()
    assert counts["cross_attn"] + counts["non_cross_attn"] == counts["unet"]


def test_encode_and_predict_noise_shapes(tiny_random):
    emb = tiny_random.encode_prompts(["a red circle", "night sky"])
    assert emb.cond.shape == emb.uncond.shape
    assert emb.cond.shape[0] == 2 and emb.cond.shape[1] == tiny_random.tokenizer.model_max_length
    assert not torch.allclose(emb.cond[0], emb.cond[1])
    torch.testing.assert_close(emb.uncond[0], emb.uncond[1])  # both are the empty prompt
    z = tiny_random.initial_latents([0, 1], 32, 32)
    eps = tiny_random.predict_noise(z, 500, emb.cond)
    assert eps.shape == z.shape
    eps_t = tiny_random.predict_noise(z, torch.tensor([10, 900]), emb.cond)
    assert not torch.allclose(eps, eps_t)


def test_saved_folder_and_single_file_load_and_generate(tiny_random, tmp_path):
    ref = tiny_random.generate(PROMPTS[:2], seeds=0, steps=3)
    folder = tiny_random.save(tmp_path / "pipe")
    single = tiny_random.save(tmp_path / "tiny.safetensors")
    assert (folder / "model_index.json").is_file() and single.is_file()
    for spec in (folder, single):
        m = load_model(str(spec))
        assert m.fingerprint() == tiny_random.fingerprint()
        g = m.generate(PROMPTS[:2], seeds=0, steps=3)
        assert np.abs(g.images.astype(int) - ref.images).max() <= 1
    assert not list(tmp_path.glob(".*partial"))


def test_fingerprint_tracks_weights(tiny_random):
    other = tiny_random.copy()
    assert other.fingerprint() == tiny_random.fingerprint()
    with torch.no_grad():
        next(iter(other.parameters("cross_attn").values())).add_(1e-3)
    assert other.fingerprint() != tiny_random.fingerprint()


def test_tokenizer_words_are_single_tokens_and_unknown_words_still_tokenize():
    tok = build_tokenizer(["starry", "night", "van", "gogh"], max_length=16)
    ids = tok("starry night").input_ids
    assert len(ids) == 4  # start, two words, end
    unknown = tok("zebra").input_ids
    assert len(unknown) > 3 and tok.unk_token_id not in unknown[1:-1]


def test_generate_rejects_bad_arguments(tiny_random):
    with pytest.raises(InputError, match="--steps"):
        tiny_random.generate(["a"], steps=0)
    with pytest.raises(InputError, match="PROMPT"):
        tiny_random.generate(["  "])
    with pytest.raises(InputError, match="PROMPT"):
        tiny_random.generate([])
    with pytest.raises(InputError, match="--height"):
        tiny_random.generate(["a"], steps=1, height=30)
    with pytest.raises(InputError, match="seeds"):
        tiny_random.generate(["a", "b"], seeds=[1], steps=1)


def test_device_resolution_prefers_cpu_here():
    from sdguard.models import resolve_device, resolve_dtype

    dev = resolve_device()
    assert dev.type in {"cpu", "cuda", "mps"}
    assert resolve_dtype(torch.device("cpu")) == torch.float32
    assert resolve_dtype(torch.device("cuda")) == torch.float16
    with pytest.raises(InputError, match="--device"):
        resolve_device("gpu7")


def test_guided_noise_is_classifier_free_guidance(tiny_random):
    emb = tiny_random.encode_prompts(["a red circle", "night sky"])
    z = tiny_random.initial_latents([0, 1], 32, 32)
    t = torch.tensor([100, 700])
    cond = tiny_random.predict_noise(z, t, emb.cond)
    uncond = tiny_random.predict_noise(z, t, emb.uncond)
    torch.testing.assert_close(tiny_random.guided_noise(z, t, emb, 1.0), cond, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tiny_random.guided_noise(z, 100, emb, 0.0)[0], tiny_random.predict_noise(z, 100, emb.uncond)[0],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tiny_random.guided_noise(z, t, emb, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-4, rtol=1e-4)


def test_prediction_target_follows_the_parameterization():
    from sdguard.models.components import TinyConfig

    tok = build_tokenizer(["red", "circle"])
    eps_model = DiffusionModel(build_pipeline(tok, TinyConfig()))
    v_model = DiffusionModel(build_pipeline(tok, TinyConfig(prediction_type="v_prediction", zero_terminal_snr=True)))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    assert torch.equal(eps_model.prediction_target(x0, noise, t), noise)
    v = v_model.prediction_target(x0, noise, t)
    a = v_model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = v_model.scheduler.add_noise(x0, noise, t)
    # v recovers the clean latents: x0 = sqrt(a) x_t - sqrt(1 - a) v (Salimans & Ho 2022)
    assert torch.allclose(a.sqrt() * x_t - (1 - a).sqrt() * v, x0, atol=1e-5)
    # zero terminal SNR: the last timestep is pure noise, and its v target is -x0
    assert float(v_model.scheduler.alphas_cumprod[-1]) < 1e-6
    assert torch.allclose(v[2], -x0[2], atol=1e-3)
