"""The report of a ``sdguard train`` run: the results a machine reads, the plots and grids a person looks at."""

from __future__ import annotations

import math
import statistics

import numpy as np

from ..report import Report, auto_scale, make_grid, png_bytes
from ..report.plots import histogram, line_plot
from .data import MEMBERS, NONMEMBERS
from .loop import LOG_FILE


def training_report(run, trained, samples_after) -> Report:
    """The report of the finished ``run`` (a :class:`~sdguard.train.finetune_run.FineTuneRun`)."""
    cfg, state, acc = run.cfg, run.state, run.acc
    report = Report("train", cfg)
    report.models["base"] = {"spec": cfg.model, "fingerprint": run.base_fingerprint}
    report.add_model("trained", trained)
    log = state["log"]
    secs = state["step_seconds"]
    step_s = statistics.median(secs) if secs else None
    losses = [r["loss"] for r in log]
    k = max(1, len(losses) // 10)
    skipped = run.encoded.skipped
    extensions = []
    if cfg.per_layer_clip:
        extensions.append({"name": "per-layer clipping", "detail": f"each parameter tensor clipped at "
                           f"{cfg.clip_norm}/sqrt(L) (McMahan et al. 2018's flat split)"})
    report.results = {
        "dataset": run.dataset.describe(), "dataset_fingerprint": run.dataset.fingerprint(),
        "members": len(run.encoded.entries), "nonmembers": len(run.holdout),
        "skipped": skipped.to_dict(),
        "holdout_skipped": run.holdout_skipped.to_dict() if run.holdout_skipped is not None else None,
        "trainable": run.trainable.describe(),
        "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha or cfg.lora_rank, "targets": list(cfg.lora_targets)}
        if "lora" in cfg.trainable else None,
        "resolution": run.size, "steps": state["step"], "global_batch": cfg.batch_size,
        "grad_accum": cfg.grad_accum, "processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
        "learning_rate": cfg.learning_rate, "warmup_steps": cfg.warmup,
        "prediction_type": getattr(run.model.scheduler.config, "prediction_type", "epsilon"),
        "loss_first": statistics.fmean(losses[:k]) if losses else None,
        "loss_last": statistics.fmean(losses[-k:]) if losses else None,
        "clipping": run.clipper.summary(),
        "step_seconds_median": step_s, "images_per_second": cfg.batch_size / step_s if step_s else None,
        "train_seconds": round(state["elapsed"], 1), "extensions": extensions,
    }
    weights = ["pytorch_lora_weights.safetensors", "lora.json"] if "lora" in cfg.trainable else \
        ["model_index.json", "unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/"]
    report.artifacts = weights + [MEMBERS, NONMEMBERS, LOG_FILE]
    if run.private is not None:
        from .private.record import PRIVACY_FILE

        report.results["privacy"] = run.private.summary()
        report.results["clipping"] = None  # per-unit clipping is the DP part's
        report.artifacts.append(PRIVACY_FILE)
    report.timings["train"] = round(state["elapsed"], 1)
    t = run.trainable.describe()
    report.section("Trainable parameters", f"{', '.join(t['groups'])}: {t['parameters']:,} of {t['of']:,} "
                   f"({100 * t['share']:.2f}%) in {t['tensors']} tensors",
                   table=[{"group": ", ".join(t["groups"]), "parameters": t["parameters"], "of": t["of"],
                           "share": round(t["share"], 5), "median step (s)": step_s}])
    if log:
        report.section("Training loss", f"{len(log)} logged steps", figures=[(line_plot(
            {"loss": ([r["step"] for r in log], losses)}, title="training loss", xlabel="step", ylabel="MSE"),
            "training loss")])
    clip = report.results["clipping"]
    dp_line = _clipping_section(report, run)
    if samples_after is not None:
        scale = auto_scale(samples_after.images.shape[1])
        both = np.concatenate([run.samples_before.images, samples_after.images])
        report.section("Samples of training captions, before and after (seed 0)",
                       "top row: the base model; bottom row: the trained one. " + "; ".join(run.sample_prompts),
                       figures=[(png_bytes(make_grid(both, len(run.sample_prompts), scale)), "before / after")])
    report.summary = [
        f"trained {t['parameters']:,} parameters ({', '.join(t['groups'])}) on {len(run.encoded.entries)} images "
        f"for {state['step']} steps", f"loss {report.results['loss_first']:.4f} -> {report.results['loss_last']:.4f}"
        if losses else "no loss logged",
    ]
    if dp_line is not None:
        report.summary.append(dp_line)
    else:
        report.summary.append(f"{clip['clipped_share'] * 100:.0f}% of steps clipped" if cfg.clip_norm else "no clipping")
    if skipped.total:
        report.summary.append(f"{skipped.total} image(s) skipped: {skipped.missing} missing, "
                              f"{skipped.unreadable} unreadable")
    return report


def _clipping_section(report: Report, run) -> str | None:
    """The DP part (its summary line returned) or the histogram of the steps' gradient norms."""
    cfg, clip = run.cfg, report.results["clipping"]
    if run.private is not None:
        from .private.record import privacy_section

        return privacy_section(report, report.results["privacy"])
    finite = [v for v in run.clipper.norms if math.isfinite(v)]
    if finite:
        lines = {"threshold": cfg.clip_norm} if cfg.clip_norm else None
        text = (f"{clip['clipped_steps']} of {clip['steps']} steps clipped ({100 * clip['clipped_share']:.1f}%) at "
                f"{cfg.clip_norm}{' per layer' if cfg.per_layer_clip else ''}" if cfg.clip_norm
                else "norms measured, nothing clipped (--clip-norm 0)")
        report.section("Gradient norms before clipping", text, figures=[(histogram(
            finite, bins=40, title="gradient norm per step", xlabel="L2 norm", vlines=lines), "gradient norms")])
    return None


__all__ = ["training_report"]
