"""``sdguard audit membership``: membership inference with a distribution check first.

Given a model and its members and non-members (the ``members.jsonl`` / ``nonmembers.jsonl`` that
``sdguard train --holdout`` writes, or dataset folders), it

1. runs a model-free **blind attack** (:mod:`.blind`): if a classifier on the images and captions
   alone separates the two sets, the split is shifted and the report says that the MIA AUCs are not
   evidence of membership (Das et al. 2024; CopyMark);
2. scores every record with each **attack** (:mod:`.attacks`: the loss threshold of Matsumoto et
   al. 2023 at the best timestep, SecMI_stat of Duan et al. 2023, PIA of Kong et al. 2024), on the
   VAE posterior mean of the record's image conditioned on its caption;
3. splits members and non-members into a seeded **calibration** half, where the loss attack's
   timestep and every threshold are chosen, and an **evaluation** half, where ROC, AUC and TPR at
   1% and 0.1% FPR with bootstrap intervals are reported (:mod:`sdguard.audit.stats`);
4. reports **duplicated** and **single-copy** members separately (:mod:`.groups`).

Modules: :mod:`.split` (reading and checking the inputs, the calibration split), :mod:`.groups`,
:mod:`.blind`, :mod:`.attacks`, :mod:`.command` (:class:`MembershipConfig`,
:func:`audit_membership`), :mod:`.sections` (the report).
"""

from .attacks import MIA_ATTACKS
from .blind import split_check
from .command import MembershipConfig, audit_membership

__all__ = ["MIA_ATTACKS", "MembershipConfig", "audit_membership", "split_check"]
