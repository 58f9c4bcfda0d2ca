"""Privacy accounting by name: Opacus's accountants, the noise for a target epsilon, epsilon spent.

``prv`` (Gopi et al. 2021, privacy random variables; Opacus's default), ``rdp`` (Mironov 2017;
Mironov, Talwar & Zhang 2019 for the subsampled Gaussian) and ``gdp`` (Dong, Roth & Su 2019,
Gaussian differential privacy; its central-limit approximation is loose for few steps). Each
accountant's history is Opacus's list of ``(noise_multiplier, sample_rate, steps)``, which is
JSON and goes into checkpoints and ``privacy.json`` as it is.
"""

from __future__ import annotations

import math
import warnings

from ...core.errors import InputError, require

ACCOUNTANTS = {"prv": "privacy random variables (Gopi et al. 2021)", "rdp": "Renyi DP (Mironov 2017)",
               "gdp": "Gaussian DP (Dong et al. 2019)"}


def make_accountant(name: str, history: list | None = None):
    """An Opacus accountant ``name`` holding ``history``."""
    require("opacus", "dp", "differentially private training")
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=name)
    acc.history = [tuple(h) for h in history or []]
    return acc


def epsilon_spent(name: str, history: list, delta: float) -> float:
    """The epsilon ``history`` spends at ``delta`` under accountant ``name`` (0 before any step)."""
    if not history:
        return 0.0
    with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha": a loose bound, not an error
        warnings.simplefilter("ignore")
        return float(make_accountant(name, history).get_epsilon(delta=delta))


def solve_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The smallest noise multiplier (Opacus's ``get_noise_multiplier``, tolerance 0.01) that keeps
    ``steps`` steps at ``sample_rate`` within (``target_epsilon``, ``delta``); a target no noise
    reaches is an :class:`InputError` naming ``--target-epsilon``."""
    require("opacus", "dp", "differentially private training")
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                         steps=steps, accountant=accountant)
    except (ValueError, RuntimeError, OverflowError, FloatingPointError) as exc:
        raise InputError.bad("--target-epsilon", target_epsilon, f"cannot be reached in {steps} steps at sampling "
                             f"rate {sample_rate:.4g} and delta {delta:g} with the {accountant} accountant, however "
                             f"large the noise ({exc}); raise it, or train fewer --steps or a smaller --batch-size") from None
    if not math.isfinite(sigma):
        raise InputError.bad("--target-epsilon", target_epsilon, f"gives no finite noise multiplier ({accountant})")
    return float(sigma)


__all__ = ["ACCOUNTANTS", "make_accountant", "epsilon_spent", "solve_noise"]
