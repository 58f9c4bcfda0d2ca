"""`sdguard model ...`: the builtin tiny model's training recipe."""

from __future__ import annotations

import typer

model_app = typer.Typer(no_args_is_help=True, help="Models: train the builtin tiny model.")


@model_app.command("train-tiny")
def train_tiny(
    world: str = typer.Option(..., "--world", help="a world made by `sdguard data make-world`"),
    out_dir: str = typer.Option(..., "--out", help="output diffusers folder"),
    seed: int = typer.Option(0),
    vae_steps: int = typer.Option(400, "--vae-steps"),
    unet_steps: int = typer.Option(2400, "--unet-steps"),
    batch_size: int = typer.Option(64, "--batch-size"),
    vae_lr: float = typer.Option(2e-3, "--vae-lr"),
    unet_lr: float = typer.Option(1e-3, "--unet-lr", help="learning rate of the UNet and text encoder"),
    prediction_type: str = typer.Option("v_prediction", "--prediction-type", help="v_prediction or epsilon (SD 1)"),
    zero_terminal_snr: bool = typer.Option(True, help="rescale the schedule to zero terminal SNR (Lin et al. 2024)"),
    resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """Train a tiny Stable Diffusion (VAE, CLIP text encoder, UNet) on a world, on the CPU."""
    from ..train import train_tiny as run

    from .main import done

    report = run(world, out_dir, seed=seed, vae_steps=vae_steps, unet_steps=unet_steps, batch_size=batch_size,
                 vae_lr=vae_lr, unet_lr=unet_lr, prediction_type=prediction_type,
                 zero_terminal_snr=zero_terminal_snr, resume=resume, overwrite=overwrite)
    done(report, out_dir)
