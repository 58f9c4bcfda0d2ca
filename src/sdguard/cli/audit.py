"""`sdguard audit ...`: dataset, generation, memorization, membership, erasure and safety audits."""

from __future__ import annotations

from typing import List, Optional

import typer

audit_app = typer.Typer(no_args_is_help=True, help="Audit a dataset or a model.")


def _options(pairs: list[str], argument: str) -> dict:
    """``KEY=VALUE`` strings to a dict (numbers and true/false converted)."""
    from ..core.errors import InputError

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError.bad(argument, pair, "is not KEY=VALUE")
        v: object = value
        if value.lower() in ("true", "false"):
            v = value.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    v = cast(value)
                    break
                except ValueError:
                    continue
        out[key.strip().replace("-", "_")] = v
    return out


@audit_app.command("data")
def data(
    dataset: str = typer.Argument(..., help="imagefolder (metadata.jsonl), webdataset .tar shard(s), parquet with "
                                  "image bytes, or a CSV/parquet of captions with image paths"),
    keyword: List[str] = typer.Option([], "--keyword", "-k", help="a word or phrase the captions must contain "
                                      "(repeat for several; none selects every entry)"),
    any_: bool = typer.Option(False, "--any", help="keep captions with any keyword (default: all of them)"),
    embedder: str = typer.Option("pixels", help="pixels, dct, clip[:MODEL_DIR_OR_ID] or sscd:TORCHSCRIPT_FILE"),
    threshold: Optional[float] = typer.Option(None, help="cosine similarity in (0, 1] linking two images "
                                              "(default: read from the similarity histogram)"),
    out_dir: str = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
    set_aside_largest: bool = typer.Option(False, "--set-aside-largest",
                                           help="report the largest cluster as a catch-all, outside the ranking"),
    fmt: Optional[str] = typer.Option(None, "--format", help="force the dataset format"),
    method: str = typer.Option("auto", help="similarity search: auto, exact or ivf"),
    max_tokens: int = typer.Option(77, "--max-tokens", help="drop captions longer than this many tokens"),
    tokenizer: Optional[str] = typer.Option(None, help="CLIP tokenizer folder for exact token counts"),
    embedder_option: List[str] = typer.Option([], "--embedder-option", help="KEY=VALUE passed to the embedder"),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="embedding cache folder"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the embedding cache"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the similarity search"),
) -> None:
    """Dataset replication audit: keyword filter, near-duplicate clusters, frequent words, co-occurrence."""
    from ..audit.dataset_replication import audit_data
    from .main import done

    options = _options(embedder_option, "--embedder-option")
    report = audit_data(dataset, keyword, any=any_, embedder=embedder, threshold=threshold, out=out_dir,
                        overwrite=overwrite, format=fmt, embedder_options=options,
                        set_aside_largest=set_aside_largest, max_tokens=max_tokens, tokenizer=tokenizer, method=method,
                        cache=not no_cache, cache_dir=cache_dir, threads=threads)
    done(report, out_dir)


