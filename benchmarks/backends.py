"""Inference speed of one translator, PyTorch eager vs ONNX Runtime, against the machine's peak.

The reference ResNet-9 generator (ngf 64) wrapped as an i2i translator (uint8 NHWC in and
out), exported by i2i's own export path; weights are random (speed does not depend on
them). The peak is measured in the same run: a square FP32 matrix product (sgemm) through
torch (MKL) and numpy (its BLAS), at the same thread count. FLOP per image are counted by
torch's FlopCounterMode on the translator, not quoted.

All cells are timed in one interleaved loop (each repetition runs every cell once, in a
rotated order), so load from other processes falls on both sides of a comparison; the
table gives the median and the range over the repetitions, and each ratio is the median
of the per-repetition ratios.

    python benchmarks/backends.py                               # 256 px, batches 1 and 4
    python benchmarks/backends.py --batches 1,4,16 --repeats 7 --json backends.json
    python benchmarks/backends.py --device cuda                 # CUDA torch vs ORT CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from i2i.export.onnx import export_onnx
from i2i.models import ShapeRule, build_generator
from i2i.models.translators import ImageTranslator
from machine import cpu_snapshot, describe, identity, load_average, others_cores

QUIET = 0.25  # a repetition is quiet when other processes used fewer cores than this


def gflop_per_image(translator: torch.nn.Module, size: int, device: torch.device) -> float:
    """Floating-point operations of one forward pass at size x size (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.zeros(1, size, size, 3, dtype=torch.uint8, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        translator(image)
    return counter.get_total_flops() / 1e9


def timed_once(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--batches", default="1,4", help="batch sizes (default 1,4)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions of every cell")
    p.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)),
        help="torch and ONNX Runtime intra-op threads (default: every usable core)",
    )  # fmt: skip
    p.add_argument("--sgemm", type=int, default=4096, help="sgemm side for the peak; 0: none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the machine, settings and results here")
    args = p.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ident = identity(
        {"torch": torch.get_num_threads(), "onnxruntime intra-op": args.threads,
         "numpy BLAS": os.environ.get("OPENBLAS_NUM_THREADS", "its default (all cores)")}
    )  # fmt: skip
    print(describe(ident))

    torch.manual_seed(0)
    translator = ImageTranslator(build_generator("resnet_9blocks", 3, 3, ngf=64)).eval()
    tmp = Path(tempfile.mkdtemp())
    export_onnx(translator, tmp / "g.onnx", ShapeRule(multiple_of=4), 3)
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    options = ort.SessionOptions()  # as i2i's ONNX Runtime backend builds it
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(tmp / "g.onnx"), options, providers=[provider])
    translator = translator.to(device)
    gflop = gflop_per_image(translator, args.size, device)

    # cell name -> (batch or matrix side, GFLOP per call, the call)
    cells: dict[str, tuple[int, float, Callable[[], object]]] = {}
    if args.sgemm:
        n = args.sgemm
        a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
        cells["sgemm torch"] = (n, 2 * n**3 / 1e9, lambda: torch.mm(a, b))
        if device.type == "cpu":
            a_np, b_np = a.numpy(), b.numpy()
            cells["sgemm numpy"] = (n, 2 * n**3 / 1e9, lambda: a_np @ b_np)
    rng = np.random.default_rng(0)
    for batch in (int(x) for x in args.batches.split(",")):
        images = rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
        on_device = torch.from_numpy(images).to(device)

        def run_torch(x: torch.Tensor = on_device) -> np.ndarray:
            with torch.inference_mode():
                return translator(x).cpu().numpy()

        def run_ort(x: np.ndarray = images) -> np.ndarray:
            return session.run(None, {"image": x})[0]

        cells[f"PyTorch eager FP32|{batch}"] = (batch, gflop * batch, run_torch)
        cells[f"ONNX Runtime {provider[:-17]} FP32|{batch}"] = (batch, gflop * batch, run_ort)

    names = list(cells)
    for name in names:  # warm-up: one untimed call each
        cells[name][2]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    loads = []  # the 1-minute load average at the start of each repetition
    others = []  # cores other processes used during each repetition
    for r in range(args.repeats):
        loads.append(load_average())
        before = cpu_snapshot()
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name].append(timed_once(cells[name][2], sync))
        others.append(others_cores(before, cpu_snapshot()))
    loads.append(load_average())
    busy = [o["others_cores"] for o in others]
    quiet = [r for r, b in enumerate(busy) if b < QUIET]

    def gflops(name: str, pick: Callable[[list[float]], float]) -> float:
        return cells[name][1] / pick(seconds[name])

    sgemms = [n for n in names if n.startswith("sgemm")]
    peak = {  # the machine's measured peak: the faster sgemm, by median and by best time
        "median": max((gflops(n, statistics.median) for n in sgemms), default=float("nan")),
        "best": max((gflops(n, min) for n in sgemms), default=float("nan")),
    }
    print(
        f"\n{args.size}x{args.size}, {gflop:.1f} GFLOP per image (FlopCounterMode); "
        f"{args.repeats} interleaved repetitions after 1 warm-up each; 1-minute load "
        f"average {min(loads):.2f}–{max(loads):.2f} over the timed loop "
        f"({loads[0]:.2f} at its start, {loads[-1]:.2f} at its end); other processes used "
        f"{min(busy):.2f}–{max(busy):.2f} cores per repetition (median "
        f"{statistics.median(busy):.2f}; steal at most "
        f"{max(o['steal_cores'] for o in others):.2f}); {len(quiet)} of {args.repeats} "
        f'repetitions were quiet (others < {QUIET} cores). "median" is over all '
        'repetitions, "best" the fastest one (closest to an idle machine).\n'
    )
    print(
        "| cell | batch / n | median s | min–max s | images/s (median) | GFLOP/s median / best "
        "| of peak, median / best |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = []
    for name in names:
        label, _, _ = name.partition("|")
        size_or_batch, _, _ = cells[name]
        med, best = statistics.median(seconds[name]), min(seconds[name])
        g_med, g_best = gflops(name, statistics.median), gflops(name, min)
        per_s = "" if name.startswith("sgemm") else f"{size_or_batch / med:.2f}"
        print(
            f"| {label} | {size_or_batch} | {med:.3f} | {best:.3f}–{max(seconds[name]):.3f} "
            f"| {per_s} | {g_med:.0f} / {g_best:.0f} "
            f"| {g_med / peak['median']:.0%} / {g_best / peak['best']:.0%} |"
        )
        results.append({"cell": label, "batch_or_n": size_or_batch, "seconds": seconds[name],
                        "median_s": med, "best_s": best, "gflops_median": g_med,
                        "gflops_best": g_best, "fraction_of_peak_median": g_med / peak["median"],
                        "fraction_of_peak_best": g_best / peak["best"]})  # fmt: skip
    ratios = []
    for name in names:
        if name.startswith("ONNX Runtime"):
            batch = name.partition("|")[2]
            ours = seconds[f"PyTorch eager FP32|{batch}"]
            paired = [t / o for t, o in zip(ours, seconds[name], strict=True)]
            calm = [paired[r] for r in quiet]
            ratios.append({"batch": int(batch), "median": statistics.median(paired),
                           "min": min(paired), "max": max(paired),
                           "quiet": statistics.median(calm) if calm else float("nan"),
                           "best": min(ours) / min(seconds[name])})  # fmt: skip
    print(
        "\n| ONNX Runtime speed-up over PyTorch eager | batch | median of the repetitions' "
        "ratios | their min–max | median, quiet repetitions | best / best |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for q in ratios:
        print(f"| same repetition | {q['batch']} | {q['median']:.2f}× | "
              f"{q['min']:.2f}–{q['max']:.2f}× | {q['quiet']:.2f}× | {q['best']:.2f}× |")  # fmt: skip
    if args.json:
        settings = vars(args) | {"gflop_per_image": gflop, "provider": provider}
        record = {"machine": ident, "settings": settings, "load_average": loads, "others": others,
                  "peak_gflops": peak, "results": results, "ratios": ratios}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
