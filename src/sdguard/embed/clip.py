"""CLIP image embeddings (Radford et al. 2021) through ``transformers``' ``CLIPModel``.

The image features are the projected pooled output of the vision tower, the embedding Somepalli
et al. 2023 and Webster 2023 compare images with. The model is a local folder saved with
``save_pretrained`` or a hub id (loaded where the hub is reachable); a folder holding only the
vision tower (``CLIPVisionModelWithProjection``) works too. Preprocessing follows CLIP: resize
the short side (bicubic), centre crop, normalize with the mean and std of the folder's
``preprocessor_config.json`` (OpenAI's values without one). On a GPU the model runs in fp16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.images import resize
from .base import BaseEmbedder, as_rgb

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def _device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class CLIPEmbedder(BaseEmbedder):
    """``CLIPModel`` image features; ``model`` is a folder or a hub id."""

    name = "clip"
    # CLIP ViT near-duplicate pairs (re-encodings, resizes, small crops) score above ~0.95
    default_threshold = 0.95

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 64,
                 fp16: bool | None = None):
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        self.model_name, self.batch_size = str(model), int(batch_size)
        self.device = _device(device)
        self.fp16 = self.device.startswith("cuda") if fp16 is None else bool(fp16)
        dtype = torch.float16 if self.fp16 else torch.float32
        try:
            config = transformers.AutoConfig.from_pretrained(self.model_name)
            if getattr(config, "model_type", "") == "clip_vision_model":
                net = transformers.CLIPVisionModelWithProjection.from_pretrained(self.model_name, dtype=dtype)
                self._vision_only = True
                vision_config = config
            else:
                net = transformers.CLIPModel.from_pretrained(self.model_name, dtype=dtype)
                self._vision_only = False
                vision_config = config.vision_config
        except (OSError, ValueError) as exc:
            hint = ("" if Path(self.model_name).exists() else
                    "; where the hub is unreachable, download it elsewhere (huggingface-cli download "
                    f"{self.model_name} --local-dir DIR) and pass the folder as --embedder clip:DIR")
            raise InputError.bad("--embedder clip model", self.model_name, f"could not be loaded ({exc}){hint}") from None
        self._net = net.to(self.device).eval()
        self.image_size = int(vision_config.image_size)
        self.dim = int(getattr(config, "projection_dim", None) or vision_config.projection_dim)
        self.mean, self.std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        crop = self.image_size
        prep = Path(self.model_name) / "preprocessor_config.json"
        if prep.is_file():
            p = json.loads(prep.read_text())
            self.mean = tuple(p.get("image_mean", self.mean))
            self.std = tuple(p.get("image_std", self.std))
            cs = p.get("crop_size", crop)
            crop = int(cs.get("height", crop)) if isinstance(cs, dict) else int(cs)
        self.crop = crop

    def config(self) -> dict:
        path = Path(self.model_name)
        ident = self.model_name
        if path.exists():  # a folder: identify its weights by size and time
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
            ident = [str(path.resolve())] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
        return {"name": self.name, "model": ident, "crop": self.crop, "fp16": self.fp16, "version": 1}

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        a = as_rgb(image)
        h, w = a.shape[:2]
        scale = self.crop / min(w, h)
        a = resize(a, (max(self.crop, round(w * scale)), max(self.crop, round(h * scale))), resample="bicubic")
        h, w = a.shape[:2]
        left, top = (w - self.crop) // 2, (h - self.crop) // 2
        x = a[top:top + self.crop, left:left + self.crop].astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x.transpose(2, 0, 1)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Unit-norm text features (the projected pooled output of the text tower) of ``texts``,
        comparable with :meth:`embed`'s image features (zero-shot classification, CLIP Sec. 3.1.2).
        Needs a full ``CLIPModel`` folder with its tokenizer."""
        import torch
        import transformers

        from .base import l2_normalize

        if self._vision_only:
            raise InputError.bad("clip model", self.model_name, "holds only the vision tower; text features need a "
                                 "full CLIPModel (vision and text towers) with its tokenizer")
        if getattr(self, "_tokenizer", None) is None:
            try:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name)
            except (OSError, ValueError) as exc:
                raise InputError.bad("clip model", self.model_name, f"has no loadable tokenizer ({exc})") from None
        batch = self._tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self._net.text_model(input_ids=batch.input_ids.to(self.device),
                                       attention_mask=batch.attention_mask.to(self.device))
            feats = self._net.text_projection(out.pooler_output)
        return l2_normalize(feats.float().cpu().numpy())

    def _embed_batch(self, images):
        import torch

        x = torch.from_numpy(np.stack([self.preprocess(im) for im in images]))
        x = x.to(self.device, torch.float16 if self.fp16 else torch.float32)
        with torch.inference_mode():
            if self._vision_only:
                feats = self._net(pixel_values=x).image_embeds
            else:
                pooled = self._net.vision_model(pixel_values=x).pooler_output
                feats = self._net.visual_projection(pooled)
        return feats.float().cpu().numpy()
