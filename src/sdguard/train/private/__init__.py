"""Differentially private fine-tuning (``sdguard train --dp``): DP-SGD through Opacus.

- :mod:`.options`: the ``--dp`` options (a mixin of :class:`~sdguard.train.finetune.TrainConfig`);
- :mod:`.accounting`: the accountants by name, the noise for a target epsilon;
- :mod:`.sampling`: Poisson sampling of privacy units, seeded per step;
- :mod:`.units`: the privacy unit (an image, or a group of near-duplicates / of one column value);
- :mod:`.engine`: ``PrivacyEngine.make_private`` and ``BatchMemoryManager`` over the training loop;
- :mod:`.record`: ``privacy.json`` next to the weights, and the report's part.
"""

from .accounting import ACCOUNTANTS, epsilon_spent, solve_noise
from .record import PRIVACY_FILE, read_privacy

__all__ = ["ACCOUNTANTS", "epsilon_spent", "solve_noise", "PRIVACY_FILE", "read_privacy"]
