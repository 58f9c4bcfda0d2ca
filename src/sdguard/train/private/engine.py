"""DP-SGD for ``sdguard train --dp``: Opacus's ``PrivacyEngine`` over the fine-tuning loop.

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy"): every step samples units by
Poisson sampling (:mod:`.sampling`), clips each unit's gradient to ``--max-grad-norm`` ``C``, sums
them, adds ``N(0, sigma^2 C^2)`` noise and divides by the expected batch; an accountant
(:mod:`.accounting`) turns ``(sigma, q, steps)`` into epsilon. As DP-LDM (Lyu et al. 2023,
"Differentially Private Latent Diffusion Models") does, it fine-tunes a subset of the UNet (the
``attention`` group is DP-LDM's; ``lora`` is DP-LoRA), on the latents of a frozen VAE; the text
encoder stays frozen (see :func:`check_run`).

Opacus does the mechanism: ``PrivacyEngine.make_private`` wraps the UNet in a
``GradSampleModule`` (per-sample gradients by ``--grad-sample-mode``: hooks, functorch, ew, or
ghost clipping's ``GradSampleModuleFastGradientClipping``) and the AdamW in a ``DPOptimizer``
(clipping, noise, the accountant's step hook); ``BatchMemoryManager`` splits a Poisson batch
into physical batches of at most ``--batch-size / --grad-accum`` units and tells the optimizer
which one ends the logical step. sdguard's own parts, and why:

- The loader's batch sampler is :class:`.sampling.SeededPoissonSampler` (Opacus's distribution,
  seeded per step) and ``make_private`` gets ``poisson_sampling=False`` so that it keeps it: a
  resumed run then draws the same batches, and the noise generator's state is checkpointed too,
  so a resumed DP run is bit-identical to an uninterrupted one.
- ``--privacy-unit group`` (:mod:`.units`): the per-sample gradients of a group's records are
  summed into one row per group before the optimizer clips (``p.grad_sample`` is replaced by the
  per-group sums), so Opacus clips, noises and accounts groups. A group larger than a physical
  batch is run in record chunks whose per-sample gradients are added into the group's row, so
  memory stays one physical batch of records plus one row per group of the physical batch.
- Each record's draws (latent sample, t, noise, caption dropout) come from its own generator, as
  in non-private training (:func:`sdguard.train.finetune.draw_seed`).

Deviations from Opacus's defaults: ``secure_mode`` is off (pseudo-random noise and sampling; a
release that must resist floating-point attacks on the noise needs Opacus's secure mode and
``torchcsprng``); ``--mixed-precision auto`` means fp32 under ``--dp``.
"""

from __future__ import annotations

import math
import statistics
import warnings

import torch
from torch.utils.data import DataLoader

from ...core.errors import InputError, require
from ..loop import cosine_lr, set_lr
from .accounting import epsilon_spent, solve_noise
from .sampling import SeededPoissonSampler, UnitIndex, collate_units
from .units import PrivacyUnits, units_for


