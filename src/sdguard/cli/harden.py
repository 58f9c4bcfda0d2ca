"""`sdguard erase`: concept erasure (ESD-x, ESD-u, ESD-all, UCE)."""

from __future__ import annotations

import warnings
from typing import List, Optional

import typer

from .main import app, done, err


@app.command()
def erase(
    model: str = typer.Argument(..., help="builtin:NAME, a diffusers folder, a .safetensors file or a hub id"),
    concept: List[str] = typer.Option(..., "--concept", help="a concept to erase (repeat for several)"),
    method: str = typer.Option(..., "--method", help="esd-x, esd-u, esd-all or uce"),
    preserve: List[str] = typer.Option([], "--preserve", help="a concept to keep (uce: preserve term; esd: retain term)"),
    anchor: Optional[str] = typer.Option(None, "--anchor", help="uce: what erased concepts map to (default: the empty prompt)"),
    eta: Optional[float] = typer.Option(None, "--eta", help="esd: negative guidance (paper: 1.0)"),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="esd: training iterations (paper: 1000)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="esd: learning rate (paper: 1e-5)"),
    start_guidance: Optional[float] = typer.Option(None, "--start-guidance", help="esd: guidance of the partial sampling (paper: 3)"),
    ddim_steps: Optional[int] = typer.Option(None, "--ddim-steps", help="esd: DDIM steps of the partial sampling (paper: 50)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="esd: latents per iteration (paper: 1)"),
    preserve_weight: Optional[float] = typer.Option(None, "--preserve-weight", help="esd: weight of the retain term on --preserve prompts (0: the paper's ESD)"),
    preserve_batch: Optional[int] = typer.Option(None, "--preserve-batch", help="esd: preserved prompts per iteration in the retain term (4)"),
    preserve_samples: Optional[int] = typer.Option(None, "--preserve-samples", help="esd: latents the frozen model draws per preserved prompt (2)"),
    lamb: Optional[float] = typer.Option(None, "--lamb", help="uce: weight of the old projection (paper code: 0.5)"),
    erase_scale: Optional[float] = typer.Option(None, "--erase-scale", help="uce: weight of the erased concepts (1)"),
    preserve_scale: Optional[float] = typer.Option(None, "--preserve-scale", help="uce: weight of the preserved ones"),
    expand: Optional[bool] = typer.Option(None, "--expand/--no-expand", help="uce: also erase the paper code's art templates"),
    expand_preserve: Optional[bool] = typer.Option(None, "--expand-preserve/--no-expand-preserve",
                                                   help="uce: also preserve the art templates of each --preserve prompt"),
    drop_conflicting: Optional[bool] = typer.Option(None, "--drop-conflicting/--keep-conflicting",
                                                    help="uce: leave out preserve prompts sharing a word with an erased concept (default)"),
    seed: int = typer.Option(0, help="seed of the random draws (esd) and of the preview images"),
    preview: int = typer.Option(4, help="preview images per concept before and after (0: none)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps (default: best available)"),
    out_dir: str = typer.Option(..., "--out", help="output folder: the erased model, its delta file, the report"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
    resume: bool = typer.Option(False, help="esd: continue an interrupted run from its checkpoint"),
) -> None:
    """Erase concepts from a model: ESD fine-tuning or the closed-form UCE edit."""
    from ..harden.erasure import erase as run

    given = dict(eta=eta, iterations=iterations, lr=lr, start_guidance=start_guidance, ddim_steps=ddim_steps,
                 batch_size=batch_size, preserve_weight=preserve_weight,
                 preserve_batch=preserve_batch, preserve_samples=preserve_samples, lamb=lamb, erase_scale=erase_scale,
                 preserve_scale=preserve_scale, expand=expand, expand_preserve=expand_preserve,
                 drop_conflicting=drop_conflicting)
    options = {k: v for k, v in given.items() if v is not None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run(model, concept, method, preserve, out=out_dir, anchor=anchor, overwrite=overwrite, resume=resume,
                     seed=seed, preview=preview, device=device, **options)
    for w in caught:
        if issubclass(w.category, UserWarning):
            err.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False, soft_wrap=True)
    done(report, out_dir)
