"""`sdguard audit ...`: dataset, generation, memorization, membership, erasure and safety audits."""

from __future__ import annotations

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


def _erasure(cfg, _extra, _cli) -> None:
    from ..audit.erasure import audit_erasure
    from .main import done

    done(audit_erasure(cfg), cfg.out)


def _memorization(cfg, _extra, _cli) -> None:
    from ..audit.memorization import audit_memorization
    from .main import done

    done(audit_memorization(cfg), cfg.out)


def _membership(cfg, _extra, _cli) -> None:
    from ..audit.membership import audit_membership
    from .main import done

    done(audit_membership(cfg), cfg.out)


def _watermark(cfg, _extra, _cli) -> None:
    from ..audit.watermark import audit_watermark
    from .main import done

    done(audit_watermark(cfg), cfg.out)


def _register() -> None:
    from ..audit.dataset_replication import DataAuditConfig
    from ..audit.erasure import AuditErasureConfig
    from ..audit.generation_replication import GenerationAuditConfig
    from ..audit.membership import MembershipConfig
    from ..audit.memorization import MemorizationConfig
    from ..audit.watermark import AuditWatermarkConfig

    add_command(audit_app, "data", DataAuditConfig, _data)
    add_command(audit_app, "erasure", AuditErasureConfig, _erasure)
    add_command(audit_app, "generations", GenerationAuditConfig, _generations)
    add_command(audit_app, "memorization", MemorizationConfig, _memorization)
    add_command(audit_app, "membership", MembershipConfig, _membership)
    add_command(audit_app, "watermark", AuditWatermarkConfig, _watermark)


_register()
