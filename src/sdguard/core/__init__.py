"""What every part of sdguard shares: the error contract, typed configs (the single source of
each option), atomic staged output, progress bars, the one :class:`Registry`, state files
(safetensors + JSON checkpoints) and the cache root."""
