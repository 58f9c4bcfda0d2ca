"""Concept erasure on tiny random models: ESD, UCE, delta files, the commands and their bad inputs."""

import json

import pytest
import torch

from sdguard.core.errors import InputError
from sdguard.core.state import checkpoint_exists, load_checkpoint
from sdguard.harden.erasure import (
    ERASURE_METHODS,
    apply_delta,
    erase,
    get_method,
    read_delta,
)
from sdguard.harden.erasure.esd import CHECKPOINT
from sdguard.harden.erasure.uce import aligned_embeddings, preserve_embeddings
from sdguard.models import load_model


@pytest.fixture
def model(tiny_random):
    return tiny_random.copy()


def _cross_kv(model):
    return {k: p for k, p in model.unet.named_parameters() if ".attn2.to_k." in k or ".attn2.to_v." in k}


# -- the registry and parameter groups ---------------------------------------------------------

def test_registry_names_every_method():
    assert {"esd-x", "esd-u", "esd-all", "uce"} <= set(ERASURE_METHODS.names())
    with pytest.raises(InputError, match="--method 'esd-z'"):
        get_method("esd-z")
    with pytest.raises(InputError, match="--iterations is not an option of --method 'uce'"):
        get_method("uce", iterations=3)
    with pytest.raises(InputError, match="--eta 0"):
        get_method("esd-x", eta=0)


def test_esd_parameter_groups_follow_the_paper(model):
    x = set(get_method("esd-x").touched(model))
    u = set(get_method("esd-u").touched(model))
    every = set(get_method("esd-all").touched(model))
    assert x and u and not (x & u)
    assert all(".attn2." in k for k in x) and x == set(model.parameters("cross_attn"))
    excluded = every - x - u
    assert excluded and all(k.startswith(("conv_out.", "conv_norm_out.", "time_embedding.")) for k in excluded)
    assert every == set(model.parameters("unet"))
    uce = set(get_method("uce").touched(model))
    assert uce == set(_cross_kv(model)) and uce < x
    assert set(get_method("uce", edit_keys=False).touched(model)) == {k for k in uce if ".to_v." in k}


# -- partial sampling through the pipeline -----------------------------------------------------

def test_sample_latents_stops_after_k_steps(model):
    emb = model.encode_prompts(["a red circle"])
    noise = model.initial_latents([3], model.default_size, model.default_size)
    full = model.sample_latents(emb, noise, steps=4, guidance=5.0)
    gen = model.generate(["a red circle"], [3], steps=4, guidance=5.0)
    assert torch.allclose(full.cpu(), gen.latents, atol=1e-6)
    assert torch.equal(model.sample_latents(emb, noise, steps=4, stop_after=0).cpu(), noise.cpu())
    two = model.sample_latents(emb, noise, steps=4, guidance=5.0, stop_after=2)
    assert two.shape == noise.shape and not torch.allclose(two, full) and not torch.allclose(two, noise)
    with pytest.raises(InputError, match="stop_after"):
        model.sample_latents(emb, noise, steps=4, stop_after=5)


# -- ESD ---------------------------------------------------------------------------------------

