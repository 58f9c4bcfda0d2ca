"""Membership-inference attacks (:data:`MIA_ATTACKS`): loss threshold, SecMI_stat, PIA."""

from .base import MIA_ATTACKS, MIAttack, epsilon, record_noise

__all__ = ["MIA_ATTACKS", "MIAttack", "epsilon", "record_noise"]
