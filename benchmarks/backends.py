"""Inference speed of one translator: PyTorch eager vs ONNX Runtime (FP32, and FP16 on GPU).

The reference ResNet-9 generator (ngf 64) wrapped as an i2i translator (uint8 NHWC in and
out), exported by i2i's own export path, at 256x256, batches 1, 4 and 16. Weights are
random: speed does not depend on them.

    python benchmarks/backends.py                 # CPU: torch eager vs onnxruntime CPU
    python benchmarks/backends.py --device cuda   # adds FP16 and channels-last torch
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from i2i.export.onnx import export_onnx
from i2i.models import ShapeRule, build_generator
from i2i.models.translators import ImageTranslator

GFLOP_PER_IMAGE_256 = 99.0  # ResNet-9 ngf 64 forward at 256x256 (multiply-adds x 2)


def timed(fn, images: np.ndarray, repeats: int) -> float:
    fn(images)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(images)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    import onnxruntime as ort

    torch.manual_seed(0)
    translator = ImageTranslator(build_generator("resnet_9blocks", 3, 3, ngf=64)).eval()
    tmp = Path(tempfile.mkdtemp())
    export_onnx(translator, tmp / "g.onnx", ShapeRule(multiple_of=4), 3)
    providers = ["CUDAExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(tmp / "g.onnx"), providers=providers)

    device = torch.device(args.device)
    translator = translator.to(device)

    def run_torch(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = translator(torch.from_numpy(images).to(device))
        return out.cpu().numpy()

    def run_ort(images: np.ndarray) -> np.ndarray:
        return session.run(None, {"image": images})[0]

    backends = {
        "pytorch-eager-fp32": run_torch,
        f"onnxruntime-{providers[0][:-17].lower()}-fp32": run_ort,
    }
    results = []
    print(
        f"| backend | batch | s/batch | images/s | s/image | GFLOP/s |  (size {args.size}, threads {torch.get_num_threads()})"
    )
    print("|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batches.split(",")):
        images = rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
        for name, fn in backends.items():
            seconds = timed(fn, images, args.repeats)
            gflops = GFLOP_PER_IMAGE_256 * (args.size / 256) ** 2 * batch / seconds
            r = {
                "backend": name,
                "batch": batch,
                "s_per_batch": seconds,
                "images_per_s": batch / seconds,
                "gflops": gflops,
            }
            results.append(r)
            print(
                f"| {name} | {batch} | {seconds:.3f} | {batch / seconds:.2f} | {seconds / batch:.3f} | {gflops:.0f} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