def _esd_gap(model, teacher, concept, eta, seed=0):
    """Distance of eps_theta(x_t, c, t) to the ESD target on fixed noisy latents."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((6, *model.latent_shape(model.default_size, model.default_size)), generator=g)
    t = torch.randint(0, 1000, (6,), generator=g)
    with torch.no_grad():
        emb = teacher.encode_prompts([concept] * 6)
        e0 = teacher.predict_noise(x, t, emb.uncond)
        ec = teacher.predict_noise(x, t, emb.cond)
        en = model.predict_noise(x, t, emb.cond)
    return float(((en - (e0 - eta * (ec - e0))) ** 2).mean())


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("paper", [False, True])
def test_esd_draws_t_at_the_noise_level_of_its_latents(model, spacing, paper):
    from sdguard.harden.erasure.esd import ESDX, ESDOptions

    sched = type(model.scheduler).from_config({**model.scheduler.config, "timestep_spacing": spacing})
    S, T = 50, int(sched.config.num_train_timesteps)
    sched.set_timesteps(S)
    ts = [int(t) for t in sched.timesteps]
    o = ESDOptions(ddim_steps=S, paper_timesteps=paper)
    pairs = []
    for k in range(S):
        taken, lo, hi = ESDX.schedule(k, o, ts, T)
        assert 0 <= taken <= S and 0 <= lo < hi <= T
        level = ts[taken] if taken < S else 0  # the timestep whose noise the latents carry after `taken` steps
        assert abs(level - lo) <= T / S + 1 and abs(level - (hi - 1)) <= 2 * T / S, (k, taken, level, lo, hi)
        pairs.append((level, lo))
    # the noisier the latents, the larger t: the paper's t_enc counts the steps that remain
    levels, los = zip(*sorted(pairs))
    assert list(los) == sorted(los) and levels[0] <= T / S and levels[-1] >= T - 2 * T / S


def test_esd_trains_a_half_precision_model_in_float32(tiny_random):
    """A model loaded in fp16 (as on a GPU) is erased in float32 and written back in fp16: the
    weights change, stay finite, and follow the float32 run of the same fp16-rounded weights."""
    opts = dict(iterations=6, lr=1e-4, ddim_steps=3, batch_size=2)
    half = tiny_random.copy().to_dtype(torch.float16)
    start = {k: p.detach().clone() for k, p in _cross_kv(half).items()}
    full = tiny_random.copy()
    with torch.no_grad():  # the same starting weights, the fp16-rounded ones
        for (_, p), (_, q) in zip(full.unet.named_parameters(), half.unet.named_parameters()):
            p.copy_(q.float())
    result = get_method("esd-x", **opts).run(half, ["red circle"], seed=2)
    get_method("esd-x", **opts).run(full, ["red circle"], seed=2)
    assert half.dtype == torch.float16 and result.stats["trained_dtype"] == "float32"
    assert torch.isfinite(torch.tensor(result.losses)).all()
    moved, agree = 0, []
    for k, p in _cross_kv(half).items():
        assert torch.isfinite(p).all(), k
        d_half = (p.detach().float() - start[k].float()).flatten()
        d_full = (_cross_kv(full)[k].detach() - start[k].float()).flatten()
        moved += int(d_half.abs().max() > 0)
        agree.append(float(torch.nn.functional.cosine_similarity(d_half, d_full, dim=0)))
    assert moved == len(start)  # every cross-attention tensor changed in fp16 (updates not lost to rounding)
    assert min(agree) > 0.9, agree  # the fp16 erasure is the float32 one, rounded


def test_esd_x_moves_the_concept_towards_negative_guidance(model):
    teacher = model.copy()
    before = _esd_gap(model, teacher, "red circle", 2.0)
    untouched = {k: p.detach().clone() for k, p in model.unet.named_parameters() if ".attn2." not in k}
    method = get_method("esd-x", iterations=24, lr=3e-3, eta=2.0, ddim_steps=4, batch_size=4)
    result = method.run(model, ["red circle"], seed=1)
    after = _esd_gap(model, teacher, "red circle", 2.0)
    assert after < 0.5 * before, (before, after)
    assert len(result.losses) == 24
    for k, p in model.unet.named_parameters():  # only cross-attention changed
        if k in untouched:
            assert torch.equal(p, untouched[k]), k


def _drift(model, teacher, prompt, seed=0):
    """Distance of the model's prediction for ``prompt`` to the frozen teacher's, on fixed noisy latents."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((6, *model.latent_shape(model.default_size, model.default_size)), generator=g)
    t = torch.randint(0, 1000, (6,), generator=g)
    with torch.no_grad():
        c = teacher.encode_prompts([prompt] * 6).cond
        return float(((model.predict_noise(x, t, c) - teacher.predict_noise(x, t, c)) ** 2).mean())


def test_esd_retain_term_keeps_the_preserved_prompts(model):
    teacher = model.copy()
    keep = ["blue square", "a green star", "a yellow cross"]
    opts = dict(iterations=24, lr=3e-3, eta=2.0, ddim_steps=4, batch_size=4)
    plain, kept = model.copy(), model.copy()
    get_method("esd-x", preserve_weight=0, **opts).run(plain, ["red circle"], preserve=keep, seed=1)
    get_method("esd-x", preserve_weight=30, preserve_batch=2, **opts).run(kept, ["red circle"], preserve=keep, seed=1)
    drift_plain = sum(_drift(plain, teacher, p) for p in keep)
    drift_kept = sum(_drift(kept, teacher, p) for p in keep)
    assert drift_kept < 0.5 * drift_plain, (drift_plain, drift_kept)
    before = _esd_gap(teacher, teacher, "red circle", 2.0)
    assert _esd_gap(kept, teacher, "red circle", 2.0) < 0.7 * before  # and the concept is still erased


