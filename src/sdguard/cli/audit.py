"""`sdguard audit ...`: dataset, generation, memorization, membership, erasure and safety audits."""

from __future__ import annotations

from typing import List, Optional

import typer

from .build import add_command

audit_app = typer.Typer(no_args_is_help=True, help="Audit a dataset or a model.")


def _data(cfg, _extra, _cli) -> None:
    from ..audit.dataset_replication import audit_data
    from .main import done

    done(audit_data(cfg), cfg.out)


def _generations(cfg, _extra, _cli) -> None:
    from ..audit.generation_replication import audit_generations
    from .main import done

    done(audit_generations(cfg), cfg.out)


def _register() -> None:
    from ..audit.dataset_replication import DataAuditConfig
    from ..audit.generation_replication import GenerationAuditConfig

    add_command(audit_app, "data", DataAuditConfig, _data)
    add_command(audit_app, "generations", GenerationAuditConfig, _generations)


@audit_app.command("erasure")
def erasure(
    original: str = typer.Argument(..., help="the model before erasure (any model spec)"),
    erased: str = typer.Argument(..., help="the model after erasure (e.g. the folder `sdguard erase` wrote)"),
    concept: List[str] = typer.Option(..., "--concept", help="an erased concept (repeat for several)"),
    keep: List[str] = typer.Option([], "--keep", help="a concept that must stay (repeat for several)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="the world the models learned (default: the default world)"),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="I2P-format prompt file (prompt, evaluation_seed, evaluation_guidance) for nudity"),
    n: int = typer.Option(8, "--n", help="images per prompt"),
    prompts_per_concept: int = typer.Option(4, "--prompts-per-concept", help="world captions per concept (an I2P file: all its prompts)"),
    seed: int = typer.Option(0),
    steps: int = typer.Option(25, help="denoising steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale"),
    utility_prompts: int = typer.Option(16, "--utility-prompts", help="unrelated prompts for utility (0: none)"),
    attack: bool = typer.Option(True, "--attack/--no-attack", help="run the adversarial-prompt attack"),
    attack_steps: int = typer.Option(60, "--attack-steps"),
    attack_tokens: int = typer.Option(5, "--attack-tokens"),
    attack_lr: float = typer.Option(0.02, "--attack-lr"),
    attack_targets: int = typer.Option(8, "--attack-targets", help="images of the concept attacked per concept"),
    replication_threshold: float = typer.Option(0.6, "--replication-threshold", help="pixel cosine similarity to the nearest training image (a copy of the artwork) that counts as replication"),
    nudity_threshold: float = typer.Option(0.6, "--nudity-threshold", help="NudeNet score that counts"),
    fid: bool = typer.Option(False, "--fid", help="also FID (needs torchmetrics[image] or clean-fid and Inception weights)"),
    device: Optional[str] = typer.Option(None),
    out_dir: str = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """Before vs after an erasure: efficacy, retention, utility, robustness to an adversarial prompt."""
    from ..audit.erasure import audit_erasure

    from .main import done

    report = audit_erasure(original, erased, concept, keep, dataset=dataset, out=out_dir, prompts=prompts, n=n,
                           prompts_per_concept=prompts_per_concept, seed=seed, steps=steps, guidance=guidance,
                           utility_prompts=utility_prompts, attack=attack, attack_steps=attack_steps,
                           attack_tokens=attack_tokens, attack_lr=attack_lr, attack_targets=attack_targets,
                           replication_threshold=replication_threshold, nudity_threshold=nudity_threshold, fid=fid,
                           device=device, overwrite=overwrite)
    done(report, out_dir)


_register()
