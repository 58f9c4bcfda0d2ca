"""The report of a ``sdguard federate`` run: rounds, clients' shares, client-level privacy, samples."""

from __future__ import annotations

import math

import numpy as np

from ...report import Report, auto_scale, make_grid, png_bytes
from ...report.plots import line_plot
from ..data import MEMBERS, NONMEMBERS

MECHANISMS = {"server": "central DP, clipping on the server (Flower's DifferentialPrivacyServerSideFixedClipping)",
              "client": "central DP, clipping on the clients (Flower's DifferentialPrivacyClientSideFixedClipping + "
                        "fixedclipping_mod)",
              "local": "local DP (Flower's LocalDpMod: each client clips and noises its own update)"}


def record_privacy_summary(server) -> dict | None:
    """``--dp``'s record-level guarantee, in ``privacy.json``'s keys: DP-SGD ran on every client on
    its own records, so a record (or group) is protected by its own client's epsilon; the figure is
    the largest client's (None without ``--dp``)."""
    cfg = server.cfg
    if not cfg.dp:
        return None
    rows = [r for r in server.rounds if r.get("record_dp")]
    if not rows:
        return None
    last = rows[-1]["record_dp"]
    worst = max(last, key=lambda node: last[node][0])
    curve = [[r["round"], r["record_epsilon"]] for r in rows]
    eps, noise, q = last[worst]
    return {"epsilon": eps, "delta": cfg.delta, "accountant": cfg.accountant, "noise_multiplier": noise,
            "sample_rate": q, "steps": rows[-1]["round"] * cfg.local_steps, "unit": cfg.privacy_unit,
            "units": sum(c["records"] for c in server.clients), "max_grad_norm": cfg.max_grad_norm,
            "target_epsilon": cfg.target_epsilon, "epsilon_curve": curve, "secure_mode": False,
            "source": "record-level DP-SGD (Opacus) on each client; the largest client epsilon, node " + worst,
            "clients": {node: {"epsilon": v[0], "noise_multiplier": v[1], "sample_rate": v[2]}
                        for node, v in last.items()}}


def privacy_summary(server) -> dict | None:
    """The guarantee ``privacy.json`` records: client-level under ``--client-dp`` (with the
    record-level one under ``record_level`` when ``--dp`` ran too), else ``--dp``'s record-level
    one, else None."""
    from .server import central_noise, local_noise

    cfg = server.cfg
    record = record_privacy_summary(server)
    if cfg.client_dp == "off":
        return record
    curve = [[r["round"], r["epsilon"]] for r in server.rounds if r.get("epsilon") is not None]
    released = sum(1 for r in server.rounds if r["aggregated"])
    sigma = central_noise(cfg) if cfg.client_dp != "local" else local_noise(cfg)
    return {"epsilon": curve[-1][1] if curve else 0.0, "delta": cfg.delta, "accountant": cfg.accountant,
            "noise_multiplier": sigma, "sample_rate": 1.0, "steps": released,
            "unit": "client" if cfg.client_dp != "local" else "client (local DP, per client)",
            "units": len(server.clients), "max_grad_norm": cfg.update_clip, "target_epsilon": cfg.client_epsilon,
            "source": MECHANISMS[cfg.client_dp], "epsilon_curve": curve, "secure_mode": False,
            **({"record_level": record} if record is not None else {})}


