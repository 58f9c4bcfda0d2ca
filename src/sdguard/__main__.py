"""``python -m sdguard``: the command line (``accelerate launch -m sdguard train ...`` starts it so)."""

import sys

from .cli import main

sys.exit(main())
