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

ESD has no preserve term. With a preserve list this module adds a retain term in the manner of
DreamBooth's prior preservation (Ruiz et al. 2023) and the retain sets of later ESD-based work
(e.g. AdvUnlearn, Zhang et al. 2024): before training, the frozen model draws
``preserve_samples`` latents for each preserved prompt (DDIM, ``ddim_steps`` steps at
``start_guidance``); each iteration then noises ``preserve_batch`` of them (distinct prompts) to
a random ``t`` and pulls the trained model's prediction for their prompts towards the frozen
model's, weighted by ``preserve_weight`` (0 switches it off: the paper's ESD). The term acts where
the preserved concepts live (on their own latents, at every noise level), so it still holds when
the preserve list is long; a single preserved prompt on the erased concept's ``x_t`` (the
simplest variant) lost a kept artwork of ``builtin:tiny`` at short settings.

Paper defaults: 1000 iterations, Adam with learning rate 1e-5, ``eta`` (negative guidance) 1.0,
``start_guidance`` 3, 50 DDIM steps, batch 1. A tiny model trained on a CPU needs a larger
learning rate and far fewer iterations (see the benchmark ``benchmarks/erasure.py``).

About ``t``: the paper's code draws ``t ~ U[round(k/S*T), round((k+1)/S*T))`` with ``k`` the
number of DDIM steps already taken from pure noise, which pairs the least noisy latents with the
largest ``t`` (the two count the schedule from opposite ends). By default this module draws ``t``
in the same-sized DDPM interval that ends at the DDIM timestep the latents have reached, so ``t``
is the noise level of ``x_t``; ``paper_timesteps=True`` reproduces the original pairing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from ...core.config import RunConfig
from ...core.errors import InputError
from ...core.io import atomic_write_bytes
from ...core.progress import progress_bar
from .base import ErasureMethod, ErasureResult, register_method

CHECKPOINT = "erasure_checkpoint.pt"


class ESDOptions(RunConfig):
    """Options of ESD (defaults: the paper's)."""

    cli_names = {"eta": "--eta", "iterations": "--iterations", "lr": "--lr", "start_guidance": "--start-guidance",
                 "ddim_steps": "--ddim-steps", "batch_size": "--batch-size", "checkpoint_every": "--checkpoint-every",
                 "paper_timesteps": "--paper-timesteps", "preserve_weight": "--preserve-weight",
                 "preserve_batch": "--preserve-batch", "preserve_samples": "--preserve-samples"}

    eta: float = Field(1.0, gt=0, le=100, description="negative guidance scale")
    iterations: int = Field(1000, ge=1, le=10_000_000)
    lr: float = Field(1e-5, gt=0, le=1)
    start_guidance: float = Field(3.0, ge=0, le=100, description="guidance of the partial sampling of x_t")
    ddim_steps: int = Field(50, ge=1, le=1000)
    batch_size: int = Field(1, ge=1, le=256)
    checkpoint_every: int = Field(100, ge=1)
    paper_timesteps: bool = False
    preserve_weight: float = Field(1.0, ge=0, le=1e6, description="weight of the retain term (with --preserve)")
    preserve_batch: int = Field(4, ge=1, le=1024, description="preserved prompts in the retain term per iteration")
    preserve_samples: int = Field(2, ge=1, le=256, description="latents drawn by the frozen model per preserved prompt")


def _is_cross_attention(name: str) -> bool:
    return ".attn2." in name


def _is_esd_u(name: str) -> bool:
    # the paper's 'noxattn': not cross-attention, not the time embedding, not the output layer
    return not (_is_cross_attention(name) or name.startswith(("conv_out.", "conv_norm_out.", "time_embedding.",
                                                               "time_embed.", "add_embedding.")))


