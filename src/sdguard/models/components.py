"""Build Stable Diffusion components from configs, with no download.

A :class:`~transformers.CLIPTokenizer` with a word-level vocabulary made from a list of words
(every word one token, unknown words fall back to characters, so they still tokenize), and small
CLIP text encoder / AutoencoderKL / UNet2DConditionModel configs. The same builders serve the
tests (tiny random pipelines) and the builtin tiny model's training recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch

from ..data.captions import WORD_CHARS

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_BASE_CHARS = WORD_CHARS


def build_tokenizer(words: Iterable[str], max_length: int = 32):
    """A CLIP BPE tokenizer in which each of ``words`` (lower case) is a single token.

    The vocabulary holds the special tokens, every base character (alone and as a word end),
    and one merge chain per word, so ``"red"`` becomes the token ``red</w>`` while an unseen word
    is spelled in characters. This is the real CLIP tokenizer class, saved and loaded as usual.
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for tok in SPECIAL_TOKENS:
        add(tok)
    for ch in _BASE_CHARS:
        add(ch)
        add(ch + "</w>")
    merges: dict[tuple[str, str], None] = {}
    for word in sorted({w.lower() for w in words if w}):
        if any(ch not in _BASE_CHARS for ch in word):
            raise ValueError(f"word {word!r} has characters outside [a-z0-9'-]")
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merges.setdefault(pair)
            add(pair[0] + pair[1])
            pieces = [pair[0] + pair[1]] + pieces[2:]
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)


@dataclass
class TinyConfig:
    """Sizes of a tiny Stable Diffusion (defaults: a few hundred thousand parameters)."""

    image_size: int = 32
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    cross_attention_everywhere: bool = True
    prediction_type: str = "epsilon"
    #: rescale the schedule to zero terminal SNR and space inference steps from the end
    #: ("trailing"), as Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed") advise
    zero_terminal_snr: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def text_encoder_config(tokenizer, cfg: TinyConfig) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_hidden,
    )


def vae_config(cfg: TinyConfig) -> dict:
    n = len(cfg.vae_channels)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(cfg.vae_channels),
        latent_channels=cfg.latent_channels,
        layers_per_block=1,
        norm_num_groups=min(32, cfg.vae_channels[0]),
        sample_size=cfg.image_size,
    )


def unet_config(cfg: TinyConfig) -> dict:
    n = len(cfg.unet_channels)
    if cfg.cross_attention_everywhere:
        down = ["CrossAttnDownBlock2D"] * n
        up = ["CrossAttnUpBlock2D"] * n
    else:
        down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
        up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
    latent = cfg.image_size // 2 ** (len(cfg.vae_channels) - 1)
    return dict(
        sample_size=latent,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=list(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=min(32, cfg.unet_channels[0]),
    )


def scheduler_config(cfg: TinyConfig) -> dict:
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=cfg.prediction_type,
        rescale_betas_zero_snr=cfg.zero_terminal_snr,
        timestep_spacing="trailing" if cfg.zero_terminal_snr else "leading",
    )


def build_pipeline(tokenizer, cfg: TinyConfig | None = None, seed: int = 0):
    """A real ``StableDiffusionPipeline`` with freshly initialised tiny components.

    Initialisation is seeded, so the same ``seed`` gives the same weights.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = cfg or TinyConfig()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config(tokenizer, cfg)))
    vae = AutoencoderKL(**vae_config(cfg))
    unet = UNet2DConditionModel(**unet_config(cfg))
    scheduler = DDIMScheduler(**scheduler_config(cfg))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe


DEMO_WORDS = (
    "a an the of in on at by with and over under left right top bottom center "
    "red green blue yellow purple orange white black gray "
    "circle square triangle cross star painting photo style image of night sky"
).split()