@audit_app.command("erasure")
def erasure(
    original: str = typer.Argument(..., help="the model before erasure (any model spec)"),
    erased: str = typer.Argument(..., help="the model after erasure (e.g. the folder `sdguard erase` wrote)"),
    concept: List[str] = typer.Option(..., "--concept", help="an erased concept (repeat for several)"),
    keep: List[str] = typer.Option([], "--keep", help="a concept that must stay (repeat for several)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="the world the models learned (default: the default world)"),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="I2P-format prompt file (prompt, evaluation_seed, evaluation_guidance) for nudity"),
    n: int = typer.Option(8, "--n", help="images per prompt"),
    prompts_per_concept: int = typer.Option(4, "--prompts-per-concept", help="world captions per concept (an I2P file: all its prompts)"),
    seed: int = typer.Option(0),
    steps: int = typer.Option(25, help="denoising steps"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance scale"),
    utility_prompts: int = typer.Option(16, "--utility-prompts", help="unrelated prompts for utility (0: none)"),
    attack: bool = typer.Option(True, "--attack/--no-attack", help="run the adversarial-prompt attack"),
    attack_steps: int = typer.Option(60, "--attack-steps"),
    attack_tokens: int = typer.Option(5, "--attack-tokens"),
    attack_lr: float = typer.Option(0.02, "--attack-lr"),
    attack_targets: int = typer.Option(8, "--attack-targets", help="images of the concept attacked per concept"),
    replication_threshold: float = typer.Option(0.6, "--replication-threshold", help="pixel cosine similarity to the nearest training image (a copy of the artwork) that counts as replication"),
    nudity_threshold: float = typer.Option(0.6, "--nudity-threshold", help="NudeNet score that counts"),
    fid: bool = typer.Option(False, "--fid", help="also FID (needs torchmetrics[image] or clean-fid and Inception weights)"),
    device: Optional[str] = typer.Option(None),
    out_dir: str = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """Before vs after an erasure: efficacy, retention, utility, robustness to an adversarial prompt."""
    from ..audit.erasure import audit_erasure

    from .main import done

    report = audit_erasure(original, erased, concept, keep, dataset=dataset, out=out_dir, prompts=prompts, n=n,
                           prompts_per_concept=prompts_per_concept, seed=seed, steps=steps, guidance=guidance,
                           utility_prompts=utility_prompts, attack=attack, attack_steps=attack_steps,
                           attack_tokens=attack_tokens, attack_lr=attack_lr, attack_targets=attack_targets,
                           replication_threshold=replication_threshold, nudity_threshold=nudity_threshold, fid=fid,
                           device=device, overwrite=overwrite)
    done(report, out_dir)


@audit_app.command("generations")
def generations(
    model: str = typer.Argument(..., help="the model to audit (any model spec)"),
    dataset: str = typer.Option(..., "--dataset", help="its training data (any dataset format)"),
    clusters: Optional[str] = typer.Option(None, "--clusters", help="an `sdguard audit data` output folder"),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="a prompt file (one per line; KIND<TAB>PROMPT)"),
    n: int = typer.Option(500, "--n", help="generations per prompt (seeds seed..seed+n-1)"),
    seed: int = typer.Option(0),
    steps: int = typer.Option(25),
    guidance: float = typer.Option(7.5),
    batch_size: int = typer.Option(16, "--batch-size"),
    embedder: str = typer.Option("pixels", help="pixels, dct, clip[:MODEL] or sscd:FILE"),
    threshold: Optional[float] = typer.Option(None, help="replication threshold (default: calibrated per cluster)"),
    top_clusters: int = typer.Option(3, "--top-clusters", help="clusters to build prompt suites for"),
    controls: int = typer.Option(4, help="control prompts"),
    object_keyword: Optional[str] = typer.Option(None, "--object-keyword", help="e.g. astronaut"),
    object_name: Optional[str] = typer.Option(None, "--object", help="e.g. flag"),
    detector: Optional[str] = typer.Option(None, help="object detector: world or clip:MODEL"),
    clique_delta: Optional[float] = typer.Option(
        None, "--clique-delta", help="tiled l2 distance of near-identical generations (default: calibrated on "
        "reference prompts, at most Carlini et al.'s 0.15)"),
    reference_prompts: int = typer.Option(8, "--reference-prompts", help="ordinary captions generated to calibrate "
                                          "the clique distance (0: Carlini et al.'s 0.15)"),
    device: Optional[str] = typer.Option(None),
    out_dir: str = typer.Option(..., "--out", help="output folder"),
    resume: bool = typer.Option(False, help="continue an interrupted run"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """Generation replication audit: replication over many seeds per prompt kind, objects, cliques."""
    from ..audit.generation_replication import audit_generations
    from .main import done

    report = audit_generations(model, dataset, out=out_dir, clusters=clusters, prompts=prompts, n=n, seed=seed,
                               steps=steps, guidance=guidance, batch_size=batch_size, embedder=embedder,
                               threshold=threshold, top_clusters=top_clusters, controls=controls,
                               object_keyword=object_keyword, object_name=object_name, detector=detector,
                               clique_delta=clique_delta, reference_prompts=reference_prompts, device=device, resume=resume, overwrite=overwrite)
    done(report, out_dir)