def test_esd_resumes_from_its_checkpoint(tiny_random, tmp_path, monkeypatch):
    opts = dict(iterations=4, lr=1e-3, ddim_steps=3, checkpoint_every=2)
    straight = tiny_random.copy()
    get_method("esd-x", **opts).run(straight, ["red circle", "blue square"], seed=3)

    crashed = tiny_random.copy()
    calls = {"n": 0}
    real = crashed.predict_noise

    def flaky(*a, **k):  # the student predicts once per iteration (the teacher is a copy): fail in the third
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(crashed, "predict_noise", flaky)
    with pytest.raises(KeyboardInterrupt):
        get_method("esd-x", **opts).run(crashed, ["red circle", "blue square"], seed=3, workdir=tmp_path)
    assert checkpoint_exists(tmp_path, CHECKPOINT)
    key = get_method("esd-x", **opts).checkpoint_key(["red circle", "blue square"], seed=3,
                                                     model_fingerprint=tiny_random.fingerprint())
    assert load_checkpoint(tmp_path, CHECKPOINT, key=key)["iteration"] == 2

    resumed = tiny_random.copy()
    result = get_method("esd-x", **opts).run(resumed, ["red circle", "blue square"], seed=3, workdir=tmp_path, resume=True)
    assert result.stats["resumed_at"] == 2 and len(result.losses) == 4
    for (k, a), b in zip(straight.unet.named_parameters(), resumed.unet.parameters()):
        assert torch.allclose(a, b, atol=1e-6), k
    with pytest.raises(InputError, match="--resume"):
        get_method("esd-x", **{**opts, "eta": 2.0}).run(tiny_random.copy(), ["red circle"], seed=3, workdir=tmp_path,
                                                         resume=True)


# -- UCE ---------------------------------------------------------------------------------------

def test_uce_alignment_starts_at_the_last_word_token(model):
    c, a = aligned_embeddings(model, "red circle", "")
    assert c.shape == a.shape and c.shape[0] == model.tokenizer.model_max_length - 2
    hidden = model.encode_text(model.tokenize(["red circle", ""])).double()
    assert torch.allclose(c[0], hidden[0, 2]) and torch.allclose(a[0], hidden[1, 0])  # "circle" <-> start token
    c2, a2 = aligned_embeddings(model, "red", "blue square")
    red = model.encode_text(model.tokenize(["red"]))[0, 1].detach().double()
    assert torch.allclose(c2[0], red)  # the concept's only word token
    assert c2.shape == a2.shape


def test_uce_matches_a_least_squares_reference(model):
    concepts, preserve = ["red circle", "star"], ["blue square", "night sky"]
    name, w = next(iter(_cross_kv(model).items()))
    w_old = w.detach().double().clone()
    pairs = [aligned_embeddings(model, c, "") for c in concepts]
    c_e = torch.cat([c for c, _ in pairs])
    c_a = torch.cat([a for _, a in pairs])
    c_p = torch.cat([preserve_embeddings(model, p) for p in [""] + preserve])  # the empty prompt is retained
    lamb, s_e, s_p = 0.3, 1.5, 0.7
    get_method("uce", lamb=lamb, erase_scale=s_e, preserve_scale=s_p).run(model, concepts, preserve=preserve)
    # slow reference: the ridge regression the closed form solves, as one stacked least-squares problem
    d = w_old.shape[1]
    a = torch.cat([s_e ** 0.5 * c_e, s_p ** 0.5 * c_p, lamb ** 0.5 * torch.eye(d, dtype=torch.float64)])
    b = torch.cat([s_e ** 0.5 * c_a @ w_old.T, s_p ** 0.5 * c_p @ w_old.T, lamb ** 0.5 * w_old.T])
    ref = torch.linalg.lstsq(a, b).solution.T
    assert torch.allclose(dict(model.unet.named_parameters())[name].double(), ref, atol=1e-4), name