def federated_report(server, trained, samples_after, privacy: dict | None) -> Report:
    cfg, rounds = server.cfg, server.rounds
    report = Report("federate", cfg)
    report.models["base"] = {"spec": cfg.model, "fingerprint": server.base_fingerprint}
    report.add_model("trained", trained)
    client = privacy if cfg.client_dp != "off" else None
    record = (privacy or {}).get("record_level", privacy) if cfg.dp else None
    members = sum(c["records"] for c in server.clients)
    shares = [{"client": c["partition"], "node": c["node"], "records": c["records"],
               "share": round(c["records"] / members, 4) if members else 0.0,
               "holdout": c["holdout"], "skipped": c["skipped"].get("total", 0)} for c in server.clients]
    if cfg.partition != "iid" and cfg.share_manifests:
        from ...data.captions import KeywordFilter

        kind, arg = cfg.partition_scheme()
        if kind == "keyword":
            f = KeywordFilter((arg,))
            for row, c in zip(shares, server.clients):
                row["key_records"] = sum(f.matches(r["text"]) for r in c["members"])
    released = [r for r in rounds if r["aggregated"]]
    t = server.trainable.describe()
    report.results = {
        "clients": len(server.clients), "rounds": len(rounds), "rounds_aggregated": len(released),
        "local_steps": cfg.local_steps, "local_batch": cfg.batch_size, "strategy": cfg.strategy,
        "proximal_mu": cfg.proximal_mu if cfg.strategy == "fedprox" else None, "partition": cfg.partition,
        "shares": shares, "members": members, "nonmembers": sum(c["holdout"] for c in server.clients),
        "manifests_shared": cfg.share_manifests,
        "trainable": t, "client_dp": cfg.client_dp, "secagg": {"shares": cfg.secagg_shares, "threshold":
                                                               cfg.secagg_threshold} if cfg.secagg else None,
        "privacy": privacy, "round_log": rounds,
        "record_privacy": record,
        "train_loss_last": released[-1]["train_loss"] if released else None,
        "eval_loss_initial": server.initial_loss,
        "eval_loss_first": next((r.get("eval_loss") for r in rounds if r.get("eval_loss") is not None), None),
        "eval_loss_last": next((r.get("eval_loss") for r in reversed(rounds) if r.get("eval_loss") is not None), None),
        "failures": [{"round": r["round"], **f} for r in rounds for f in r["failed"]],
    }
    report.artifacts = (["pytorch_lora_weights.safetensors", "lora.json"] if "lora" in cfg.trainable else
                        ["model_index.json", "unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/"]) + \
        ([MEMBERS, NONMEMBERS] if cfg.share_manifests else []) + ["rounds.jsonl"] + (["privacy.json"] if privacy is not None else [])
    report.section("Clients", f"{len(shares)} clients, partition {cfg.partition}", table=shares)
    table = [{"round": r["round"], "sampled": r["sampled"], "replies": r["replies"],
              "failed": "; ".join(f"node {f['node']}: {f['reason']}" for f in r["failed"]) or "-",
              "updated": r["aggregated"], "train loss": _round(r["train_loss"]), "global loss": _round(r.get("eval_loss")),
              "median update norm": _round(r.get("update_norm_median")), "epsilon": _round(r.get("epsilon")),
              **({"record epsilon (largest client)": _round(r.get("record_epsilon"))} if cfg.dp else {})}
             for r in rounds]
    report.section("Rounds", f"{len(released)} of {len(rounds)} rounds updated the global model", table=table)
    series = {"clients' training loss": ([r["round"] for r in released], [r["train_loss"] for r in released])}
    evals = [r for r in rounds if r.get("eval_loss") is not None]
    if evals:
        start = [(0, server.initial_loss)] if server.initial_loss is not None else []
        series["global model's loss (fixed draws)"] = ([r for r, _ in start] + [r["round"] for r in evals],
                                                       [v for _, v in start] + [r["eval_loss"] for r in evals])
    if released:
        report.section("Loss per round", "", figures=[(line_plot(series, title="loss per round", xlabel="round",
                                                                 ylabel="MSE"), "loss per round")])
    _privacy_sections(report, cfg, client, record)
    if samples_after is not None:
        scale = auto_scale(samples_after.images.shape[1])
        both = np.concatenate([server.samples_before.images, samples_after.images])
        report.section("Samples of training captions, before and after (seed 0)", "top: the base model; bottom: the "
                       "global model. " + "; ".join(server.sample_prompts),
                       figures=[(png_bytes(make_grid(both, len(server.sample_prompts), scale)), "before / after")])
    report.summary = [f"{len(shares)} clients, {len(released)}/{len(rounds)} rounds aggregated ({cfg.strategy}, "
                      f"{cfg.partition}), {t['parameters']:,} parameters ({', '.join(t['groups'])})"]
    if report.results["eval_loss_last"] is not None:
        first, when = ((server.initial_loss, "before training") if server.initial_loss is not None else
                       (report.results["eval_loss_first"], "after round 1"))
        report.summary.append(f"global loss {first:.4f} ({when}) -> {report.results['eval_loss_last']:.4f}")
    if client is not None:
        report.summary.append(f"client-level DP: epsilon {client['epsilon']:.3g} at delta {cfg.delta:g} ({cfg.client_dp})")
    if record is not None:
        report.summary.append(f"record-level DP-SGD on each client: epsilon {record['epsilon']:.3g} at delta "
                              f"{cfg.delta:g} (the largest client's, unit {cfg.privacy_unit})")
    if not cfg.share_manifests:
        report.summary.append("the clients kept their manifests (--no-share-manifests): no members.jsonl")
    if report.results["failures"]:
        report.summary.append(f"{len(report.results['failures'])} client failure(s): see Rounds")
    return report


def _privacy_sections(report, cfg, client: dict | None, record: dict | None) -> None:
    """The client-level and the record-level guarantee, each with its epsilon per round."""
    def curve_figure(curve, title):
        return [(line_plot({"epsilon": ([c[0] for c in curve], [c[1] for c in curve])}, title=title,
                           xlabel="round", ylabel="epsilon"), title)] if curve else []

    if client is not None:
        report.section("Client-level differential privacy", f"({client['epsilon']:.3g}, {cfg.delta:g})-DP per client "
                       f"({client['source']}; {cfg.accountant} accountant, noise multiplier "
                       f"{client['noise_multiplier']:.4g}, update clip {cfg.update_clip:g}, no sampling amplification)",
                       figures=curve_figure(client["epsilon_curve"], "client-level epsilon per round"))
    if record is not None:
        rows = [{"node": node, "epsilon": _round(v["epsilon"]), "noise multiplier": _round(v["noise_multiplier"]),
                 "sampling rate": _round(v["sample_rate"])} for node, v in record["clients"].items()]
        report.section("Record-level differential privacy (DP-SGD on each client)",
                       f"each client ran DP-SGD (Opacus) on its own {cfg.privacy_unit}s over its steps: a "
                       f"{cfg.privacy_unit} is ({record['epsilon']:.3g}, {cfg.delta:g})-DP at worst (its client's "
                       f"epsilon; the largest is shown); a round a client was not sampled in counts as run",
                       table=rows, figures=curve_figure(record["epsilon_curve"], "record-level epsilon per round"))


def _round(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(float(v), 5)


__all__ = ["federated_report", "privacy_summary"]
