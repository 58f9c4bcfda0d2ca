"""One run of ``sdguard train`` (:mod:`.finetune`): inputs, the step, checkpoints, the saved result."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from ..core.progress import progress_bar
from ..core.state import load_checkpoint, remove_checkpoint, restoring, save_checkpoint
from ..models.adapter import DiffusionModel
from ..models.loading import quiet_hub_bars
from .clipping import GradientClipper
from .data import (
    MEMBERS,
    NONMEMBERS,
    EncodedSet,
    encode_members,
    readable,
    split_holdout,
    write_manifest,
)
from .finetune import CHECKPOINT, TrainConfig, batch_positions, draw_seed
from .loop import cosine_lr, ema_decay, log_row, set_lr, write_log
from .trainable import select

#: the step index of :meth:`FineTuneRun.eval_loss`'s draws (beyond any training step)
EVAL_STEP = 2**40


class FineTuneRun:
    """The model, its trainable parameters, the encoded members, the optimizer and the loop state."""

    def __init__(self, cfg: TrainConfig, accelerator, progress: bool | None = None):
        self.cfg, self.acc, self.progress = cfg, accelerator, progress
        self.stage: Path | None = None
        self.state = {"step": 0, "log": [], "elapsed": 0.0, "step_seconds": []}
        self.seed = cfg.seed  # of the data order and the draws (a federated client has its own)
        self.clipper = GradientClipper(cfg.threshold, cfg.per_layer_clip)
        self.samples_before = None
        #: called after the backward pass, before clipping (FedProx's proximal term adds its gradient)
        self.regularizer = None

    # -- inputs -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Open the dataset, load the model, then :meth:`setup`."""
        from ..data.datasets import open_dataset

        cfg = self.cfg
        ds = open_dataset(cfg.dataset)
        entries = ds.entries()
        if not len(entries):
            raise InputError.bad("--dataset", cfg.dataset, "has no records to train on")
        members, holdout = split_holdout(entries, cfg.holdout, cfg.seed)
        model = DiffusionModel.load(cfg.model, device=str(self.acc.device), dtype=torch.float32)
        self.setup(model, ds, members, holdout)

    def setup(self, model: DiffusionModel, dataset, members, holdout, key: dict | None = None,
              encoded: EncodedSet | None = None) -> None:
        """Train ``model`` on the ``members`` of ``dataset`` (``holdout``: the non-members): the
        trainable subset chosen, every member encoded, the optimizer made and prepared by
        Accelerate. ``key``: what else identifies the run for a resume (a recipe's own settings);
        ``encoded``: the members' latents when the caller already has them (the tiny recipe)."""
        cfg, acc = self.cfg, self.acc
        self.dataset, self.model, m = dataset, model, model
        self.size = size = cfg.resolution or m.default_size
        if size % m.vae_scale_factor:
            raise InputError.bad("--resolution", size, f"must be a multiple of {m.vae_scale_factor}")
        micro = cfg.batch_size // cfg.grad_accum
        if micro % acc.num_processes:
            raise InputError.bad("--batch-size", cfg.batch_size, f"must split evenly over {cfg.grad_accum} "
                                 f"micro-batch(es) x {acc.num_processes} process(es)")
        if cfg.dp:
            from .private.engine import check_run

            check_run(cfg, acc, cfg.trainable)
        self.base_fingerprint = m.fingerprint()
        self.trainable = select(m, cfg.trainable, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                lora_targets=cfg.lora_targets)
        self._cast_frozen()
        if cfg.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
        if encoded is None:
            with progress_bar("encoding training images", len(members), enabled=self._bar()) as bar:
                encoded = encode_members(m, dataset, members, size, on_batch=bar.advance)
        self.use(encoded)
        ok, self.holdout_skipped = readable(dataset, holdout, size, purpose="to hold out") if len(holdout) \
            else ([], None)
        self.holdout = holdout.take(ok)
        self.empty_ids = m.tokenize([""]).cpu()[0]
        if self.acc.is_main_process and cfg.samples:
            self.sample_prompts = list(dict.fromkeys(self.encoded.entries.texts))[:cfg.samples]
            self.samples_before = self._samples()
        self.params = list(self.trainable.params.values())
        self.ema = {k: p.detach().clone().float() for k, p in self.trainable.params.items()} if cfg.ema_decay else {}
        opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.private = None
        if cfg.dp:  # Opacus wraps the UNet and the optimizer (one process, see private.engine.check_run)
            from .private.engine import PrivateTrainer

            self.private = PrivateTrainer(self, opt)
            self.optimizer, self.wrapped = self.private.optimizer, {"unet": self.private.module}
        else:
            *mods, self.optimizer = acc.prepare(*[getattr(m, name) for name in self.trainable.modules()], opt)
            self.wrapped = dict(zip(self.trainable.modules(), mods))
        self.key = {"recipe": "sdguard train", **cfg.run_key(), "dataset_fingerprint": dataset.fingerprint(),
                    "model_fingerprint": self.base_fingerprint, **(key or {})}

    def use(self, encoded: EncodedSet) -> None:
        """Train on ``encoded`` from now on (a federated client process serving another partition)."""
        self.encoded = encoded
        self.ids = self.model.tokenize(encoded.entries.texts).cpu()

    def _bar(self) -> bool | None:
        return self.progress if self.acc.is_main_process else False

    def _cast_frozen(self) -> None:
        """Modules without a trained parameter in the autocast dtype (memory on a GPU); LoRA's
        base UNet too, its adapter kept in fp32 (diffusers' ``cast_training_params``)."""
        self.frozen_fp32: dict[str, dict] = {}
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.acc.mixed_precision)
        if dtype is None:
            return
        m, owners = self.model, set(self.trainable.modules())
        for name in ("vae", "text_encoder", "unet"):
            if name not in owners or (name == "unet" and "lora" in self.cfg.trainable):
                module = getattr(m, name)
                # the saved model keeps the base's exact weights where nothing trained
                self.frozen_fp32[name] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                module.to(dtype=dtype)
        for p in self.trainable.params.values():
            p.data = p.data.float()

    # -- the step ---------------------------------------------------------------------------
    def _module(self, name: str):
        return self.wrapped.get(name, getattr(self.model, name))

    def micro_loss(self, step: int, positions: list[int], members: list[int]) -> torch.Tensor:
        """The loss of one process's slice of a micro-batch (see :meth:`micro_batch`)."""
        pred, target = self.micro_batch(step, positions, members)
        return F.mse_loss(pred.float(), target.float())

    def micro_batch(self, step: int, positions: list[int], members: list[int], seed: int | None = None,
                    dropout: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The UNet's prediction and its target for records ``members`` at global batch
        ``positions``, each record's draws from its own generator (:func:`.finetune.draw_seed` of
        ``seed``, default ``--seed``); ``dropout=False`` keeps every caption."""
        cfg, m, enc, dev = self.cfg, self.model, self.encoded, self.acc.device
        n_t = m.num_train_timesteps
        seed = self.seed if seed is None else seed
        z, ts, noise, drop = [], [], [], []
        for j, i in zip(positions, members):
            g = torch.Generator().manual_seed(draw_seed(seed, step, j))
            z.append(enc.means[i] + enc.stds[i] * torch.randn(enc.means.shape[1:], generator=g))
            ts.append(torch.randint(0, n_t, (1,), generator=g))
            noise.append(torch.randn(enc.means.shape[1:], generator=g))
            drop.append(dropout and bool(torch.rand((), generator=g) < cfg.caption_dropout))
        z0 = (torch.stack(z) * float(m.vae.config.scaling_factor)).to(dev)
        t, eps = torch.cat(ts).to(dev), torch.stack(noise).to(dev)
        ids = self.ids[members].clone()
        ids[torch.tensor(drop, dtype=torch.bool)] = self.empty_ids
        zt = m.scheduler.add_noise(z0, eps, t)
        grad_text = "text_encoder" in self.wrapped
        with self.acc.autocast():
            with contextlib.nullcontext() if grad_text else torch.no_grad():
                emb = self._module("text_encoder")(ids.to(dev))[0]
            pred = self._module("unet")(zt, t, encoder_hidden_states=emb).sample
        return pred, m.prediction_target(z0, eps, t)

    def step(self, step: int) -> tuple[float, float]:
        """One optimizer step (DP-SGD's under ``--dp``), then the EMA; returns (the loss, the gradient
        norm before clipping: the global one, or under ``--dp`` the median unit's)."""
        loss, norm = self.private.step(step) if self.private is not None else self._plain_step(step)
        if self.ema:
            d = ema_decay(step, self.cfg.ema_decay)
            with torch.no_grad():
                for k, p in self.trainable.params.items():
                    self.ema[k].lerp_(p.detach().float(), 1 - d)
        return loss, norm

    def _plain_step(self, step: int) -> tuple[float, float]:
        """The non-private step: the global batch in ``grad_accum`` micro-batches, each split over
        the processes, global-norm clipping, the optimizer."""
        cfg, acc = self.cfg, self.acc
        n = len(self.encoded.entries)
        members = batch_positions(self.seed, step, cfg.batch_size, n)
        set_lr(self.optimizer, cfg.learning_rate * cosine_lr(step, cfg.steps, cfg.warmup))
        micro = cfg.batch_size // cfg.grad_accum
        per = micro // acc.num_processes
        total = torch.zeros((), device=acc.device)
        for k in range(cfg.grad_accum):
            lo = k * micro + acc.process_index * per
            positions = list(range(lo, lo + per))
            with contextlib.ExitStack() as stack:
                if k < cfg.grad_accum - 1:
                    for mod in self.wrapped.values():
                        stack.enter_context(acc.no_sync(mod))
                loss = self.micro_loss(step, positions, [members[j] for j in positions])
                acc.backward(loss / cfg.grad_accum)
            total += loss.detach() / cfg.grad_accum
        acc.unscale_gradients(self.optimizer)
        if self.regularizer is not None:
            self.regularizer()
        norm = self.clipper.clip(self.params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(acc.reduce(total, "mean")), norm

    @torch.no_grad()
    def eval_loss(self, limit: int | None = None, batch_size: int = 16) -> float:
        """The mean loss of the current weights over the first ``limit`` members (all without it),
        every record's draws fixed by its dataset row and ``--seed`` and no caption dropped: the
        same number for the same weights and record, whichever run or client computes it."""
        enc = self.encoded
        n = len(enc.entries) if limit is None else min(limit, len(enc.entries))
        rows = [int(r) for r in enc.entries.rows[:n]]
        total = 0.0
        for lo in range(0, n, batch_size):
            idx = list(range(lo, min(n, lo + batch_size)))
            pred, target = self.micro_batch(EVAL_STEP, [rows[i] for i in idx], idx, seed=self.cfg.seed, dropout=False)
            total += float(F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1).sum())
        return total / max(n, 1)

    def fit(self) -> None:
        cfg, state = self.cfg, self.state
        every = max(1, cfg.steps // 2000)
        for name in self.trainable.modules():  # train mode: gradient checkpointing acts only in it
            getattr(self.model, name).train()
        t_start = time.perf_counter() - state["elapsed"]
        with progress_bar("training", cfg.steps, enabled=self._bar(), completed=state["step"]) as bar:
            while state["step"] < cfg.steps:
                t0 = time.perf_counter()
                loss, norm = self.step(state["step"])
                dt = time.perf_counter() - t0
                state["step"] += 1
                state["step_seconds"] = (state["step_seconds"] + [round(dt, 4)])[-1000:]
                if self.acc.is_main_process:
                    if state["step"] % every == 0 or state["step"] == cfg.steps:
                        log_row(state, self.stage, {"step": state["step"], "loss": loss, "grad_norm": norm,
                                                    "lr": self.optimizer.param_groups[0]["lr"]}, t_start)
                    eps = f" · ε {self.private.state['epsilon_curve'][-1][1]:.2f}" \
                        if self.private is not None and self.private.state["epsilon_curve"] else ""
                    bar.update(description=f"training · loss {loss:.4f} · {cfg.batch_size / dt:.1f} img/s{eps}")
                    bar.advance()
                if state["step"] % cfg.checkpoint_every == 0 and state["step"] < cfg.steps:
                    state["elapsed"] = time.perf_counter() - t_start
                    self.save()
        state["elapsed"] = time.perf_counter() - t_start

    # -- checkpoints ------------------------------------------------------------------------
    def _payload(self) -> dict:
        scaler = self.acc.scaler.state_dict() if getattr(self.acc, "scaler", None) is not None else {}
        return {"params": {k: p.detach() for k, p in self.trainable.params.items()}, "ema": self.ema,
                "optimizer": self.optimizer.state_dict(), "scaler": scaler,
                "state": {**self.state, "clipping": self.clipper.state()},
                "private": self.private.checkpoint() if self.private is not None else {}}

    def save(self) -> None:
        if self.acc.is_main_process:
            save_checkpoint(self.stage, CHECKPOINT, key=self.key, state=self._payload())
        self.acc.wait_for_everyone()

    def restore(self) -> None:
        saved = load_checkpoint(self.stage, CHECKPOINT, key=self.key)
        if saved is None:
            return
        with restoring(self.stage, CHECKPOINT), torch.no_grad():
            for k, p in self.trainable.params.items():
                p.copy_(saved["params"][k])
            for k in self.ema:
                self.ema[k].copy_(saved["ema"][k])
            self.optimizer.load_state_dict(saved["optimizer"])
            if saved["scaler"] and getattr(self.acc, "scaler", None) is not None:
                self.acc.scaler.load_state_dict(saved["scaler"])
            st = saved["state"]
            self.clipper.restore(st["clipping"])
            if self.private is not None:
                self.private.restore(saved["private"])
            self.state = {"step": int(st["step"]), "log": [dict(r) for r in st["log"]],
                          "elapsed": float(st["elapsed"]), "step_seconds": [float(v) for v in st["step_seconds"]]}

    # -- the result -------------------------------------------------------------------------
    def _samples(self):
        return self.model.generate(self.sample_prompts, seeds=[0] * len(self.sample_prompts),
                                   steps=self.cfg.sample_steps, batch_size=8)

    def apply_ema(self) -> None:
        """The EMA (if any) into the trained weights (a recipe that saves its own result calls this
        instead of :meth:`finish`)."""
        if self.ema:
            with torch.no_grad():
                for k, p in self.trainable.params.items():
                    p.copy_(self.ema[k])

    def finish(self):
        """The EMA into the weights, the model (or LoRA) and manifests saved, the report written."""
        from .finetune_report import training_report

        cfg, stage = self.cfg, self.stage
        self.apply_ema()
        if not self.acc.is_main_process:
            return None
        m = self.model
        if self.private is not None:
            self.private.close()
        for mod in (m.unet, m.text_encoder):
            mod.eval()
        save_weights(stage, m, cfg, self.frozen_fp32)
        if self.private is not None:
            from .private.record import write_privacy

            write_privacy(stage, self.private.summary())
        write_manifest(stage / MEMBERS, self.encoded.entries)
        write_manifest(stage / NONMEMBERS, self.holdout)
        write_log(stage, self.state["log"])
        samples_after = self._samples() if self.samples_before is not None else None
        trained = DiffusionModel.load(str(stage), device=str(self.acc.device))  # the saved result loads back
        trained.spec = str(cfg.out)
        report = training_report(self, trained, samples_after)
        remove_checkpoint(stage, CHECKPOINT)
        report.write(stage)
        return report


def save_weights(stage: Path, model: DiffusionModel, cfg, frozen_fp32: dict | None = None) -> None:
    """The trained ``model`` into ``stage``: its LoRA (with ``lora.json``) under ``--trainable lora``,
    else the whole pipeline (the frozen modules' fp32 weights ``frozen_fp32`` put back first)."""
    from ..models.lora import base_spec_for_saving, save_lora

    if "lora" in cfg.trainable:
        save_lora(stage, model.unet, base=base_spec_for_saving(cfg.model), rank=cfg.lora_rank,
                  alpha=cfg.lora_alpha or cfg.lora_rank, targets=cfg.lora_targets)
        return
    for name, weights in (frozen_fp32 or {}).items():
        getattr(model, name).to(dtype=torch.float32).load_state_dict(weights)
    with quiet_hub_bars():
        model.pipeline.save_pretrained(str(stage), safe_serialization=True)


__all__ = ["FineTuneRun", "EVAL_STEP", "save_weights"]
