"""The command ``audit_membership``: read and check the split, run the distribution check and the
attacks, choose every setting and threshold on the calibration half, report the evaluation half."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...core.config import OutputConfig, build, option, output_for
from ...core.errors import InputError
from ...models.commands import MODEL_HELP
from ...report import Report
from ..stats import detection_summary, roc_auc, threshold_at_fpr, wilson_interval
from .attacks import MIA_ATTACKS, MIAttack
from .attacks.loss import DEFAULT_TIMESTEPS
from .blind import split_check
from .groups import CLEAN, COPY, DUPLICATED, SINGLE, Groups, duplicate_groups
from .split import (
    MIN_RECORDS,
    RecordSet,
    calibration_split,
    check_disjoint,
    identical_pairs,
    read_records,
)

#: the false-positive rate the calibrated threshold is set at
CALIBRATION_FPR = 0.01


class MembershipConfig(OutputConfig):
    """Membership inference on a model: members vs non-members, with a distribution check first."""

    python_positional = ("model", "members", "nonmembers")

    model: str = option(positional=True, help=MODEL_HELP)
    members: str = option(help="the training records: a members.jsonl of `sdguard train` or a dataset folder")
    nonmembers: str = option(help="records not trained on: a nonmembers.jsonl (the --holdout of `sdguard train`) "
                             "or a dataset folder")
    dataset: str | None = option(None, help="the dataset the manifests name (default: the config.dataset of the "
                                 "report.json beside each manifest)")
    attacks: list[str] = option(["loss", "secmi", "pia"], flag="--attack", min_length=1,
                                help="loss, secmi or pia (repeat for several)")
    loss_timesteps: list[int] = option(list(DEFAULT_TIMESTEPS), min_length=1, flag="--loss-timestep",
                                       help="timesteps the loss attack scores; the best one on the calibration "
                                       "half is used (repeat for several)")
    loss_draws: int = option(2, ge=1, le=1000, help="noise draws per record and timestep of the loss attack")
    secmi_t: int = option(140, ge=1, le=10_000, help="SecMI's t (the Stable Diffusion setting of SecMI-LDM: 140)")
    secmi_interval: int = option(10, ge=1, le=1000, help="SecMI's DDIM interval k")
    pia_t: int = option(200, ge=1, le=10_000, help="PIA's attack timestep")
    pia_p: float = option(4.0, gt=0, le=16, help="PIA's norm exponent")
    embedder: str = option("pixels", help="embedder that finds duplicated members: pixels, dct, clip[:MODEL], "
                           "sscd:FILE")
    duplicate_threshold: float | None = option(None, gt=0, le=1, help="cosine similarity of near-duplicates "
                                               "(default: read from the similarity histogram, else the "
                                               "embedder's default)")
    batch_size: int = option(32, ge=1, le=65_536, help="records per UNet batch")
    bootstrap: int = option(1000, ge=10, le=100_000, help="bootstrap rounds of every interval")
    seed: int = option(0, ge=0, le=2**63 - 1, help="seed of the calibration split, the noise and the bootstrap")
    device: str | None = option(None, help="cpu, cuda, mps (default: best available)")

    def make_attacks(self) -> list[MIAttack]:
        """The attacks asked for, built with their options (an unknown name is an InputError)."""
        options: dict[str, dict] = {
            "loss": {"timesteps": self.loss_timesteps, "draws": self.loss_draws},
            "secmi": {"t": self.secmi_t, "interval": self.secmi_interval},
            "pia": {"t": self.pia_t, "p": self.pia_p},
        }
        out = []
        for name in dict.fromkeys(self.attacks):
            out.append(MIA_ATTACKS.get(name)(**options.get(name, {})))
        return out


@dataclass
class Records:
    """Members then non-members, read at the model's size: images, captions, labels, groups."""

    images: np.ndarray  # uint8 N x H x W x 3 (the preprocessed images; a quarter of their float size)
    texts: list[str]
    labels: np.ndarray  # True: member
    groups: np.ndarray  # DUPLICATED / SINGLE for members, COPY / CLEAN for non-members
    calibration: np.ndarray  # True: in the calibration half
    skipped: dict
    identical: int
    group_info: dict


