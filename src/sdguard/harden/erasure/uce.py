"""UCE: Unified Concept Editing (Gandikota, Orgad, Belinkov, Materzynska & Bau 2024, "Unified
Concept Editing in Diffusion Models", WACV).

A closed-form edit of every cross-attention key and value projection ``W`` (``attn2.to_k`` and
``attn2.to_v`` of the UNet). The text embeddings ``c_e`` of each erased concept are sent to what
the unedited projection makes of an anchor ``c_a`` (the empty prompt by default), while the
embeddings ``c_p`` of a preserve list keep their outputs::

    W = (lambda W_old + s_e sum_e (W_old c_a) c_e^T + s_p sum_p (W_old c_p) c_p^T)
        (lambda I   + s_e sum_e c_e c_e^T       + s_p sum_p c_p c_p^T)^-1

the minimiser of ``s_e sum ||W c_e - W_old c_a||^2 + s_p sum ||W c_p - W_old c_p||^2 +
lambda ||W - W_old||_F^2``. The sums run over tokens. As in the paper's code, a concept is aligned
with its anchor from their last word token on (the concept's last word token against the
anchor's last word token, or the start token of the empty anchor, then end token against end
token, padding against padding; the longer prompt's tail is cut so both have the same length),
and a preserve prompt contributes every token of its padded sequence. The text encoder is not
changed. No training, no sampling: seconds even on a CPU.

The paper's code this module follows is ``train-scripts/train_erase.py`` of
github.com/rohitgandikota/unified-concept-editing (the version published with the paper; its
2025 rewrite ``trainscripts/uce_sd_erase.py`` keeps only the last token of each prompt and has no
empty-prompt retain term). Defaults as in that code: ``lamb`` 0.5, ``erase_scale`` 1, the
'replace' technique (erased tokens sent to the anchor's outputs), keys and values both edited, and
the retain set ``[''] + preserve``: the empty prompt is always preserved, so the unconditional
branch that classifier-free guidance subtracts keeps its outputs, with ``preserve_scale``
``max(0.1, 1 / len(retain))`` (the empty prompt counted). ``expand`` adds, as the code's
``add_prompts`` option does for art, "painting by C", "art by C", "artwork by C", "picture by C"
and "style of C" to each concept C. ``retain_empty=False`` leaves the empty prompt out (a
deviation, named in the report). ``tests/test_erasure.py`` checks the edited weights against the
closed form written from the paper's equations in float64.

Deviation: the code's preserve list for art, when none is given, is its list of 1734 artists;
sdguard has no such list for a user's model, so ``sdguard erase`` builds a default preserve set
from what it knows (:mod:`sdguard.harden.erasure.preserve`: a dataset's frequent concepts and a
sample of its captions) and says loudly when it knows nothing.

Extensions of ours, off by default and named in the report (``results.extensions``):

- ``expand_preserve``: each preserve prompt P that is a name (at most four words) also gets the
  templates ("painting by P", ...); longer preserve prompts (captions) are kept as they are:
  templating them preserved "painting by ..." contexts and held a style edit of ``builtin:tiny``
  at 14% of its presence instead of under 10%. The templates' context words ("painting by",
  "style of") are shared by every artist, so erasing "style of monet" also moves what "style of
  hokusai" produces; preserving the templated names keeps them. See ``benchmarks/erasure.py``.
- ``drop_conflicting``: a preserve prompt that shares a content word with an erased concept ("a
  red circle under a night sky" against "van gogh starry night") asks the least-squares problem
  to both move and keep the same contextual token; on ``builtin:tiny`` such prompts held the
  erased artwork at 33% of its presence instead of 0%. With the option they are left out, with a
  warning naming them.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Sequence

import torch

from ...core.config import RunConfig, option
from ...core.errors import InputError
from ...data.captions import STOP_WORDS, words
from .base import ErasureMethod, ErasureResult, register_method


class UCEOptions(RunConfig):
    """Options of UCE (defaults: the paper's code)."""

    lamb: float = option(0.5, gt=0, le=1e6, help="weight of staying close to the old projection (paper code: 0.5)")
    erase_scale: float = option(1.0, gt=0, le=1e6, help="weight of the erased concepts")
    preserve_scale: float | None = option(None, gt=0, le=1e6, help="weight of the preserved ones (default "
                                          "max(0.1, 1/len(preserve)))")
    edit_keys: bool = option(True, help="edit to_k as well as to_v")
    expand: bool = option(False, help="also erase the paper code's art templates of each concept")
    expand_preserve: bool = option(False, help="also preserve the art templates of each preserve prompt")
    retain_empty: bool = option(True, flag="--retain-empty/--no-retain-empty",
                                help="preserve the empty prompt too, as the paper's code does ([''] + preserve)")
    drop_conflicting: bool = option(False, flag="--drop-conflicting/--keep-conflicting",
                                    help="sdguard extension: leave out preserve prompts that share a content word "
                                    "with an erased concept (with a warning)")


#: the templates of the paper's code for art concepts (its ``add_prompts`` option), used with ``expand``
ART_TEMPLATES = ("painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}")


#: words too common to make a preserve prompt conflict with an erased concept: the caption stop
#: words and the words of the art templates
COMMON_WORDS = STOP_WORDS | frozenset("style painting art artwork picture photo drawing".split())


def _content_words(text: str) -> set[str]:
    return set(words(text)) - COMMON_WORDS


def conflicting(concepts: Sequence[str], preserve: Sequence[str]) -> dict[str, list[str]]:
    """Preserve prompts that share a content word with an erased concept: prompt -> shared words."""
    erased = set().union(*(_content_words(c) for c in concepts)) if concepts else set()
    out = {}
    for p in preserve:
        shared = sorted(_content_words(p) & erased)
        if shared:
            out[p] = shared
    return out


def _is_edited(name: str, keys: bool) -> bool:
    return ".attn2." in name and (name.endswith(".to_v.weight") or (keys and name.endswith(".to_k.weight")))


def aligned_embeddings(model, concept: str, anchor: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings of ``concept`` and ``anchor`` (text-encoder hidden states), aligned as in
    the paper's code from each prompt's last word token to the end; both ``n x d``."""
    ids = model.tokenize([concept, anchor])
    with torch.no_grad():
        hidden = model.encode_text(ids).double()
    length = hidden.shape[1]
    i_c = model.token_count(concept, truncate=True) - 2  # index of the last word token (0: the start token)
    i_a = model.token_count(anchor, truncate=True) - 2
    far = max(i_c, i_a)
    c = hidden[0, i_c:length - (far - i_c)]
    a = hidden[1, i_a:length - (far - i_a)]
    return c, a


def preserve_embeddings(model, prompt: str | Sequence[str], batch: int = 64) -> torch.Tensor:
    """Every token embedding of ``prompt`` padded to the tokenizer's length, ``L x d`` (for a list
    of prompts, all of them one after the other, ``len * L x d``, encoded in batches)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            out.append(model.encode_text(model.tokenize(prompts[i:i + batch])).double().flatten(0, 1))
    return torch.cat(out)


#: preserve prompts of at most this many words get the art templates with ``expand_preserve``
#: (names such as "hokusai" or "munch scream"; "painting by a red ring on the left" is no prompt)
TEMPLATE_MAX_WORDS = 4


@register_method
class UCE(ErasureMethod):
    name = "uce"
    description = "closed-form edit of the cross-attention keys and values (Unified Concept Editing)"
    Options = UCEOptions
    uses_preserve = True
    uses_anchor = True

    def extensions(self) -> list[str]:
        o: UCEOptions = self.options  # type: ignore[assignment]
        out = []
        if o.expand_preserve:
            out.append("expand_preserve (sdguard: the art templates of each preserved name are preserved too)")
        if o.drop_conflicting:
            out.append("drop_conflicting (sdguard: preserve prompts sharing a content word with an erased concept "
                       "left out)")
        if not o.retain_empty:
            out.append("retain_empty off (deviation: the empty prompt is not preserved, unlike the paper's code)")
        return out

    def touched(self, model) -> dict[str, torch.nn.Parameter]:
        keys = self.options.edit_keys  # type: ignore[attr-defined]
        return {k: p for k, p in model.unet.named_parameters() if _is_edited(k, keys)}

    def run(self, model, concepts: Sequence[str], *, preserve: Sequence[str] = (), anchor: str | Sequence[str] = "",
            seed: int = 0, progress: bool | None = None, workdir: Path | None = None,
            resume: bool = False, model_fingerprint: str | None = None) -> ErasureResult:
        o: UCEOptions = self.options  # type: ignore[assignment]
        concepts, preserve = list(concepts), list(preserve)
        anchors = [anchor] * len(concepts) if isinstance(anchor, str) else list(anchor)
        if len(anchors) != len(concepts):
            raise InputError.bad("--anchor", anchors, f"must be one prompt, or one per concept ({len(concepts)})")
        t0 = time.perf_counter()
        if o.expand:  # each concept and its templates, all sent to the concept's anchor
            pairs_text = [(t.format(c) if t != "{}" else c, a) for c, a in zip(concepts, anchors)
                          for t in ("{}",) + ART_TEMPLATES]
        else:
            pairs_text = list(zip(concepts, anchors))
        pairs = [aligned_embeddings(model, c, a) for c, a in pairs_text]
        dropped = conflicting(concepts, preserve) if o.drop_conflicting else {}
        if dropped:
            shown = "; ".join(f"{p!r} ({', '.join(w)})" for p, w in list(dropped.items())[:5])
            more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
            warnings.warn(f"--preserve: {len(dropped)} prompt(s) share words with an erased concept and are left out "
                          f"(UCE cannot both move and keep those tokens): {shown}{more}", UserWarning, stacklevel=2)
            preserve = [p for p in preserve if p not in dropped]
        retain = ([""] if o.retain_empty and "" not in preserve else []) + preserve
        # the paper's preserve scale counts the retain set: the empty prompt and the prompts the user gave
        s_p = o.preserve_scale if o.preserve_scale is not None else max(0.1, 1.0 / max(1, len(retain)))
        if o.expand_preserve:  # the preserved names in the same templates, so the shared context words keep their outputs
            names = [p for p in preserve if len(p.split()) <= TEMPLATE_MAX_WORDS]
            retain = retain + [t.format(p) for p in names for t in ART_TEMPLATES]
        c_e = torch.cat([c for c, _ in pairs])  # erased tokens, n_e x d
        c_a = torch.cat([a for _, a in pairs])  # their anchors
        c_p = preserve_embeddings(model, retain) if retain else c_e.new_zeros((0, c_e.shape[1]))
        d = c_e.shape[1]
        eye = torch.eye(d, dtype=torch.float64, device=c_e.device)
        # the right-hand factor is the same for every projection
        mat2 = o.lamb * eye + o.erase_scale * c_e.T @ c_e + s_p * c_p.T @ c_p
        mat2_inv = torch.linalg.inv(mat2)
        params = self.touched(model)
        if not params:
            raise InputError.bad("--method", self.name, "found no cross-attention key/value projection in this UNet")
        shift = []
        with torch.no_grad():
            for name, p in params.items():
                w_old = p.detach().double()
                if w_old.shape[1] != d:
                    raise InputError.bad("MODEL", model.spec, f"has a cross-attention projection {name} of input size "
                                         f"{w_old.shape[1]} but text embeddings of size {d}")
                v_a = c_a @ w_old.T  # anchors' outputs under the old projection, n_e x out
                v_p = c_p @ w_old.T
                mat1 = o.lamb * w_old + o.erase_scale * v_a.T @ c_e + s_p * v_p.T @ c_p
                w_new = mat1 @ mat2_inv
                shift.append(float((w_new - w_old).norm() / (w_old.norm() + 1e-12)))
                p.copy_(w_new.to(p.dtype))
        stats = {"projections_edited": len(params), "parameters_edited": sum(p.numel() for p in params.values()),
                 "erased_tokens": int(c_e.shape[0]), "preserved_tokens": int(c_p.shape[0]),
                 "preserve_scale": s_p, "preserve_left_out": list(dropped), "retained_empty_prompt": "" in retain,
                 "preserved_prompts": len(retain), "anchors": anchors,
                 "relative_weight_change_mean": sum(shift) / len(shift),
                 "seconds": round(time.perf_counter() - t0, 4)}
        return ErasureResult(stats=stats)


__all__ = ["COMMON_WORDS", "UCE", "UCEOptions", "aligned_embeddings", "conflicting", "preserve_embeddings"]
