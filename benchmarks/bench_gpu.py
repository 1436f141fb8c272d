"""Generator throughput on real architectures: t2ibias's generator vs plain diffusers vs the FLOP floor.

Builds Stable Diffusion 1.5 (512x512) and SDXL (1024x1024) pipelines from their published
architecture (the numbers of their config.json files, written out below) with random weights:
no network, realistic FLOPs, meaningless pixels. In one process, on the same prompts and seeds,
interleaved over ``--repeats`` rounds, it times

* ``diffusers``: plain batched pipeline calls at each batch size B,
* ``t2ibias``: the generator's default, sample-wise execution (images independent of B),
* ``t2ibias --fast-batching``: the generator with kernels batched across images,

each eager and with ``torch.compile`` of the UNet (``--compile both``). For every row it prints
images/s (median over the rounds, with min-max), the ratio to plain diffusers at the same B
(median of the per-round ratios, with min-max) and the ratio to the UNet FLOP floor: the UNet's
FLOPs for one image (one forward of one classifier-free-guidance pair, counted with
``torch.utils.flop_counter.FlopCounterMode``, times ``--steps``) at ``--peak-tflops``.
Text encoders and the VAE are timed but not in the floor, so the floor ratio is an upper bound
on how busy the UNet keeps the chip.

    python benchmarks/bench_gpu.py --device cuda --peak-tflops 989   # H100/H200 dense fp16
    python benchmarks/bench_gpu.py --tiny --device cpu --steps 2      # tiny shapes, seconds on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: steady CPU timings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["a photo of the face of a doctor", "a photo of a nurse", "a portrait of a janitor", "a photo of a CEO",
           "a photo of a software developer", "a photo of a cashier", "a photo of a firefighter", "a photo of a teacher"]

# Published architecture facts (runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0
# unet/vae/text_encoder config.json), and tiny stand-ins of the same structure for CPU tests.
SD15 = {
    "size": 512,
    "unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32),
    "text": [dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  hidden_act="quick_gelu", projection_dim=768)],
    "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                norm_num_groups=32, sample_size=512, scaling_factor=0.18215),
}
SDXL = {
    "size": 1024,
    "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32),
    "text": [dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  hidden_act="quick_gelu", projection_dim=768),
             dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  hidden_act="gelu", projection_dim=1280)],
    "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                norm_num_groups=32, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
}
SD15_TINY = {
    "size": 64,
    "unet": {**SD15["unet"], "sample_size": 8, "layers_per_block": 1, "block_out_channels": (16, 16, 32, 32),
             "cross_attention_dim": 32, "attention_head_dim": 4, "norm_num_groups": 8},
    "text": [dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  hidden_act="quick_gelu", projection_dim=32)],
    "vae": {**SD15["vae"], "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64},
}
SDXL_TINY = {
    "size": 64,
    "unet": {**SDXL["unet"], "sample_size": 8, "layers_per_block": 1, "block_out_channels": (16, 32, 32),
             "transformer_layers_per_block": (1, 1, 2), "attention_head_dim": (2, 4, 4), "cross_attention_dim": 32,
             "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 16, "norm_num_groups": 8},
    "text": [dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  hidden_act="quick_gelu", projection_dim=16),
             dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  hidden_act="gelu", projection_dim=16)],
    "vae": {**SDXL["vae"], "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64},
}
ARCHS = {"sd15": (SD15, SD15_TINY, 7.5), "sdxl": (SDXL, SDXL_TINY, 5.0)}


def build_pipeline(model: str, tiny: bool, device: str, dtype: Any) -> tuple[Any, dict[str, Any], float]:
    """A random-weight pipeline of the model's architecture, built directly on ``device``."""
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from t2ibias.models.tiny import build_clip_tokenizer

    full, small, guidance = ARCHS[model]
    arch = small if tiny else full
    tokenizer = build_clip_tokenizer()
    n_tok = len(tokenizer)

    def text_config(c: dict[str, Any]) -> Any:
        return CLIPTextConfig(vocab_size=n_tok if tiny else 49408, max_position_embeddings=77,
                              bos_token_id=n_tok - 2, eos_token_id=n_tok - 1, pad_token_id=n_tok - 1, **c)

    torch.manual_seed(0)
    blocks = len(arch["vae"]["block_out_channels"])
    vae_kw = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                  up_block_types=("UpDecoderBlock2D",) * blocks)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch["unet"])
        vae = AutoencoderKL(**vae_kw, **arch["vae"])
        encoders = [CLIPTextModel(text_config(arch["text"][0]))]
        if model == "sdxl":
            encoders.append(CLIPTextModelWithProjection(text_config(arch["text"][1])))
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if model == "sd15":
        pipe = StableDiffusionPipeline(
            unet=unet, vae=vae, text_encoder=encoders[0], tokenizer=tokenizer,
            scheduler=PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **betas),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLPipeline(
            unet=unet, vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=tokenizer,
            tokenizer_2=tokenizer, scheduler=EulerDiscreteScheduler(timestep_spacing="leading", **betas))
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, arch, guidance