def test_uce_on_builtin_tiny_equals_the_papers_closed_form():
    """The default edit (the empty prompt retained, preserve scale max(0.1, 1/len(retain))) equals
    the paper's equation 7 written here from the paper, token by token, in float64."""
    model = load_model("builtin:tiny")
    original = model.copy()
    concept, preserve = "van gogh starry night", ["munch scream", "hokusai", "a red ring on the left"]
    get_method("uce").run(model, [concept], preserve=preserve)
    tok, enc = original.tokenizer, original.text_encoder

    def hidden(text):  # the padded sequence of text-encoder states and the number of real tokens
        ids = tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return enc(ids.input_ids)[0][0].double(), int(ids.attention_mask.sum())

    (h_c, n_c), (h_a, n_a) = hidden(concept), hidden("")
    i_c, i_a = n_c - 2, n_a - 2  # the last word token (the start token for the empty anchor)
    cut = max(i_c, i_a)
    erased = list(zip(h_c[i_c:len(h_c) - (cut - i_c)], h_a[i_a:len(h_a) - (cut - i_a)]))
    retain = [""] + preserve
    lamb, s_e, s_p = 0.5, 1.0, max(0.1, 1 / len(retain))
    kept = [p for text in retain for p in hidden(text)[0]]
    new, old = _cross_kv(model), _cross_kv(original)
    assert len(new) > 0
    for name, w in old.items():
        w0 = w.detach().double()
        eye = torch.eye(w0.shape[1], dtype=torch.float64)
        lhs = lamb * w0 + s_e * sum(torch.outer(w0 @ a, c) for c, a in erased) + \
            s_p * sum(torch.outer(w0 @ p, p) for p in kept)
        rhs = lamb * eye + s_e * sum(torch.outer(c, c) for c, _ in erased) + s_p * sum(torch.outer(p, p) for p in kept)
        ref = lhs @ torch.linalg.inv(rhs)
        rel = float((new[name].detach().double() - ref).norm() / ref.norm())
        assert rel < 1e-5, (name, rel)
        assert float((ref - w0).norm() / w0.norm()) > 1e-3, name  # and the edit is not the identity


def test_uce_expand_erases_and_preserves_the_art_templates(model):
    from sdguard.harden.erasure.uce import ART_TEMPLATES

    explicit, plain = model.copy(), model.copy()
    get_method("uce", expand=True, expand_preserve=True).run(model, ["red circle"], preserve=["blue square", "star"])
    # the same edit spelled out: the templated concept erased, the templated preserve prompts kept,
    # at the preserve scale of the retain set the user gave: the empty prompt and two prompts
    get_method("uce", preserve_scale=1 / 3).run(
        explicit, ["red circle"] + [t.format("red circle") for t in ART_TEMPLATES],
        preserve=["blue square", "star"] + [t.format(p) for p in ("blue square", "star") for t in ART_TEMPLATES])
    a, b = _cross_kv(model), _cross_kv(explicit)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    get_method("uce").run(plain, ["red circle"], preserve=["blue square", "star"])
    assert not all(torch.allclose(a[k], _cross_kv(plain)[k], atol=1e-4) for k in a)


def test_uce_leaves_out_preserve_prompts_that_share_a_word_with_the_concept(model):
    from sdguard.harden.erasure.uce import conflicting

    assert conflicting(["van gogh starry night"], ["a red circle under a night sky", "munch scream",
                                                   "a painting by hokusai"]) == {"a red circle under a night sky": ["night"]}
    with pytest.warns(UserWarning, match="a red circle at night"):
        result = get_method("uce", drop_conflicting=True).run(model.copy(), ["red circle"],
                                                               preserve=["blue square", "a red circle at night"])
    assert result.stats["preserve_left_out"] == ["a red circle at night"]
    assert get_method("uce", drop_conflicting=True).extensions() and not get_method("uce").extensions()
    # with the option: the same edit as with the clean list; by default (the paper's) the prompt is kept
    clean, kept, dropped = model.copy(), model.copy(), model.copy()
    get_method("uce").run(clean, ["red circle"], preserve=["blue square"])
    import warnings as w
    with w.catch_warnings():
        w.simplefilter("ignore")
        get_method("uce", drop_conflicting=True).run(dropped, ["red circle"], preserve=["blue square", "a red circle at night"])
    with w.catch_warnings():
        w.simplefilter("error")  # no warning by default
        get_method("uce").run(kept, ["red circle"], preserve=["blue square", "a red circle at night"])
    for (k, a), b, c in zip(clean.unet.named_parameters(), dropped.unet.parameters(), kept.unet.parameters()):
        if ".attn2.to_v." in k:
            assert torch.allclose(a, b) and not torch.allclose(a, c), k


def test_uce_sends_the_concept_to_its_anchor_and_keeps_the_preserved(model):
    original = model.copy()
    get_method("uce").run(model, ["red circle"], preserve=["blue square", "a green star"])
    c, a = aligned_embeddings(original, "red circle", "")
    p = preserve_embeddings(original, "blue square")
    new, old = _cross_kv(model), _cross_kv(original)
    for k in new:
        w1, w0 = new[k].detach().double(), old[k].detach().double()
        before = (c @ w0.T - a @ w0.T).norm()
        after = (c @ w1.T - a @ w0.T).norm()
        drift = (p @ w1.T - p @ w0.T).norm()
        assert after < 0.5 * before, k
        assert drift < 0.5 * (c @ w1.T - c @ w0.T).norm(), k


# -- the command, the delta file ----------------------------------------------------------------