def audit_membership(*args: Any, progress: bool | None = None, **values: Any) -> Report:
    """Membership inference on ``model`` (``audit_membership(model, members, nonmembers, out=...)`` or
    ``audit_membership(MembershipConfig(...))``): the blind distribution check, then each attack's
    AUC and TPR at 1% and 0.1% FPR with bootstrap intervals on the evaluation half, per group
    (duplicated and single-copy members). See :mod:`sdguard.audit.membership`."""
    cfg = build(MembershipConfig, args, values)
    attacks = cfg.make_attacks()
    members = read_records("--members", cfg.members, cfg.dataset)
    nonmembers = read_records("--nonmembers", cfg.nonmembers, cfg.dataset)
    check_disjoint(members, nonmembers)
    report = Report("audit membership", cfg)
    with output_for(cfg, "audit membership", "model", "members", "nonmembers", "dataset") as stage:
        from ...models import DiffusionModel
        from .sections import write_sections

        with report.timer("load"):
            model = DiffusionModel.load(cfg.model, device=cfg.device)
        report.add_model("model", model)
        check_timesteps(cfg, model)
        with report.timer("read"):
            records = read_split(members, nonmembers, model.default_size, cfg)
        with report.timer("split_check"):
            check = split_check(records.images, records.texts, records.labels, cfg.seed, cfg.bootstrap)
        results: dict[str, Any] = {"members": members.describe(), "nonmembers": nonmembers.describe(),
                                   "split": split_summary(records), "split_check": check, "attacks": {}}
        with report.timer("encode"):
            latents, states = encode(model, records, cfg.batch_size)
        scored = {}
        for attack in attacks:
            with report.timer(attack.name):
                scored[attack.name] = run_attack(model, attack, latents, states, records, cfg)
        results["attacks"] = {k: v["result"] for k, v in scored.items()}
        results["groups"] = {**records.group_info, "by_attack": {k: v["groups"] for k, v in scored.items()}}
        write_sections(report, results, {k: v["scores"] for k, v in scored.items()}, records)
        report.write(stage)
    return report


def check_timesteps(cfg: MembershipConfig, model) -> None:
    """Every timestep an attack asks for lies inside the model's training schedule."""
    limit = model.num_train_timesteps
    asked = [("--loss-timestep", t) for t in cfg.loss_timesteps if "loss" in cfg.attacks]
    asked += [("--pia-t", cfg.pia_t)] if "pia" in cfg.attacks else []
    for argument, t in asked:
        if not 0 <= t < limit:
            raise InputError.bad(argument, t, f"is outside the model's {limit} training timesteps")
    if "secmi" in cfg.attacks and cfg.secmi_t + cfg.secmi_interval >= limit:
        raise InputError.bad("--secmi-t", cfg.secmi_t, f"plus --secmi-interval ({cfg.secmi_interval}) reaches past "
                             f"the model's {limit} training timesteps")


