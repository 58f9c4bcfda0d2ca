"""ESD: Erased Stable Diffusion (Gandikota, Materzynska, Fiotto-Kaufman & Bau 2023, "Erasing
Concepts from Diffusion Models", ICCV; arXiv 2303.07345).

The model is fine-tuned so that its noise prediction for the concept ``c`` follows *negative*
classifier-free guidance of a frozen copy theta* of itself::

    eps_theta(x_t, c, t)  ->  eps_theta*(x_t, t) - eta * (eps_theta*(x_t, c, t) - eps_theta*(x_t, t))

with the loss ``MSE(eps_theta(x_t, c, t), target)``. The latents ``x_t`` come from partial DDIM
sampling *with the model being trained*, conditioned on the concept with guidance
``start_guidance``, stopped after a random number ``k`` of the ``ddim_steps`` steps (the
adapter's :meth:`~sdguard.models.DiffusionModel.sample_latents`); ``t`` is drawn uniformly in the
DDPM interval of that DDIM step. One concept of the list is drawn per iteration, so several
concepts are erased in one run.

Parameter groups, as in the paper's code:

- ``esd-x`` ('xattn'): the cross-attention layers (every ``attn2`` of the UNet); erases a concept
  tied to its words (an artist's style) and leaves the rest of the model alone;
- ``esd-u`` ('noxattn'): everything but cross-attention, the time embedding and the output layer
  (``conv_norm_out``/``conv_out``, the paper's ``out.``); erases a concept whatever the prompt
  (nudity);
- ``esd-all`` ('full'): the whole UNet.

Defaults are the paper's ESD (ICCV code, ``train-scripts/train-esd.py`` of
github.com/rohitgandikota/erasing): 1000 iterations, Adam with learning rate 1e-5, ``eta``
(negative guidance) 1.0, ``start_guidance`` 3, 50 DDIM steps, batch 1, no preserve term. A tiny
model trained on a CPU needs a larger learning rate and far fewer iterations (see the benchmark
``benchmarks/erasure.py``).

Extension of ours, off by default (``preserve_weight`` 0), named ``retain term`` in the report:
with ``preserve_weight > 0`` and a preserve list, a retain term in the manner of DreamBooth's
prior preservation (Ruiz et al. 2023) and the retain sets of later ESD-based work (e.g.
AdvUnlearn, Zhang et al. 2024): before training, the frozen model draws ``preserve_samples``
latents for each preserved prompt (DDIM, ``ddim_steps`` steps at ``start_guidance``); each
iteration then noises ``preserve_batch`` of them (distinct prompts; 0: one of every preserved
prompt) to a random ``t`` and pulls the trained model's prediction for their prompts towards the
frozen model's, weighted by ``preserve_weight``. Measured on ``builtin:tiny`` (README, "Concept
erasure"): without it ESD-x erasing "van gogh starry night" and "monet" also lost munch scream;
at weight 1 with 4 of the 6 preserved prompts per iteration it lost munch scream (0%, 13%, 0% of
its presence in three runs) and hokusai (46%, 0%, 96%); at weight 30 with every preserved prompt
``tests/test_erasure_efficacy.py`` keeps both.

Precision (a deviation from the code, which trains in the loaded dtype: bf16 in the diffusers
script ``esd_sd.py``): the trained model is trained in float32 whatever dtype it was loaded in.
Adam at lr 1e-5 on fp16 weights underflows (its eps) and its updates fall below fp16's rounding
step, so a model loaded in fp16 on a GPU would learn nothing or NaN. The pipeline being trained is
cast to float32 for the run (master weights, optimizer state and gradients in float32), the
frozen teacher stays in the loaded dtype on a GPU (half the memory; inference only) and in
float32 on a CPU (half precision is slow there), and the result is cast back to the loaded dtype.

About ``t`` (``paper_timesteps``): the paper's code draws ``t_enc ~ U{0..S-1}``, samples with the
CompVis DDIM sampler "till ``t_enc``", a count of the DDIM steps that *remain* (its loop counts
``index`` down from S-1 and stops at ``index + 1 == t_enc``), and draws the DDPM timestep
``t ~ U[round(t_enc/S*T), round((t_enc+1)/S*T))``: the noisier the latent, the larger ``t``.
``paper_timesteps=True`` does this: ``S - t_enc`` DDIM steps from noise (the CompVis sampler runs
one more step when ``t_enc >= 1``; its latent is then one DDIM interval less noisy than its ``t``;
ours is within one interval either way). By default (``paper_timesteps=False``) ``k ~ U{0..S-1}``
steps are taken and ``t`` is drawn in the DDIM interval that starts at the timestep the latents
have reached, ``[timesteps[k], timesteps[k] + T/S)``, as the official diffusers script
``esd_sd.py`` uses ``scheduler.timesteps[k]`` itself; the two pair the same noise levels and differ
in how ``t`` sits within the interval (:meth:`_ESD.schedule`; ``tests/test_erasure.py`` checks
the pairing on the scheduler). Both sample the training latents with the model being trained, as
the paper's code does (the diffusers script samples with the frozen copy).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ...core.config import RunConfig, option
from ...core.errors import InputError, StateError
from ...core.progress import progress_bar
from ...core.state import (
    check_checkpoint,
    checkpoint_paths,
    load_checkpoint,
    restoring,
    save_checkpoint,
)
from .base import ErasureMethod, ErasureResult, register_method

#: the checkpoint's name in the work folder (``erasure_checkpoint.safetensors`` and ``.json``, see
#: :mod:`sdguard.core.state`)
CHECKPOINT = "erasure_checkpoint"


class ESDOptions(RunConfig):
    """Options of ESD (defaults: the paper's; the retain term, which the paper has not, is off)."""

    eta: float = option(1.0, gt=0, le=100, help="negative guidance scale (paper: 1.0)")
    iterations: int = option(1000, ge=1, le=10_000_000, help="training iterations (paper: 1000)")
    lr: float = option(1e-5, gt=0, le=1, help="learning rate (paper: 1e-5)")
    start_guidance: float = option(3.0, ge=0, le=100, help="guidance of the partial sampling of x_t (paper: 3)")
    ddim_steps: int = option(50, ge=1, le=1000, help="DDIM steps of the partial sampling (paper: 50)")
    batch_size: int = option(1, ge=1, le=256, help="latents per iteration (paper: 1)")
    checkpoint_every: int = option(100, ge=1, help="iterations between checkpoints")
    paper_timesteps: bool = option(False, help=(
        "pair latents and t as the paper's CompVis code does (t_enc DDIM steps remain; see the esd module docstring)"))
    preserve_weight: float = option(0.0, ge=0, le=1e6, help=(
        "weight of sdguard's retain term on the --preserve prompts (an extension; 0, the default: the paper's ESD, "
        "which has no preserve term). Measured on builtin:tiny: 30 over every preserved prompt kept munch scream and "
        "hokusai where weight 1 over 4 of 6 prompts per iteration lost them"))
    preserve_batch: int = option(0, ge=0, le=1024, help=(
        "preserved prompts in the retain term per iteration; 0 (the default): every preserved prompt, in each "
        "iteration (4 of 6 per iteration lost munch scream and hokusai on builtin:tiny, see preserve_weight)"))
    preserve_samples: int = option(2, ge=1, le=256, help="latents drawn by the frozen model per preserved prompt")


def _is_cross_attention(name: str) -> bool:
    return ".attn2." in name


def _is_esd_u(name: str) -> bool:
    # the paper's 'noxattn': not cross-attention, not the time embedding, not the output layer
    return not (_is_cross_attention(name) or name.startswith(("conv_out.", "conv_norm_out.", "time_embedding.",
                                                               "time_embed.", "add_embedding.")))


class _ESD(ErasureMethod):
    Options = ESDOptions
    resumable = True
    group: ClassVar[str] = ""

    @property
    def uses_preserve(self) -> bool:  # type: ignore[override]
        """The preserve list is used by the retain term only (``preserve_weight > 0``)."""
        return self.options.preserve_weight > 0  # type: ignore[attr-defined]

    def extensions(self) -> list[str]:
        o: ESDOptions = self.options  # type: ignore[assignment]
        if o.preserve_weight > 0:
            every = "every preserved prompt" if not o.preserve_batch else f"{o.preserve_batch} preserved prompts"
            return [f"retain term (sdguard's prior preservation, weight {o.preserve_weight:g}, {every} per iteration, "
                    f"{o.preserve_samples} latents each)"]
        return []

    def select(self, name: str) -> bool:
        raise NotImplementedError

    def touched(self, model) -> dict[str, torch.nn.Parameter]:
        return {k: p for k, p in model.unet.named_parameters() if self.select(k)}

    def checkpoint_key(self, concepts: Sequence[str], preserve: Sequence[str] = (), seed: int = 0, *,
                       model_fingerprint: str | None) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint: the model it
        started from (its weight fingerprint), the method, its options, the concepts and the seed."""
        o: ESDOptions = self.options  # type: ignore[assignment]
        preserve = list(preserve) if o.preserve_weight > 0 else []
        return {"model_fingerprint": model_fingerprint,
                **_run_key(self.name, o, list(concepts) + ["--preserve"] + preserve, seed)}

    def check_resume(self, model_fingerprint: str, concepts: Sequence[str], *, preserve: Sequence[str] = (),
                     seed: int = 0, workdir: Path) -> None:
        """Refuse another run's checkpoint in ``workdir`` before any work (only its JSON is read)."""
        check_checkpoint(workdir, CHECKPOINT, key=self.checkpoint_key(concepts, preserve, seed,
                                                                      model_fingerprint=model_fingerprint))

    # -- the loop ---------------------------------------------------------------------------
    def run(self, model, concepts: Sequence[str], *, preserve: Sequence[str] = (), anchor="", seed: int = 0,
            progress: bool | None = None, workdir: Path | None = None, resume: bool = False,
            model_fingerprint: str | None = None) -> ErasureResult:
        o: ESDOptions = self.options  # type: ignore[assignment]
        concepts = list(concepts)
        params = self.touched(model)
        if not params:
            raise InputError.bad("--method", self.name, "selects no parameter of this UNet")
        fp = None  # the key is only written with a workdir
        if workdir is not None:
            fp = model_fingerprint or model.fingerprint()
        key = self.checkpoint_key(concepts, preserve, seed, model_fingerprint=fp)
        saved = load_checkpoint(workdir, CHECKPOINT, key=key) if resume and workdir is not None else None
        unet = model.unet
        saved_flags = {k: p.requires_grad for k, p in unet.named_parameters()}
        loaded_dtype = model.dtype
        teacher = model.copy()  # theta*: frozen, in the loaded dtype (see the module docstring on precision)
        if teacher.device.type != "cuda":
            teacher.to_dtype(torch.float32)
        model.to_dtype(torch.float32)  # trained in float32 whatever the loaded dtype; cast back below
        try:  # whatever happens, the model's flags and dtype come back
            s = self._setup(model, teacher, params, concepts, list(preserve), seed, key)
            start = self._restore(s, saved, workdir) if saved is not None else 0
            unet.train()
            with progress_bar(f"{self.name} erasing", o.iterations, enabled=progress, completed=start) as bar:
                for it in range(start, o.iterations):
                    s.losses.append(self._iteration(model, s))
                    bar.advance()
                    if workdir is not None and (it + 1) % o.checkpoint_every == 0 and it + 1 < o.iterations:
                        save_checkpoint(workdir, CHECKPOINT, key=s.key, state={
                            "iteration": it + 1, "losses": s.losses, "rng": s.gen.get_state(), "params": s.params,
                            "optimizer": s.opt.state_dict()})
        finally:
            unet.eval()
            for k, p in unet.named_parameters():
                p.requires_grad_(saved_flags[k])
            model.to_dtype(loaded_dtype)
            del teacher
        losses = s.losses
        tail = losses[-max(1, len(losses) // 10):]
        stats = {"parameters_trained": sum(p.numel() for p in params.values()), "tensors_trained": len(params),
                 "iterations": o.iterations, "resumed_at": start, "final_loss": sum(tail) / len(tail),
                 "first_loss": losses[0] if losses else None, "ddim_timesteps": len(s.ddim_ts),
                 "trained_dtype": "float32", "loaded_dtype": str(loaded_dtype).replace("torch.", ""),
                 "timesteps": "paper (CompVis: t_enc steps remain)" if o.paper_timesteps else "latent's DDIM interval"}
        return ErasureResult(stats=stats, losses=losses)

    def _setup(self, model, teacher, params: dict, concepts: list[str], preserve: list[str], seed: int,
               key: dict) -> SimpleNamespace:
        """The optimizer, the prompts' embeddings, the retain term's latents, the DDIM timesteps
        and the generator of the loop's draws, with the frozen ``teacher``."""
        o: ESDOptions = self.options  # type: ignore[assignment]
        teacher.unet.requires_grad_(False)
        teacher.unet.eval()
        model.unet.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params.values(), lr=o.lr)
        preserve = preserve if o.preserve_weight > 0 else []
        with torch.no_grad():
            embs = {c: model.encode_prompts([c] * o.batch_size) for c in concepts}  # cond, uncond (the empty prompt)
        latent_shape = model.latent_shape(model.default_size, model.default_size)
        prior = self._prior(teacher, preserve, o, seed, latent_shape)
        sched = model.scheduler
        sched.set_timesteps(o.ddim_steps)
        ddim_ts = [int(t) for t in sched.timesteps]
        return SimpleNamespace(teacher=teacher, params=params, opt=opt, concepts=concepts, embs=embs,
                               latent_shape=latent_shape, prior=prior, ddim_ts=ddim_ts, T=model.num_train_timesteps,
                               gen=torch.Generator("cpu").manual_seed(int(seed)), losses=[], key=key)

    def _restore(self, s: SimpleNamespace, state: dict, workdir: Path) -> int:
        """Put a loaded checkpoint (``state``) into the loop; the iteration to go on from."""
        with restoring(workdir, CHECKPOINT):  # a hand-made or foreign record: one sentence, not a traceback
            if set(state["params"]) != set(s.params):
                raise StateError.bad("--resume", str(checkpoint_paths(workdir, CHECKPOINT)[1]),
                                     f"holds other parameters than --method {self.name} selects in this model; "
                                     "start anew with --overwrite instead of --resume")
            with torch.no_grad():
                for k, v in state["params"].items():
                    if v.shape != s.params[k].shape:
                        raise ValueError(f"{k} has shape {tuple(v.shape)}, the model's {tuple(s.params[k].shape)}")
                    s.params[k].copy_(v.to(s.params[k].device, s.params[k].dtype))
            s.opt.load_state_dict(state["optimizer"])
            s.gen.set_state(state["rng"])
            s.losses = [float(x) for x in state["losses"]]
            return int(state["iteration"])

    def _iteration(self, model, s: SimpleNamespace) -> float:
        """One step of ESD (and of the retain term); the ESD loss."""
        o: ESDOptions = self.options  # type: ignore[assignment]
        gen, unet = s.gen, model.unet
        c = s.concepts[int(torch.randint(len(s.concepts), (1,), generator=gen))]
        emb = s.embs[c]
        k = int(torch.randint(o.ddim_steps, (1,), generator=gen))
        noise = torch.randn((o.batch_size, *s.latent_shape), generator=gen)
        taken, lo, hi = self.schedule(k, o, s.ddim_ts, s.T)
        t = torch.randint(lo, hi, (o.batch_size,), generator=gen).to(model.device)
        was_training = unet.training
        unet.eval()
        x_t = model.sample_latents(emb, noise, steps=o.ddim_steps, guidance=o.start_guidance, stop_after=taken)
        unet.train(was_training)
        with torch.no_grad():
            e_0 = s.teacher.predict_noise(x_t, t, emb.uncond)
            e_c = s.teacher.predict_noise(x_t, t, emb.cond)
            target = e_0 - o.eta * (e_c - e_0)
        e_n = model.predict_noise(x_t, t, emb.cond)
        loss = F.mse_loss(e_n.float(), target.float())
        s.opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.prior is not None:  # retain term: preserved prompts keep the frozen model's prediction
            x_p, t_p, c_p = self._retain_batch(model, s.prior, o, gen, s.T)
            with torch.no_grad():
                e_p = s.teacher.predict_noise(x_p, t_p, c_p)
            retain = o.preserve_weight * F.mse_loss(model.predict_noise(x_p, t_p, c_p).float(), e_p.float())
            retain.backward()
        s.opt.step()
        return float(loss.detach())

    @staticmethod
    def _prior(teacher, preserve: list[str], o: ESDOptions, seed: int, latent_shape) -> dict | None:
        """The frozen model's latents of each preserved prompt (``preserve_samples`` each), drawn
        from a generator of their own so that a resumed run draws the same ones."""
        if not preserve:
            return None
        g = torch.Generator("cpu").manual_seed(int(seed) + 7919)
        m = o.preserve_samples
        texts = [p for p in preserve for _ in range(m)]
        noise = torch.randn((len(texts), *latent_shape), generator=g)
        latents, conds = [], []
        with torch.no_grad():
            for i in range(0, len(texts), 32):  # in chunks: a long preserve list on a large model
                emb = teacher.encode_prompts(texts[i:i + 32])
                latents.append(teacher.sample_latents(emb, noise[i:i + 32], steps=o.ddim_steps, guidance=o.start_guidance))
                conds.append(emb.cond)
        x0, cond = torch.cat(latents), torch.cat(conds)
        return {"latents": x0.reshape(len(preserve), m, *x0.shape[1:]),
                "cond": cond.reshape(len(preserve), m, *cond.shape[1:])[:, 0]}

    @staticmethod
    def _retain_batch(model, prior: dict, o: ESDOptions, gen: torch.Generator, T: int):
        """``preserve_batch`` distinct preserved prompts (0: all of them), one of their latents each,
        noised to a random t."""
        P, m = prior["latents"].shape[:2]
        b = min(o.preserve_batch, P) if o.preserve_batch else P
        which = torch.randperm(P, generator=gen)[:b]
        sample = torch.randint(m, (b,), generator=gen)
        x0 = prior["latents"][which, sample]
        t = torch.randint(0, T, (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = model.scheduler.add_noise(x0, noise.to(x0.device, x0.dtype), t.to(x0.device))
        return x_t, t.to(model.device), prior["cond"][which]

    @staticmethod
    def schedule(k: int, o: ESDOptions, ddim_ts: list[int], T: int) -> tuple[int, int, int]:
        """For the draw ``k`` in ``0..S-1``: the DDIM steps to take from noise and the DDPM interval
        ``[lo, hi)`` that ``t`` is drawn from (see the module docstring). ``paper_timesteps``:
        ``k`` is the paper's ``t_enc``, the steps that remain; otherwise the steps taken."""
        S = o.ddim_steps
        if o.paper_timesteps:
            taken = S - k
            lo, hi = round(k / S * T), round((k + 1) / S * T)
        else:
            taken = k
            lo = ddim_ts[k] if k < len(ddim_ts) else 0
            hi = lo + max(1, round(T / S))
        lo, hi = max(0, min(lo, T - 1)), min(T, hi)
        return taken, lo, max(hi, lo + 1)


def _run_key(name: str, o: ESDOptions, concepts: Sequence[str], seed: int) -> dict:
    """The key of a checkpoint (:func:`~sdguard.core.state.load_checkpoint` names the entry that differs)."""
    return {"method": name, "options": o.model_dump(mode="json", exclude={"checkpoint_every"}),
            "concepts": list(concepts), "seed": seed}


@register_method
class ESDX(_ESD):
    name = "esd-x"
    description = "ESD on the cross-attention layers (attn2): erases a concept tied to its words, e.g. a style"
    group = "cross_attn"

    def select(self, name: str) -> bool:
        return _is_cross_attention(name)


@register_method
class ESDU(_ESD):
    name = "esd-u"
    description = ("ESD on everything but cross-attention, time embedding and output layer: "
                   "erases a concept whatever the prompt, e.g. nudity")
    group = "non_cross_attn"

    def select(self, name: str) -> bool:
        return _is_esd_u(name)


@register_method
class ESDAll(_ESD):
    name = "esd-all"
    description = "ESD on the whole UNet"
    group = "unet"

    def select(self, name: str) -> bool:
        return True


__all__ = ["ESDOptions", "ESDX", "ESDU", "ESDAll", "CHECKPOINT"]