def test_erase_writes_a_loadable_model_and_an_applicable_delta(tmp_path, tiny_random):
    out = tmp_path / "erased"
    report = erase("builtin:tiny-random", ["red circle"], "uce", preserve=["blue square"], out=out, preview=1)
    erased = load_model(str(out))
    assert erased.fingerprint() == report.models["erased"]["fingerprint"] != report.models["original"]["fingerprint"]
    tensors, meta = read_delta(out)
    assert set(tensors) == {f"unet.{k}" for k in _cross_kv(tiny_random)}
    assert meta["base_fingerprint"] == report.models["original"]["fingerprint"] and meta["info"]["method"] == "uce"
    assert report.results["delta"]["bytes"] < 0.2 * sum(f.stat().st_size for f in (out / "unet").iterdir())
    patched = apply_delta(tiny_random.copy(), out)
    assert patched.fingerprint() == erased.fingerprint()
    with pytest.raises(InputError, match="not the model the delta"):
        apply_delta(erased, out)
    with pytest.raises(InputError, match="not an sdguard delta"):
        read_delta(next((out / "unet").glob("*.safetensors")))
    data = json.loads((out / "report.json").read_text())
    assert data["command"] == "erase" and data["config"]["method"] == "uce"
    assert data["results"]["delta"]["tensors"] == len(tensors) and data["timings"]["erase"] > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_esd_command_records_options_and_leaves_no_checkpoint(tmp_path):
    out = tmp_path / "esd"
    report = erase("builtin:tiny-random", ["red circle"], "esd-u", out=out, preview=0, iterations=3, lr=1e-3,
                   ddim_steps=3, checkpoint_every=1)
    assert not checkpoint_exists(out, CHECKPOINT) and not (tmp_path / ".esd.partial").exists()
    assert report.results["options"]["iterations"] == 3 and report.results["options"]["lr"] == 1e-3
    assert report.results["loss"]["curve"] and report.results["delta"]["tensors"] > 0
    assert not any(".attn2." in k for k in read_delta(out)[0])


# -- the command line ----------------------------------------------------------------------------

def test_cli_erase_warns_about_words_outside_the_vocabulary(run_cli, tmp_path):
    code, stdout, stderr = run_cli("erase", "builtin:tiny-random", "--concept", "kandinsky", "--method", "uce",
                                   "--preview", 0, "--out", tmp_path / "o")
    assert code == 0, stderr
    assert "kandinsky" in stderr and "vocabulary" in stderr and "sub-word" in stderr
    assert "report.html" in stdout and (tmp_path / "o" / "model_index.json").is_file()
    assert any("kandinsky" in w for w in json.loads((tmp_path / "o" / "report.json").read_text())["results"]["warnings"])


BAD = [
    (["--method", "esd-x", "--eta", "0"], ["--eta", "0"]),
    (["--method", "esd-x", "--eta", "-1"], ["--eta", "-1"]),
    (["--method", "esd-u", "--iterations", "0"], ["--iterations", "0"]),
    (["--method", "esd-x", "--lr", "0"], ["--lr", "0"]),
    (["--method", "magic"], ["--method", "magic"]),
    (["--method", "uce", "--iterations", "5"], ["--iterations", "uce"]),
    (["--method", "uce", "--concept", " "], ["--concept", "empty"]),
]


@pytest.mark.parametrize("args,words", BAD)
def test_cli_erase_bad_input(run_cli, tmp_path, args, words):
    code, _, stderr = run_cli("erase", "builtin:tiny-random", "--concept", "red circle", *args, "--out", tmp_path / "o")
    assert code == 2, stderr
    line = " ".join(stderr.split())
    assert all(w in line for w in words), line
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()


def test_cli_erase_refuses_an_existing_folder_unless_overwrite(run_cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    args = ("erase", "builtin:tiny-random", "--concept", "red circle", "--method", "uce", "--preview", 0, "--out")
    code, _, stderr = run_cli(*args, mine, "--overwrite")  # not a folder sdguard wrote
    assert code == 2 and "did not write" in stderr, stderr
    assert (mine / "keep.txt").read_text() == "mine"
    out = tmp_path / "o"
    assert run_cli(*args, out)[0] == 0
    (out / "old.txt").write_text("from the first run")
    code, _, stderr = run_cli(*args, out)
    assert code == 2 and "--overwrite" in stderr and "already exists" in stderr, stderr
    code, _, stderr = run_cli(*args, out, "--overwrite")
    assert code == 0, stderr
    assert not (out / "old.txt").exists() and (out / "erasure_delta.safetensors").is_file()