class _ESD(ErasureMethod):
    Options = ESDOptions
    resumable = True
    uses_preserve = True
    group: ClassVar[str] = ""

    def select(self, name: str) -> bool:
        raise NotImplementedError

    def touched(self, model) -> dict[str, torch.nn.Parameter]:
        return {k: p for k, p in model.unet.named_parameters() if self.select(k)}

    # -- the loop ---------------------------------------------------------------------------
    def run(self, model, concepts: Sequence[str], *, preserve: Sequence[str] = (), anchor="", seed: int = 0,
            progress: bool | None = None, workdir: Path | None = None, resume: bool = False) -> ErasureResult:
        o: ESDOptions = self.options  # type: ignore[assignment]
        concepts = list(concepts)
        params = self.touched(model)
        if not params:
            raise InputError.bad("--method", self.name, "selects no parameter of this UNet")
        teacher = model.copy()  # theta*: frozen
        teacher.unet.requires_grad_(False)
        teacher.unet.eval()
        unet = model.unet
        saved_flags = {k: p.requires_grad for k, p in unet.named_parameters()}
        unet.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params.values(), lr=o.lr)

        preserve = list(preserve) if o.preserve_weight > 0 else []
        with torch.no_grad():
            embs = {c: model.encode_prompts([c] * o.batch_size) for c in concepts}  # cond, uncond (the empty prompt)
        latent_shape = model.latent_shape(model.default_size, model.default_size)
        prior = self._prior(teacher, preserve, o, seed, latent_shape)
        sched = model.scheduler
        sched.set_timesteps(o.ddim_steps)
        ddim_ts = [int(t) for t in sched.timesteps]
        T = model.num_train_timesteps

        gen = torch.Generator("cpu").manual_seed(int(seed))
        losses: list[float] = []
        start = 0
        fingerprint = _run_key(self.name, o, concepts + ["--preserve"] + preserve, seed)
        ckpt = Path(workdir) / CHECKPOINT if workdir is not None else None
        if resume and ckpt is not None and ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            if state.get("key") != fingerprint:
                raise InputError.bad("--resume", str(ckpt), "was written by a run with other concepts, method or options; "
                                     "rerun without --resume or with the same arguments")
            with torch.no_grad():
                for k, v in state["params"].items():
                    params[k].copy_(v.to(params[k].device, params[k].dtype))
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["rng"])
            losses = list(state["losses"])
            start = int(state["iteration"])

        def save_checkpoint(iteration: int) -> None:
            if ckpt is None:
                return
            import io

            buf = io.BytesIO()
            torch.save({"key": fingerprint, "iteration": iteration, "losses": losses, "rng": gen.get_state(),
                        "params": {k: p.detach().cpu() for k, p in params.items()},
                        "optimizer": opt.state_dict()}, buf)
            atomic_write_bytes(ckpt, buf.getvalue())

        unet.train()
        try:
            with progress_bar(f"{self.name} erasing", o.iterations, enabled=progress, completed=start) as bar:
                for it in range(start, o.iterations):
                    c = concepts[int(torch.randint(len(concepts), (1,), generator=gen))]
                    emb = embs[c]
                    k = int(torch.randint(o.ddim_steps, (1,), generator=gen))  # DDIM steps taken from noise
                    noise = torch.randn((o.batch_size, *latent_shape), generator=gen)
                    lo, hi = self._interval(k, o, ddim_ts, T)
                    t = torch.randint(lo, hi, (o.batch_size,), generator=gen).to(model.device)
                    was_training = unet.training
                    unet.eval()
                    x_t = model.sample_latents(emb, noise, steps=o.ddim_steps, guidance=o.start_guidance, stop_after=k)
                    unet.train(was_training)
                    with torch.no_grad():
                        e_0 = teacher.predict_noise(x_t, t, emb.uncond)
                        e_c = teacher.predict_noise(x_t, t, emb.cond)
                        target = e_0 - o.eta * (e_c - e_0)
                    e_n = model.predict_noise(x_t, t, emb.cond)
                    loss = F.mse_loss(e_n.float(), target.float())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if prior is not None:  # retain term: preserved prompts keep the frozen model's prediction
                        x_p, t_p, c_p = self._retain_batch(model, prior, o, gen, T)
                        with torch.no_grad():
                            e_p = teacher.predict_noise(x_p, t_p, c_p)
                        retain = o.preserve_weight * F.mse_loss(model.predict_noise(x_p, t_p, c_p).float(), e_p.float())
                        retain.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                    bar.advance()
                    if (it + 1) % o.checkpoint_every == 0 and it + 1 < o.iterations:
                        save_checkpoint(it + 1)
        finally:
            unet.eval()
            for k, p in unet.named_parameters():
                p.requires_grad_(saved_flags[k])
            del teacher
        tail = losses[-max(1, len(losses) // 10):]
        stats = {"parameters_trained": sum(p.numel() for p in params.values()), "tensors_trained": len(params),
                 "iterations": o.iterations, "resumed_at": start, "final_loss": sum(tail) / len(tail),
                 "first_loss": losses[0] if losses else None, "ddim_timesteps": len(ddim_ts)}
        return ErasureResult(stats=stats, losses=losses)

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
        """``preserve_batch`` distinct preserved prompts, one of their latents each, noised to a random t."""
        P, m = prior["latents"].shape[:2]
        b = min(o.preserve_batch, P)
        which = torch.randperm(P, generator=gen)[:b]
        sample = torch.randint(m, (b,), generator=gen)
        x0 = prior["latents"][which, sample]
        t = torch.randint(0, T, (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = model.scheduler.add_noise(x0, noise.to(x0.device, x0.dtype), t.to(x0.device))
        return x_t, t.to(model.device), prior["cond"][which]

    @staticmethod
    def _interval(k: int, o: ESDOptions, ddim_ts: list[int], T: int) -> tuple[int, int]:
        """The DDPM interval ``[lo, hi)`` t is drawn from after ``k`` DDIM steps (see the module docstring)."""
        S = o.ddim_steps
        width = max(1, round(T / S))
        if o.paper_timesteps:
            lo, hi = round(k / S * T), round((k + 1) / S * T)
        else:
            lo = ddim_ts[k] if k < len(ddim_ts) else 0
            hi = lo + width
        lo, hi = max(0, min(lo, T - 1)), min(T, hi)
        return lo, max(hi, lo + 1)


def _run_key(name: str, o: ESDOptions, concepts: Sequence[str], seed: int) -> str:
    data = json.dumps({"method": name, "options": o.model_dump(exclude={"checkpoint_every"}),
                       "concepts": list(concepts), "seed": seed}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


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
