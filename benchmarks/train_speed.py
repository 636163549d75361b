"""Training speed and peak memory per model family, reference architecture, batch 1.

Each (size, variant) runs in its own process so peak RSS is that configuration's alone,
--rounds times, round-robin over the configurations so that load from other processes
falls on every row alike; the table gives the median s/it and the range over the rounds,
the load average at each process's start and the cores other processes used meanwhile.
The step is i2i's real training step of the family (its trainer, with every network,
loss and optimiser of the family's reference preset, configs/<family>.yaml); data comes
from memory so the numbers are the model's, not the disk's. pix2pix's reference U-Net
takes one size only: unet_256 runs at 256, unet_128 at 128, and no U-Net at other sizes.
The machine, versions, commit and load average are printed above the table.

    python benchmarks/train_speed.py                             # cyclegan, 64 and 128 px
    python benchmarks/train_speed.py --families cyclegan,pix2pix,unit,munit
    python benchmarks/train_speed.py --sizes 64,128,256 --variants eager,channels_last,compile
    python benchmarks/train_speed.py --families twostep:64,stargan:128,discogan:64 --batch preset
    python benchmarks/train_speed.py --device cuda --variants gpu --sizes 256 --batch 1,4

A variant is a precision joined by ``+`` with any of ``channels_last`` and ``compile``:
``fp32``, ``bf16``, ``bf16+channels_last``, ``bf16+channels_last+compile`` (``fp16`` is
CUDA only). ``--variants gpu`` stands for those four, the GPU modes of issue 12; the old
names stay (``eager`` = fp32, ``channels_last`` = fp32+channels_last, ``compile`` =
fp32+compile, ``amp_bf16`` = bf16). Each row's "× fp32" is its speed over the fp32 row of
the same preset, size and batch. On CUDA the table adds the peak GPU memory and the device.

A name in --families is a preset (configs/<name>.yaml; a family's own preset has its name,
the variant presets such as discogan run their family's trainer); ``name:size`` runs that
name at that size only. ``--batch preset`` takes each preset's own batch size (the paper's)
instead of 1. Multi-domain families (twostep, stargan) get a batch of images with random
domain labels; the two-step model's row is its step 1 (the AC-GAN), the costly one.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from machine import cpu_snapshot, describe, identity, load_average, others_cores

PRECISIONS = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}  # variant word -> amp
OPTIONS = ("channels_last", "compile")
ALIASES = {
    "eager": "fp32",
    "channels_last": "fp32+channels_last",
    "compile": "fp32+compile",
    "amp_bf16": "bf16",
    "amp_fp16": "fp16",
}
# The GPU modes issue 12 asks for, each adding one thing to the one before.
GPU_MODES = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")
UNET_SIZES = (128, 256)


def parse_variant(name: str) -> tuple[str, frozenset[str]]:
    """``bf16+channels_last+compile`` -> ("bf16", {"channels_last", "compile"}); a
    ValueError that lists the words otherwise."""
    words = ALIASES.get(name, name).split("+")
    precision, options = words[0], frozenset(words[1:])
    if precision not in PRECISIONS or not options <= set(OPTIONS) or len(options) < len(words) - 1:
        raise ValueError(
            f"variant {name!r}: expected a precision ({', '.join(PRECISIONS)}) joined by '+' "
            f"with any of {', '.join(OPTIONS)}, or one of {', '.join(ALIASES)}, or 'gpu'"
        )
    return precision, options


def variant_names(text: str) -> list[str]:
    """The --variants list, ``gpu`` expanded, each name checked."""
    names = [m for v in text.split(",") for m in (GPU_MODES if v == "gpu" else (v,))]
    for name in names:
        parse_variant(name)
    return names


def family_config(family: str, size: int, variant: str, batch: str = "1") -> Any:
    """The preset ``family`` (a family's reference preset or a variant preset), at batch 1
    (or the preset's own with ``batch="preset"``), with the variant's settings."""
    from i2i.models import get_family
    from i2i.training.config import apply_overrides, load_config

    cfg = load_config(family)
    precision, options = parse_variant(variant)
    overrides = [
        f"batch_size={cfg.batch_size if batch == 'preset' else int(batch)}",
        f"channels_last={'channels_last' in options}",
        f"amp={PRECISIONS[precision]}",
    ]
    if get_family(cfg.family).multi_domain:  # image_size ties the networks to one size
        overrides += [f"model.image_size={size}", f"data.crop_size={size}"]
        if not cfg.model.get("domains"):
            overrides.append("model.domains=[a,b,c,d,e]")
    if family == "pix2pix":
        if size not in UNET_SIZES:
            raise ValueError(f"pix2pix's U-Nets take {' or '.join(map(str, UNET_SIZES))} px only")
        overrides.append(f"model.netG=unet_{size}")
    return apply_overrides(cfg, overrides)


def worker(
    family: str, size: int, variant: str, steps: int, warmup: int, device: str, batch_arg: str
) -> dict:
    import torch

    from i2i.models import get_family, options_from_dict
    from i2i.training.loop import trainer_class
    from i2i.training.steps import check_amp

    preset = family
    cfg = family_config(preset, size, variant, batch_arg)
    family = cfg.family
    torch.manual_seed(0)
    dev = torch.device(device)
    options = options_from_dict(family, cfg.model)
    networks = {n: m.to(dev) for n, m in get_family(family).build(options).items()}
    if cfg.channels_last:
        networks = {n: m.to(memory_format=torch.channels_last) for n, m in networks.items()}
    for net in networks.values():
        net.train()
    check_amp(cfg.amp, dev)  # as train() does: fp16 is CUDA only
    wrap = torch.compile if "compile" in parse_variant(variant)[1] else None
    trainer = trainer_class(family)(cfg, networks, dev, wrap=wrap)
    n = cfg.batch_size
    if get_family(family).multi_domain:
        batch = {
            "image": torch.rand(n, options.input_nc, size, size) * 2 - 1,
            "domain": torch.randint(len(options.domains), (n,)),
        }
    else:
        batch = {
            "A": torch.rand(n, options.input_nc, size, size) * 2 - 1,
            "B": torch.rand(n, options.output_nc, size, size) * 2 - 1,
        }
    for _ in range(warmup):
        trainer.step(batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    step_seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        step_seconds.append(time.perf_counter() - start)
    seconds = sum(step_seconds) / steps
    return {
        "family": preset,
        "batch": n,
        "size": size,
        "variant": variant,
        "device": device,
        "s_per_it": seconds,
        "step_seconds": step_seconds,
        "it_per_s": 1 / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    } | (
        {
            "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20,
            "gpu": torch.cuda.get_device_name(dev),
            "cuda": torch.version.cuda,
        }
        if dev.type == "cuda"
        else {}
    )


def run_worker(family: str, size: int, variant: str, batch: str, args: argparse.Namespace) -> dict:
    """One configuration in a fresh process (its peak RSS is its own); its result or failure."""
    cmd = [sys.executable, __file__, "--worker", family, str(size), variant,
           "--warmup", str(args.warmup), "--device", args.device,
           "--batch", batch]  # fmt: skip
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    load, before = load_average(), cpu_snapshot()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seen = {"load_average": load} | others_cores(before, cpu_snapshot())
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        return {
            "family": family,
            "size": size,
            "variant": variant,
            "failed": lines[-1],
        } | seen
    return json.loads(out.stdout.strip().splitlines()[-1]) | seen


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--families", default="cyclegan", help="comma-separated model families (default cyclegan)"
    )
    p.add_argument(
        "--sizes", default="64,128", help="image sides, comma-separated (default 64,128)"
    )
    p.add_argument(
        "--variants",
        default="fp32",
        help="comma-separated: a precision (fp32, bf16, fp16) joined by '+' with channels_last "
        f"and/or compile, e.g. bf16+channels_last+compile; 'gpu' = {','.join(GPU_MODES)}",
    )
    p.add_argument("--rounds", type=int, default=3, help="processes per configuration, interleaved")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default: 10 / 5 / 3 by size)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile needs >= 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--batch",
        default="1",
        help="batch sizes, comma-separated (e.g. 1,4), or 'preset' for each preset's own "
        "(default 1)",
    )
    p.add_argument("--json", help="also write the machine, settings and results to this file")
    p.add_argument(
        "--worker", nargs=3, metavar=("FAMILY", "SIZE", "VARIANT"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.worker:
        family, size, variant = args.worker[0], int(args.worker[1]), args.worker[2]
        steps = args.steps or {64: 10, 128: 5}.get(size, 3)
        print(
            json.dumps(worker(family, size, variant, steps, args.warmup, args.device, args.batch))
        )
        return
    try:
        variants = variant_names(args.variants)
    except ValueError as exc:
        p.error(str(exc))
    batches = ["preset"] if args.batch == "preset" else args.batch.split(",")
    import torch  # only for the thread count the workers will get

    ident = identity({"torch": torch.get_num_threads()})
    print(describe(ident))
    print(
        "\nOne training step of each family's reference preset (configs/<family>.yaml), "
        f"batch {args.batch}, {args.device}; {args.rounds} processes per row, interleaved\n"
    )
    configs = [
        (f, int(s), b, v)
        for f, _, only in (name.partition(":") for name in args.families.split(","))
        for s in (only or args.sizes).split(",")
        for b in batches
        for v in variants
        if f != "pix2pix" or int(s) in UNET_SIZES
    ]
    runs: dict[tuple[str, int, str, str], list[dict]] = {c: [] for c in configs}
    for _ in range(args.rounds):  # round-robin: load from others falls on every row alike
        for family, size, batch, variant in configs:
            runs[family, size, batch, variant].append(
                run_worker(family, size, variant, batch, args)
            )
    cuda = args.device.startswith("cuda")
    print(
        "| preset | size | batch | variant | s/it (median) | min–max | it/s | × fp32 | "
        + ("peak GPU (MB) | GPU | " if cuda else "")
        + "peak RSS (MB) | load average at starts | others' cores |"
    )
    print(
        "|---|---:|---:|---|---:|---:|---:|---:|"
        + ("---:|---|" if cuda else "")
        + "---:|---:|---:|"
    )
    medians = {
        key: statistics.median(r["s_per_it"] for r in done if "failed" not in r)
        for key, done in runs.items()
        if any("failed" not in r for r in done)
    }
    results = []
    for (family, size, batch, variant), done in runs.items():
        loads = [r["load_average"] for r in done]
        busy = [r["others_cores"] for r in done]
        ok = [r for r in done if "failed" not in r]
        if not ok:
            gap = " | " * (2 if cuda else 0)
            print(
                f"| {family} | {size} | {batch} | {variant} | failed: {done[-1]['failed']} "
                f"| | | |{gap} | | |"
            )
        else:
            per = [r["s_per_it"] for r in ok]
            med = medians[family, size, batch, variant]
            base = next(
                (medians[k] for k in [(family, size, batch, "fp32"), (family, size, batch, "eager")]
                 if k in medians),
                None,
            )  # fmt: skip
            gpu = f"{max(r['peak_gpu_mb'] for r in ok):.0f} | {ok[0]['gpu']} | " if cuda else ""
            print(
                f"| {family} | {size} | {ok[0]['batch']} | {variant} | {med:.3f} | {min(per):.3f}–{max(per):.3f} | "
                f"{1 / med:.2f} | {f'{base / med:.2f}' if base else '–'} | {gpu}"
                f"{max(r['peak_rss_mb'] for r in ok):.0f} | "
                f"{min(loads):.2f}–{max(loads):.2f} | {min(busy):.2f}–{max(busy):.2f} |",
                flush=True,
            )
        results.append(
            {"family": family, "size": size, "batch": batch, "variant": variant, "runs": done}
        )
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "worker"}
        record = {"machine": ident, "settings": settings, "results": results}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
