"""The attacks on an erased model (:mod:`sdguard.audit.attacks`): UnlearnDiffAtk's simplex
projection and straight-through token sampling, that it lowers the erased model's diffusion loss
on images of the erased concept, and the ``--attack`` registry."""

import numpy as np
import pytest
import torch

from sdguard.audit.attacks import ATTACKS, project_simplex, unlearndiffatk
from sdguard.audit.attacks.unlearndiffatk import (
    StraightThroughSample,
    decode_prompts,
    sampled_timesteps,
)
from sdguard.core.errors import InputError

ARTWORK = "van gogh starry night"


def sorted_threshold_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by sorting (Held, Wolfe & Crowder 1974; Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1
    rho = np.nonzero(u - css / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0)


def test_simplex_projection_is_the_euclidean_one():
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=7), rng.normal(scale=5, size=50), rng.uniform(size=300) / 1000, np.full(6, 3.0),
            np.array([0.6, 0.2]), np.array([2.0, 0.0, -1.0])]
    for v in rows:
        got = project_simplex(torch.tensor(v)[None]).numpy()[0]
        assert abs(got.sum() - 1) < 1e-9 and (got >= 0).all()
        np.testing.assert_allclose(got, sorted_threshold_projection(v), atol=1e-9)
    np.testing.assert_allclose(project_simplex(torch.tensor([[0.6, 0.2], [2.0, 0.0]])).numpy(), [[0.7, 0.3], [1, 0]],
                               atol=1e-9)
    on = torch.tensor([[0.1, 0.2, 0.7]], dtype=torch.float64)  # a point of the simplex stays where it is
    assert torch.allclose(project_simplex(on), on)


def test_straight_through_sampling_draws_real_tokens_and_clips_the_gradient():
    probs = torch.tensor([[[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]]).repeat(1000, 1, 1).requires_grad_(True)
    onehot = StraightThroughSample.apply(probs, torch.Generator().manual_seed(0))
    assert set(onehot.sum(-1).unique().tolist()) == {1.0} and set(onehot.unique().tolist()) == {0.0, 1.0}
    assert 0.85 < onehot[:, 0, 0].mean() < 0.95 and onehot[:, 1, 3].all() and not onehot[:, 0, 2:].any()
    (onehot * torch.tensor([-3.0, 0.5, 2.0, 0.0])).sum().backward()
    assert torch.equal(probs.grad[0, 0], torch.tensor([-1.0, 0.5, 1.0, 0.0]))  # hardtanh


def test_unlearndiffatk_outputs_a_real_text_prompt(tiny_random):
    model = tiny_random.copy()
    before = {k: p.detach().clone() for k, p in model.unet.named_parameters()}
    targets = model.generate(["a red circle"] * 2, 0, steps=3).latents
    res = unlearndiffatk(model, "a red circle", targets, tokens=3, steps=2, timesteps=2, seed=1)
    assert len(res.losses) == 4 and res.images is None and len(res.prompts) == 2
    for text in res.prompts:
        assert text.endswith(" a red circle") and "</w>" not in text  # the prefix, then the prompt
        assert decode_prompts(model, model.tokenize([text]))[0] == text  # text the tokenizer reads back as itself
    for k, p in model.unet.named_parameters():
        assert torch.equal(p, before[k])
    with pytest.raises(InputError, match="--attack-timesteps"):
        sampled_timesteps(10, 11)
    assert sampled_timesteps(1000, 50)[:3] == [10, 30, 50] and len(sampled_timesteps(1000, 50)) == 50


def test_the_attack_registry_and_an_unknown_name(run_cli, tmp_path):
    assert ATTACKS.names() == ["soft-prompt", "unlearndiffatk"]
    assert ATTACKS.entry("unlearndiffatk").description == "UnlearnDiffAtk (Zhang et al.)"
    assert ATTACKS.entry("soft-prompt").description == "soft-prompt attack (white-box, continuous embeddings)"
    code, _, stderr = run_cli("audit", "erasure", "builtin:tiny-random", "builtin:tiny-random", "--concept", "nudity",
                              "--attack", "gcg", "--out", tmp_path / "o")
    assert code == 2
    line = " ".join(stderr.split())
    assert "--attack 'gcg' is not a known attack (known: soft-prompt, unlearndiffatk, or none)." in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("found", [True, False])
def test_the_audit_runs_the_chosen_attack(tiny_random, found):
    """``attack_concept`` with each registered attack, a stub detector that finds the concept in
    every image (UnlearnDiffAtk stops after its first timestep) or in none (it walks them all)."""
    from sdguard.audit.erasure import (
        AuditErasureConfig,
        Concept,
        Measurement,
        attack_concept,
    )

    prompt = "a red circle"
    gen = tiny_random.generate([prompt] * 2, [4, 5], steps=2)
    before = Measurement([prompt] * 2, [4, 5], gen.images, gen.latents, np.array([True, True]))
    after = Measurement([prompt] * 2, [4, 5], gen.images, gen.latents, np.array([False, False]))
    concept = Concept("red circle", "artwork", "red_circle", [prompt], [[4, 5]])
    calls = []

    def detector(c, images):
        calls.append(len(images))
        return np.full(len(images), found)

    entries = {}
    for name in ("unlearndiffatk", "soft-prompt"):
        cfg = AuditErasureConfig(original="a", erased="b", concepts=["red circle"], out="unused", attack=name,
                                 attack_steps=2, attack_timesteps=3, steps=2)
        entries[name], grid = attack_concept(tiny_random, concept, before, after, detector, cfg)
        assert grid is not None and entries[name]["attack_success_rate"] == float(found)
    uda, soft = entries["unlearndiffatk"], entries["soft-prompt"]
    assert uda["method"] == "UnlearnDiffAtk (Zhang et al.)" and (uda["steps"], uda["lr"], uda["timesteps"]) == (2, 0.01, 3)
    assert soft["method"].startswith("soft-prompt attack") and "prompts_found" not in soft
    assert [r["seed"] for r in uda["prompts_found"]] == [4, 5]
    assert all(r["adversarial_prompt"].endswith(" " + prompt) and r["success"] == found for r in uda["prompts_found"])
    assert calls == ([2] if found else [2, 2, 2]) + [2]  # UnlearnDiffAtk judged once per timestep until success
