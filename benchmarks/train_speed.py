"""CycleGAN training speed and peak memory, reference architecture, batch 1.

Each (size, variant) runs in its own process so peak RSS is that configuration's alone.
The step is i2i's real training step (both generators, both discriminators, pools,
optimisers); data comes from memory so the numbers are the model's, not the disk's.

    python benchmarks/train_speed.py                       # 64, 128, 256 px; eager + channels-last
    python benchmarks/train_speed.py --sizes 64 --variants eager,compile --steps 10
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

VARIANTS = ("eager", "channels_last", "compile", "amp_bf16")


def worker(size: int, variant: str, steps: int, warmup: int, device: str) -> dict:
    import torch

    from i2i.models import get_family, options_from_dict
    from i2i.training.config import TrainConfig
    from i2i.training.cyclegan import CycleGANTrainer

    cfg = TrainConfig(
        channels_last=variant == "channels_last",
        amp="bf16" if variant == "amp_bf16" else ("fp16" if variant == "amp_fp16" else "off"),
    )
    torch.manual_seed(0)
    dev = torch.device(device)
    networks = {
        n: m.to(dev)
        for n, m in get_family("cyclegan").build(options_from_dict("cyclegan", {})).items()
    }
    if cfg.channels_last:
        networks = {n: m.to(memory_format=torch.channels_last) for n, m in networks.items()}
    wrap = torch.compile if variant == "compile" else None
    trainer = CycleGANTrainer(cfg, networks, dev, wrap=wrap)
    batch = {"A": torch.rand(1, 3, size, size) * 2 - 1, "B": torch.rand(1, 3, size, size) * 2 - 1}
    for _ in range(warmup):
        trainer.step(batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {
        "size": size,
        "variant": variant,
        "device": device,
        "s_per_it": seconds,
        "it_per_s": 1 / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="64,128,256", help="image sides, comma-separated")
    p.add_argument(
        "--variants", default="eager,channels_last", help=f"any of {', '.join(VARIANTS)}"
    )
    p.add_argument("--steps", type=int, default=0, help="timed steps (default: 10 / 5 / 3 by size)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile needs >= 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", nargs=2, metavar=("SIZE", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        size, variant = int(args.worker[0]), args.worker[1]
        steps = args.steps or {64: 10, 128: 5}.get(size, 3)
        print(json.dumps(worker(size, variant, steps, args.warmup, args.device)))
        return
    results = []
    print(
        f"# CycleGAN training, ResNet-9 + 70x70 PatchGAN, batch 1, {platform.processor() or platform.machine()}"
    )
    print("| size | variant | s/it | it/s | peak RSS (MB) |")
    print("|---:|---|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        for variant in args.variants.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                str(size),
                variant,
                "--warmup",
                str(args.warmup),
                "--device",
                args.device,
            ]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"| {size} | {variant} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(
                f"| {size} | {variant} | {r['s_per_it']:.3f} | {r['it_per_s']:.2f} | {r['peak_rss_mb']:.0f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