def per_record_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The diffusion loss of each record: the MSE over its elements (their mean is the batch loss)."""
    return torch.nn.functional.mse_loss(pred, target, reduction="none").flatten(1).mean(1)


class PerRecordMSE(torch.nn.Module):
    """:func:`per_record_mse` as the criterion ghost clipping wraps: ``reduction="none"`` gives the
    per-record losses, ``"mean"`` / ``"sum"`` their batch mean / sum."""

    def __init__(self):
        super().__init__()
        self.reduction = "mean"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = per_record_mse(pred, target)
        return per if self.reduction == "none" else (per.mean() if self.reduction == "mean" else per.sum())


def check_run(cfg, accelerator, groups: list[str]) -> None:
    """What DP training refuses, before anything is encoded or written: one sentence each."""
    if accelerator.num_processes > 1:
        raise InputError.bad("--dp", True, f"runs in one process ({accelerator.num_processes} were launched): "
                             "multi-GPU DP (Opacus's DPDDP) is not wired into sdguard train")
    if cfg.mixed_precision in ("fp16", "bf16"):
        raise InputError.bad("--mixed-precision", cfg.mixed_precision, "is not supported with --dp (per-sample "
                             "gradients and their clipping run in fp32); use no or auto")
    if "text_encoder" in groups:
        raise InputError.bad("--trainable", "text_encoder", "cannot train under --dp: CLIP's position embedding is "
                             "shared by the whole batch (its input has batch size 1), which Opacus cannot split "
                             "into per-sample gradients; train a UNet subset")
    if cfg.gradient_checkpointing:
        raise InputError.bad("--gradient-checkpointing", True, "is not supported with --dp (the recomputed forward "
                             "pass would feed Opacus's hooks twice)")
    if cfg.per_layer_clip:
        raise InputError.bad("--per-layer-clip", True, "is not used with --dp, which clips each privacy unit's whole "
                             "gradient at --max-grad-norm")


class PrivateTrainer:
    """The DP step of a :class:`~sdguard.train.finetune_run.FineTuneRun` (``run.step`` calls :meth:`step`)."""

    def __init__(self, run, optimizer: torch.optim.Optimizer):
        require("opacus", "dp", "differentially private training")
        from opacus import PrivacyEngine
        from opacus.utils.batch_memory_manager import BatchMemoryManager

        self.run, cfg = run, run.cfg
        self.units: PrivacyUnits = units_for(cfg, run.dataset, run.encoded.entries)
        n = self.units.count
        if cfg.delta >= 1.0 / n:
            raise InputError.bad("--delta", cfg.delta, f"must be below 1/{n} = {1 / n:.3g}, one over the number of "
                                 f"privacy units ({cfg.privacy_unit}s) trained on")
        self.sampler = SeededPoissonSampler(n, cfg.batch_size, cfg.seed)
        self.q = self.sampler.q
        self.noise = cfg.noise_multiplier if cfg.noise_multiplier is not None else \
            solve_noise(cfg.target_epsilon, cfg.delta, self.q, cfg.steps, cfg.accountant)
        self.physical = cfg.batch_size // cfg.grad_accum
        device = run.acc.device
        self.generator = torch.Generator(device=device).manual_seed((cfg.seed * 7_777_777 + 0xD1FF) % (2**63 - 1))
        loader = DataLoader(UnitIndex(n), batch_sampler=self.sampler, collate_fn=collate_units)
        run.model.unet.train()  # Opacus validates a module in training mode
        with warnings.catch_warnings():  # "Secure RNG turned off": said once, in the report
            warnings.simplefilter("ignore")
            self.engine = PrivacyEngine(accountant=cfg.accountant)
            try:
                made = self.engine.make_private(
                    module=run.model.unet, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise,
                    max_grad_norm=cfg.max_grad_norm, poisson_sampling=False, grad_sample_mode=cfg.grad_sample_mode,
                    noise_generator=self.generator, criterion=PerRecordMSE())
            except (ValueError, NotImplementedError, TypeError) as exc:
                raise InputError.bad("--trainable", ", ".join(cfg.trainable), f"holds a layer Opacus cannot compute "
                                     f"per-sample gradients of in --grad-sample-mode {cfg.grad_sample_mode}: "
                                     f"{str(exc).splitlines()[0]}") from None
        self.module, self.optimizer = made[0], made[1]
        self.criterion = made[2] if cfg.grad_sample_mode == "ghost" else None
        self.loader = BatchMemoryManager(data_loader=made[-1], max_physical_batch_size=self.physical,
                                         optimizer=self.optimizer).__enter__()
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.batches = None
        self.state = {"unit_norm_median": [], "clipped_share": [], "units_per_step": [], "epsilon_curve": []}

    # -- the step ---------------------------------------------------------------------------
    def _next_chunk(self) -> torch.Tensor:
        if self.batches is None:
            self.batches = iter(self.loader)
        try:
            return next(self.batches)
        except StopIteration:  # an epoch of the sampler ended: the next one goes on from next_step
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self, step: int) -> tuple[float, float]:
        """One logical DP step; returns (mean loss of its records, median unit gradient norm)."""
        cfg = self.run.cfg
        set_lr(self.optimizer, cfg.learning_rate * cosine_lr(step, cfg.steps, cfg.warmup))
        if self.batches is None:
            self.sampler.next_step = step
        losses, norms = [], []
        with warnings.catch_warnings():  # torch's note that no input needs a gradient (the UNet's inputs are data)
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self._logical_step(step, losses, norms)
        finite = [v for v in norms if math.isfinite(v)]
        med = statistics.median(finite) if finite else 0.0
        self.state["unit_norm_median"].append(round(med, 6))
        self.state["clipped_share"].append(round(sum(v > cfg.max_grad_norm for v in finite) / len(finite), 4)
                                           if finite else 0.0)
        self.state["units_per_step"].append(self._units)
        done = step + 1
        if done % self.sampler.steps_per_epoch == 0 or done == cfg.steps:
            self.state["epsilon_curve"].append([done, round(self.epsilon(), 6)])
        return (statistics.fmean(losses) if losses else float("nan")), med

    def _logical_step(self, step: int, losses: list, norms: list) -> None:
        """The physical batches of ``step`` (``BatchMemoryManager`` tells the optimizer which is last)."""
        offset, self._units = 0, 0
        while True:
            chunk = self._next_chunk()
            if self.sampler.last_step != step:  # pragma: no cover - the loader and the loop disagree
                raise RuntimeError(f"DP sampler at step {self.sampler.last_step}, training at step {step}")
            offset = self._chunk(step, chunk.tolist(), offset, losses, norms)
            self._units += len(chunk)
            self.optimizer.step()
            skipped = self.optimizer._is_last_step_skipped
            self.optimizer.zero_grad(set_to_none=True)
            if not skipped:
                return

    def _chunk(self, step: int, units: list[int], offset: int, losses: list, norms: list) -> int:
        """Backward passes of the records of ``units`` (a physical batch) in chunks of at most the
        physical size, with each unit's per-sample gradients summed into one row."""
        run, records = self.run, self.units.records(units)
        if not records:  # an empty Poisson batch still gets its noise: empty per-sample gradients
            for p in self.params:
                if self.criterion is not None:
                    p.grad = torch.zeros_like(p)
                else:
                    p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            return offset
        owner = torch.tensor([k for k, u in enumerate(units) for _ in self.units.members[u]], dtype=torch.long)
        one_pass = len(records) <= self.physical and len(records) == len(units)
        rows = None
        for lo in range(0, len(records), self.physical):
            part = records[lo:lo + self.physical]
            pred, target = run.micro_batch(step, list(range(offset + lo, offset + lo + len(part))), part)
            if self.criterion is not None:  # ghost clipping: two backward passes inside
                loss = self.criterion(pred.float(), target.float())
                loss.backward()
                norms.extend(self.module.per_sample_gradient_norms.tolist())
                losses.extend(loss.loss_per_sample.detach().tolist())
                continue
            per = per_record_mse(pred.float(), target.float())
            per.mean().backward()
            losses.extend(per.detach().tolist())
            if one_pass:
                break
            rows = self._add_rows(rows, owner[lo:lo + len(part)], len(units))
        if self.criterion is None:
            if rows is not None:
                for p in self.params:
                    p.grad_sample = rows[p]
            norms.extend(self._row_norms())
        return offset + len(records)

    def _add_rows(self, rows, owner: torch.Tensor, n_units: int):
        """Add this pass's per-sample gradients into per-unit rows (and free them)."""
        rows = rows or {p: torch.zeros((n_units, *p.shape), device=p.device, dtype=p.dtype) for p in self.params}
        for p in self.params:
            gs = p.grad_sample
            gs = torch.cat(gs) if isinstance(gs, list) else gs
            rows[p].index_add_(0, owner.to(gs.device), gs.to(p.dtype))
            p.grad_sample = None
            p.grad = None
        return rows

    def _row_norms(self) -> list[float]:
        """The L2 norm of each unit's gradient before clipping (what Opacus clips)."""
        per = [(torch.cat(p.grad_sample) if isinstance(p.grad_sample, list) else p.grad_sample).flatten(1).norm(dim=1)
               for p in self.params]
        return torch.stack(per, dim=1).norm(dim=1).tolist()

    # -- accounting and state ---------------------------------------------------------------
    def epsilon(self) -> float:
        return epsilon_spent(self.run.cfg.accountant, self.engine.accountant.history, self.run.cfg.delta)

    def checkpoint(self) -> dict:
        return {"noise_rng": self.generator.get_state(), "history": [list(h) for h in self.engine.accountant.history],
                "stats": self.state}

    def restore(self, saved: dict) -> None:
        self.generator.set_state(saved["noise_rng"])
        self.engine.accountant.history = [tuple(h) for h in saved["history"]]
        self.state = {k: [list(v) if isinstance(v, (list, tuple)) else v for v in vals]
                      for k, vals in saved["stats"].items()}

    def close(self) -> None:
        """Opacus's hooks off the UNet (it is saved and used as a plain module afterwards)."""
        close = getattr(self.module, "_close", None)
        if close is not None:
            close()

    def summary(self) -> dict:
        cfg, st = self.run.cfg, self.state
        eps = self.epsilon()
        return {
            "epsilon": eps, "delta": cfg.delta, "accountant": cfg.accountant, "noise_multiplier": self.noise,
            "target_epsilon": cfg.target_epsilon, "sample_rate": self.q, "steps": len(st["units_per_step"]),
            "max_grad_norm": cfg.max_grad_norm, "expected_batch": self.optimizer.expected_batch_size,
            "physical_batch": self.physical, "grad_sample_mode": cfg.grad_sample_mode, **self.units.describe(),
            "mean_units_per_step": statistics.fmean(st["units_per_step"]) if st["units_per_step"] else 0.0,
            "clipped_share_median": statistics.median(st["clipped_share"]) if st["clipped_share"] else None,
            "unit_norm_median": statistics.median(st["unit_norm_median"]) if st["unit_norm_median"] else None,
            "epsilon_curve": st["epsilon_curve"], "secure_mode": False, "opacus": _opacus_version(),
        }


def _opacus_version() -> str:
    import opacus

    return getattr(opacus, "__version__", "unknown")


__all__ = ["PrivateTrainer", "PerRecordMSE", "per_record_mse", "check_run"]
