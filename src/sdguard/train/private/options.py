"""The options of differentially private training (``sdguard train --dp``), declared once.

:class:`DPOptions` is a mixin of :class:`~sdguard.train.finetune.TrainConfig`; the checks that need
only the options themselves are here, the ones that need the data (``--delta`` against the number
of privacy units, a reachable ``--target-epsilon``) run in :mod:`.engine` before training starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ...core.config import RunConfig, option
from ...core.errors import InputError

DP_ONLY = ("target_epsilon", "noise_multiplier", "groups", "group_column")


class DPOptions(RunConfig):
    """DP-SGD (Abadi et al. 2016) with Opacus: per-unit clipping, Gaussian noise, an accountant."""

    dp: bool = option(False, help="train with differential privacy (DP-SGD through Opacus; --batch-size is then the "
                      "expected Poisson batch)")
    target_epsilon: float | None = option(None, gt=0, le=1e4, help="the epsilon to spend over --steps (the noise "
                                          "multiplier is solved for it)")
    noise_multiplier: float | None = option(None, gt=0, le=1e6, help="the Gaussian noise's std over --max-grad-norm "
                                            "(instead of --target-epsilon)")
    delta: float = option(1e-5, gt=0, lt=1, help="the delta of the (epsilon, delta) guarantee (below 1/units)")
    max_grad_norm: float = option(1.0, gt=0, le=1e6, help="the bound each privacy unit's gradient is clipped to")
    accountant: Literal["prv", "rdp", "gdp"] = option("prv", help="privacy accountant: prv (Opacus's default), rdp "
                                                      "or gdp")
    grad_sample_mode: Literal["hooks", "functorch", "ew", "ghost"] = option(
        "hooks", help="how Opacus gets per-sample gradients: hooks, functorch, ew (expanded weights) or ghost "
        "(ghost clipping: norms without per-sample gradients, image unit only)")
    privacy_unit: Literal["image", "group"] = option("image", help="what one DP record is: an image, or a group "
                                                     "(near-duplicate cluster or --group-column value)")
    groups: str | None = option(None, help="with --privacy-unit group: an `sdguard audit data` output folder whose "
                                "clusters are the groups (unclustered images are their own)")
    group_column: str | None = option(None, help="with --privacy-unit group: a metadata column whose value is the "
                                      "group (e.g. a user id)")

    @model_validator(mode="after")
    def _private(self):
        if not self.dp:
            for name in DP_ONLY:
                if getattr(self, name) is not None:
                    raise InputError.bad("--" + name.replace("_", "-"), getattr(self, name), "is used only with --dp")
            if self.privacy_unit != "image":
                raise InputError.bad("--privacy-unit", self.privacy_unit, "is used only with --dp")
            return self
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise InputError.bad("--dp", True, "needs exactly one of --target-epsilon E and --noise-multiplier S")
        if self.privacy_unit == "group":
            if (self.groups is None) == (self.group_column is None):
                raise InputError.bad("--privacy-unit", "group", "needs exactly one of --groups DIR (an `sdguard audit "
                                     "data` output) and --group-column COLUMN")
            if self.grad_sample_mode == "ghost":
                raise InputError.bad("--grad-sample-mode", "ghost", "clips per image; with --privacy-unit group a "
                                     "group's summed gradient is clipped, which needs hooks, functorch or ew")
        elif self.groups is not None or self.group_column is not None:
            flag = "--groups" if self.groups is not None else "--group-column"
            raise InputError.bad(flag, self.groups or self.group_column, "is used only with --privacy-unit group")
        return self


__all__ = ["DPOptions"]
