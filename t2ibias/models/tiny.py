"""Tiny random-weight diffusion pipelines, built from config with no network access.

They exist so that the real loading path (``DiffusionPipeline.from_pretrained``) runs in tests,
in CI and in the offline demo. Their images are noise: any bias number measured on them is
meaningless by construction, and reports say so.

The tokenizer is the only component normally fetched from a hub. open_clip ships OpenAI's BPE
merges file; a CLIP tokenizer built from its first merges gives a small vocabulary that tokenizes
exactly like OpenAI CLIP for the tokens it covers.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

from t2ibias.core.paths import cache_dir

#: Bump when a builder changes: the folder name (and so every image key) changes with it.
TINY_BUILD_VERSION = 1
N_MERGES = 2000
SEED = 0


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_clip_tokenizer(n_merges: int = N_MERGES):
    """A ``transformers.CLIPTokenizer`` from open_clip's bundled BPE file, truncated to ``n_merges``."""
    import importlib.util

    from transformers import CLIPTokenizer

    # the file's place, without importing open_clip (seconds of imports for one data file)
    bpe = Path(importlib.util.find_spec("open_clip").origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + n_merges]]
    units = list(_bytes_to_unicode().values())
    vocab_list = units + [u + "</w>" for u in units] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_encoder_config(vocab_size: int, hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _unet(**kwargs):
    """A two-level UNet at 32×32 latents; ``kwargs`` add the variant's own settings."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
        norm_num_groups=8,
        **kwargs,
    )


def build_tiny_sd():
    """A Stable Diffusion 1.x-shaped pipeline with random weights (64×64, ~1 MB)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(SEED)
    tokenizer = build_clip_tokenizer()
    unet = _unet(cross_attention_dim=32)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    text_encoder = CLIPTextModel(_text_encoder_config(len(tokenizer), 32))
    return StableDiffusionPipeline(
        unet=unet, scheduler=scheduler, vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_sdxl():
    """A Stable Diffusion XL-shaped pipeline (two text encoders, text_time embedding), random weights."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEED)
    tokenizer = build_clip_tokenizer()
    text_dim, text_dim_2, proj = 16, 16, 16
    unet = _unet(
        cross_attention_dim=text_dim + text_dim_2,
        transformer_layers_per_block=(1, 1),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + proj,
        use_linear_projection=True,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    text_encoder = CLIPTextModel(_text_encoder_config(len(tokenizer), text_dim))
    text_encoder_2 = CLIPTextModelWithProjection(_text_encoder_config(len(tokenizer), text_dim_2, proj))
    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )


TINY_BUILDERS = {"tiny-random-sd": build_tiny_sd, "tiny-random-sdxl": build_tiny_sdxl}


def tiny_model_dir(name: str) -> Path:
    """The saved diffusers folder of a tiny model, built and saved on first use."""
    target = cache_dir() / "models" / f"{name}-v{TINY_BUILD_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        TINY_BUILDERS[name]().save_pretrained(tmp, safe_serialization=True)
        (tmp / "t2ibias_tiny.json").write_text(
            json.dumps({"name": name, "build_version": TINY_BUILD_VERSION, "note": "random weights"}) + "\n"
        )
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