def read_split(members: RecordSet, nonmembers: RecordSet, size: int, cfg: MembershipConfig) -> Records:
    """Read both sets at ``size`` (unreadable images skipped and counted), find the groups and draw
    the calibration half."""
    from ...train.data import readable

    pix, texts, skipped = [], [], {}
    counts = []
    for rs in (members, nonmembers):
        got: list[np.ndarray] = []  # uint8 as each image arrives (the float tensors are 4x larger)
        ok, skip = readable(rs.dataset, rs.entries, size,
                            lambda _p, t: got.append(((t.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
                                                     .to(torch.uint8).numpy()),
                            purpose=f"to score ({rs.argument} {rs.source})")
        pix += got
        texts += [rs.entries.texts[i] for i in ok]
        skipped[rs.argument.lstrip("-")] = skip.to_dict()
        counts.append(len(ok))
    for rs, n in zip((members, nonmembers), counts):
        if n < MIN_RECORDS:
            raise InputError.bad(rs.argument, rs.source, f"has {n} readable record(s); the calibration and "
                                 f"evaluation halves need at least {MIN_RECORDS}")
    images = np.stack(pix)
    n_m = counts[0]
    same = identical_pairs(images[:n_m], texts[:n_m], images[n_m:], texts[n_m:])
    groups: Groups = duplicate_groups(images[:n_m], images[n_m:], cfg.embedder, cfg.duplicate_threshold, cfg.seed,
                                      identical=same)
    labels = np.r_[np.ones(n_m, bool), np.zeros(counts[1], bool)]
    group = np.r_[groups.members, groups.nonmembers]
    calib = calibration_split(labels, group, cfg.seed)
    return Records(images, texts, labels, group, calib, skipped, int(same.sum()), groups.describe())


def split_summary(records: Records) -> dict:
    y, c = records.labels, records.calibration
    return {"calibration": {"members": int((y & c).sum()), "nonmembers": int((~y & c).sum())},
            "evaluation": {"members": int((y & ~c).sum()), "nonmembers": int((~y & ~c).sum())},
            "skipped": records.skipped, "identical_to_a_member": records.identical,
            "rule": "members and non-members each halved at random (seeded), per group; settings and thresholds "
                    "are chosen on the calibration half, every reported figure is on the evaluation half"}


@torch.no_grad()
def encode(model, records: Records, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior means (scaled) and text-encoder states of the records' captions, on the CPU."""
    lat, states = [], []
    for i in range(0, len(records.texts), batch_size):
        pixels = torch.from_numpy(records.images[i:i + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1
        lat.append(model.encode_images(pixels).float().cpu())
        states.append(model.encode_text(model.tokenize(records.texts[i:i + batch_size])).cpu())
    return torch.cat(lat), torch.cat(states)


def run_attack(model, attack: MIAttack, latents: torch.Tensor, states: torch.Tensor, records: Records,
               cfg: MembershipConfig) -> dict:
    """Score every record, choose the candidate setting on the calibration half, report the evaluation half."""
    t0 = time.perf_counter()
    parts = []
    for i in range(0, len(latents), cfg.batch_size):
        seeds = [cfg.seed * 1_000_003 + j for j in range(i, min(len(latents), i + cfg.batch_size))]
        parts.append(attack.score(model, latents[i:i + cfg.batch_size].to(model.device),
                                  states[i:i + cfg.batch_size].to(model.device), seeds).float())
    seconds = time.perf_counter() - t0
    all_scores = torch.cat(parts).numpy().astype(np.float64)
    y, c = records.labels, records.calibration
    calib_auc = {label: roc_auc(all_scores[c, j], y[c]) for j, label in enumerate(attack.candidates)}
    best = int(np.argmax(list(calib_auc.values())))
    scores = all_scores[:, best]
    ev = detection_summary(scores[~c], y[~c], rounds=cfg.bootstrap, seed=cfg.seed)
    thr = threshold_at_fpr(scores[c & ~y], CALIBRATION_FPR)
    flagged = scores >= thr
    result = {**attack.describe(), "chosen": attack.candidates[best], "calibration_auc": calib_auc,
              **{k: v for k, v in ev.items()},
              "calibrated_threshold": {"target_fpr": CALIBRATION_FPR, "threshold": thr,
                                       "evaluation_tpr": float(flagged[~c & y].mean()),
                                       "evaluation_fpr": float(flagged[~c & ~y].mean())},
              "seconds": round(seconds, 3), "seconds_per_record": seconds / len(latents)}
    return {"result": result, "scores": scores, "groups": group_rows(scores, flagged, records, cfg)}


def group_rows(scores: np.ndarray, flagged: np.ndarray, records: Records, cfg: MembershipConfig) -> dict:
    """On the evaluation half: duplicated and single-copy members each against the clean
    non-members; the non-members that copy a member as their own row (how many are flagged)."""
    ev, g, y = ~records.calibration, records.groups, records.labels
    clean = ev & ~y & (g == CLEAN)
    out: dict[str, Any] = {}
    for name in (DUPLICATED, SINGLE):
        pos = ev & y & (g == name)
        if not pos.any() or not clean.any():
            out[name] = {"members": int(pos.sum()), "nonmembers": int(clean.sum()),
                         "skipped": "needs members of the group and clean non-members in the evaluation half"}
            continue
        sel = pos | clean
        summary = detection_summary(scores[sel], y[sel], rounds=cfg.bootstrap, seed=cfg.seed)
        summary.pop("roc")
        out[name] = {"members": int(pos.sum()), "nonmembers": int(clean.sum()), **summary}
    copies = ev & ~y & (g == COPY)
    k = int(flagged[copies].sum())
    out[COPY] = {"nonmembers": int(copies.sum()), "flagged": k,
                 "flagged_share": k / int(copies.sum()) if copies.any() else None,
                 "flagged_share_ci": wilson_interval(k, int(copies.sum())) if copies.any() else None}
    return out


__all__ = ["CALIBRATION_FPR", "MembershipConfig", "audit_membership", "read_split", "run_attack", "group_rows"]
