"""Where the heavy per-image work runs: ``--backend local|ray`` (:mod:`.options`), joining a Ray
cluster and the actor pool (:mod:`.cluster`), generation (:mod:`.generation`) and dataset embedding
(:mod:`.embedding`) on Ray workers."""
