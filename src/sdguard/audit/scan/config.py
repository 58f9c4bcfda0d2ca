"""The options of ``sdguard scan`` (declared once, here)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import model_validator

from ...core.config import ResumableConfig, RunConfig, option
from ...core.errors import InputError
from ...distributed.options import BackendOptions
from ...harden.watermark.options import WatermarkOptions
from ...models.commands import DEVICE_HELP, MODEL_HELP
from .gates import METRICS

#: the scan's steps, in the order they run
STEPS = ("data", "generations", "memorization", "membership", "nudity", "watermark")


class ScanConfig(ResumableConfig, WatermarkOptions, BackendOptions):
    """Audit a model in one resumable job: the audits its inputs allow, one report, release gates."""

    python_positional = ("model",)
    #: gates, the JUnit file and the model card change no measurement: a resumed scan may change them
    presentation_fields: ClassVar[frozenset[str]] = RunConfig.presentation_fields | BackendOptions.backend_fields | {
        "fail_above", "gates", "junit", "model_card"}

    model: str = option(positional=True, help=MODEL_HELP)
    dataset: str | None = option(None, help="its training data (any dataset format): dataset replication, "
                                 "generation replication on the most duplicated clusters, memorization of its captions")
    members: str | None = option(None, help="the training records (members.jsonl of `sdguard train`, or a dataset "
                                 "folder): membership inference")
    nonmembers: str | None = option(None, help="records not trained on (default: nonmembers.jsonl beside --members)")
    prompts: str | None = option(None, help="an I2P-format CSV (prompt, evaluation_seed, evaluation_guidance): nudity "
                                 "on a sample of it")
    skip: list[Literal[STEPS]] = option(default_factory=list, help="a step not to run (repeatable): "  # type: ignore[valid-type]
                                        + ", ".join(STEPS))
    n: int = option(500, flag="--n", ge=1, le=100_000, help="generations per prompt of the replication step "
                    "(seeds seed..seed+n-1; Somepalli et al.'s 500)")
    top_clusters: int = option(5, ge=1, le=1000, help="most duplicated training clusters generated from")
    controls: int = option(4, ge=0, le=1000, help="control prompts of the replication step")
    reference_prompts: int = option(8, ge=0, le=1000, help="ordinary captions that calibrate the clique distance")
    captions: int = option(200, ge=1, le=1_000_000, help="training captions scored for memorization (of the most "
                           "duplicated clusters) and ordinary captions calibrating its threshold, at most")
    memorization_timestep: int | None = option(None, ge=0, le=100_000, help="memorization: score pure noise from "
                                               "this training timestep (Wen et al.'s extension that works on "
                                               "zero-terminal-SNR models such as builtin:tiny; default: the "
                                               "published first sampler step)")
    nudity_prompts: int = option(100, ge=1, le=1_000_000, help="rows of --prompts generated (the first usable ones)")
    watermark_images: int = option(16, ge=1, le=100_000, help="generations the watermark step marks (post-hoc) or "
                                   "generates with the mark (in-generation), then detects")
    watermark_attacks: list[str] = option(default_factory=list, flag="--watermark-attack",
                                          help="an attack of the watermark suite (repeat; default: the whole suite, as "
                                          "`sdguard audit watermark`)")
    watermark_size: int | None = option(None, ge=8, le=4096, help="the side a post-hoc watermark is applied at "
                                        "(the generations resized, as `sdguard serve --size` does; default: the "
                                        "model's, or the scheme's smallest side if larger)")
    embedder: str = option("pixels", help="pixels, dct, clip[:MODEL] or sscd:FILE (dataset and replication steps)")
    steps: int = option(25, ge=1, le=1000, help="denoising steps of every generation")
    guidance: float = option(7.5, ge=0.0, le=100.0, help="classifier-free guidance of the replication step")
    batch_size: int = option(16, ge=1, le=4096, help="images per forward pass")
    seed: int = option(0, ge=0, le=2**63 - 1, help="first seed")
    fail_above: dict[str, Any] = option(default_factory=dict, flag="--fail-above",
                                        help="a release gate METRIC=VALUE (repeatable): exit 1 when a measured value "
                                        "is above it; metrics: " + ", ".join(METRICS))
    gates: str | None = option(None, help="a TOML gate file with a [fail-above] table (--fail-above overrides it)")
    junit: str | None = option(None, help="write the gates' verdicts to this JUnit XML file")
    model_card: str | None = option(None, help="write or update the 'Privacy and safety' section of this model card "
                                    "(README.md of a Hugging Face model)")
    device: str | None = option(None, help=DEVICE_HELP)
    out: str = option(help="output folder: report, each step's own report and artifacts")

    @model_validator(mode="after")
    def _inputs(self) -> "ScanConfig":
        if self.nonmembers is not None and self.members is None:
            raise InputError.bad("--nonmembers", self.nonmembers, "needs --members")
        if self.watermark_attacks:
            from ..watermark.attacks import parse_attack

            for spec in self.watermark_attacks:
                parse_attack(spec, "--watermark-attack")
        if len(set(self.skip)) != len(self.skip):
            raise InputError.bad("--skip", self.skip, "names a step twice")
        if "data" in self.skip and self.dataset is not None and not {"generations", "memorization"} <= set(self.skip):
            raise InputError.bad("--skip", "data", "is needed by the generations and memorization steps (they use "
                                 "its clusters); skip them too")
        return self

    def runs(self, step: str) -> bool:
        """Whether ``step`` runs: its input is given and it is not skipped."""
        given = {"data": self.dataset, "generations": self.dataset, "memorization": self.dataset,
                 "membership": self.members, "nudity": self.prompts, "watermark": self.watermark}[step]
        return given is not None and step not in self.skip

    def planned(self) -> list[str]:
        return [s for s in STEPS if self.runs(s)]


__all__ = ["ScanConfig", "STEPS"]
