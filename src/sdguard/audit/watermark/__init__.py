"""The watermark audit (issue 20, in progress): the robustness suite's attacks (:mod:`.attacks`)
and image-quality metrics (:mod:`.metrics`)."""
