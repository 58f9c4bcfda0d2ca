"""The settings of one ``sdguard audit erasure`` run."""

from __future__ import annotations

from pydantic import Field

from ...core.config import RunConfig


class AuditErasureConfig(RunConfig):
    cli_names = {"original": "ORIGINAL", "erased": "ERASED", "concepts": "--concept", "keep": "--keep",
                 "dataset": "--dataset", "prompts_file": "--prompts", "n": "--n"}

    original: str
    erased: str
    concepts: list[str] = Field(min_length=1)
    keep: list[str] = []
    dataset: str | None = None
    prompts_file: str | None = None
    n: int = Field(8, ge=1, le=10_000, description="images per prompt")
    prompts_per_concept: int = Field(4, ge=1, le=1000)
    seed: int = Field(0, ge=0)
    steps: int = Field(25, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0, le=100)
    batch_size: int = Field(16, ge=1, le=1024)
    utility_prompts: int = Field(16, ge=0, le=10_000)
    attack: bool = True
    attack_steps: int = Field(60, ge=1, le=100_000)
    attack_tokens: int = Field(5, ge=1, le=70)
    attack_lr: float = Field(0.02, gt=0, le=10)
    attack_targets: int = Field(8, ge=1, le=10_000)
    replication_threshold: float = Field(0.6, gt=-1, le=1)
    nudity_threshold: float = Field(0.6, gt=0, le=1)
    probe_images: int = Field(1500, ge=100, le=1_000_000, description="world images the probes are fitted on")
    fid: bool = False
    device: str | None = None
    out: str