def unet_flops_per_step(pipe: Any, size: int, do_cfg: bool) -> int:
    """FLOPs of one UNet forward on one image's rows (a CFG pair, or one row without guidance)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    rows = 2 if do_cfg else 1
    p = next(unet.parameters())
    latent = size // pipe.vae_scale_factor
    sample = torch.zeros(rows, unet.config.in_channels, latent, latent, device=p.device, dtype=p.dtype)
    context = torch.zeros(rows, 77, unet.config.cross_attention_dim, device=p.device, dtype=p.dtype)
    extra: dict[str, Any] = {}
    if unet.config.addition_embed_type == "text_time":
        time_dim = unet.config.addition_time_embed_dim
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * time_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.zeros(rows, pooled, device=p.device, dtype=p.dtype),
                                      "time_ids": torch.zeros(rows, 6, device=p.device, dtype=p.dtype)}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, torch.tensor(500, device=p.device), encoder_hidden_states=context, **extra)
    return int(counter.get_total_flops())


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--images", type=int, default=8, help="images per timed run (a multiple of every B)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians and min-max over them")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, help="float16 on a GPU, float32 on the CPU unless given")
    ap.add_argument("--compile", choices=("off", "on", "both"), default="both")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode of the UNet (default, reduce-overhead, ...)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the chip's peak dense TFLOP/s in --dtype (H100/H200 fp16: 989)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes of the same architectures (CPU tests)")
    args = ap.parse_args(argv)

    import torch
    from diffusers.utils import logging as dlogging

    from t2ibias.generation.diffusers_adapter import apply_speed_levers
    from t2ibias.generation.external import BorrowedPipeline
    from t2ibias.models.generator_spec import GeneratorSpec

    dlogging.set_verbosity_error()
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    if any(b < 1 or args.images % b for b in sizes):
        ap.error(f"--images {args.images} must be a multiple of every batch size {sizes}")
    dtype_name = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    dtype = getattr(torch, dtype_name)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    seeds = list(range(1000, 1000 + args.images))
    rounds = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f", {dtype_name}, {args.steps} steps, {args.images} images per run, n={args.repeats} interleaved rounds"
          + (", TINY shapes (not the real models)" if args.tiny else ""))
    header = (f"{'model':6} {'compile':7} {'mode':26} {'B':>3} {'images/s [min-max]':>26} "
              f"{'x diffusers@B [min-max]':>26} {'x FLOP floor':>12}")
    rows: list[str] = []

    for model in args.models.split(","):
        if model not in ARCHS:
            ap.error(f"--models: unknown {model!r} (one of {', '.join(ARCHS)})")
        t0 = time.perf_counter()
        pipe, arch, guidance = build_pipeline(model, args.tiny, args.device, dtype)
        size = arch["size"]
        flops = unet_flops_per_step(pipe, size, guidance > 1) * args.steps
        floor = args.peak_tflops * 1e12 / flops if args.peak_tflops else None
        print(f"{model}: built in {time.perf_counter() - t0:.1f} s; {size}x{size}; UNet "
              f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f} M params, "
              f"{flops / 1e9:.4g} GFLOP per image ({args.steps} steps x CFG pair)"
              + (f"; floor {floor:.2f} images/s at {args.peak_tflops:g} TFLOP/s" if floor else ""))
        spec = GeneratorSpec(id=f"bench-{model}", source="bench", pipeline=type(pipe).__name__, dtype=dtype_name,
                             steps=args.steps, guidance=guidance, height=size, width=size)
        call = dict(num_inference_steps=args.steps, guidance_scale=guidance, height=size, width=size, output_type="pil")

        def plain(b: int) -> None:
            for i in range(0, args.images, b):
                pipe(prompt=prompts[i:i + b], generator=[torch.Generator("cpu").manual_seed(s) for s in seeds[i:i + b]], **call)

        def ours(b: int, batch_invariant: bool) -> None:
            with BorrowedPipeline(pipe, spec, batch_invariant) as gen:
                for i in range(0, args.images, b):
                    gen.generate(prompts[i:i + b], seeds[i:i + b])

        modes = {"diffusers": plain, "t2ibias (sample-wise)": lambda b: ours(b, True),
                 "t2ibias --fast-batching": lambda b: ours(b, False)}
        for compiled in rounds:
            if compiled:
                apply_speed_levers(pipe, dataclasses.replace(spec, compile=args.compile_mode), args.device)
            warm = time.perf_counter()
            for b in sizes:  # warm-up: kernels, allocator, compilation for every shape
                for run in modes.values():
                    with torch.no_grad():
                        run(b)
            _sync(args.device)
            print(f"{model}: warm-up {'(compiling) ' if compiled else ''}{time.perf_counter() - warm:.1f} s")
            seconds: dict[tuple[str, int], list[float]] = {(m, b): [] for m in modes for b in sizes}
            for _ in range(args.repeats):
                for b in sizes:
                    for name, run in modes.items():
                        _sync(args.device)
                        start = time.perf_counter()
                        run(b)
                        _sync(args.device)
                        seconds[name, b].append(time.perf_counter() - start)
            for b in sizes:
                base = seconds["diffusers", b]
                for name in modes:
                    rates = [args.images / s for s in seconds[name, b]]
                    ratios = [d / s for d, s in zip(base, seconds[name, b])]
                    fl = f"{statistics.median(rates) / floor:11.3g}x" if floor else f"{'-':>12}"
                    rows.append(f"{model:6} {'yes' if compiled else 'no':7} {name:26} {b:3d} "
                                f"{statistics.median(rates):9.3f} [{min(rates):6.3f}-{max(rates):7.3f}] "
                                f"{statistics.median(ratios):9.3f} [{min(ratios):6.3f}-{max(ratios):7.3f}] {fl}")
        del pipe
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print()
    print(header)
    print("\n".join(rows))
    print("\nx diffusers@B: images/s over plain diffusers batched calls at the same B, paired per round; "
          "x FLOP floor: images/s over peak / UNet FLOPs per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
