"""Time to build `CxrMtClipModel(CxrMtClipConfig.tiny())` (issue 3 asks < 1 s), first build and median of the rest.

    python benchmarks/bench_tiny_build.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="optional JSON file for the figures")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    import torch

    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel

    import_s = time.perf_counter() - began
    torch.manual_seed(args.seed)
    times = []
    for _ in range(args.repeats + 1):
        began = time.perf_counter()
        CxrMtClipModel(CxrMtClipConfig.tiny())
        times.append(time.perf_counter() - began)
    first, rest = times[0], sorted(times[1:])
    median = rest[len(rest) // 2] if rest else first
    print(f"import cxr_mtclip (torch, transformers, timm, open_clip): {import_s:.2f} s")
    print(f"build CxrMtClipModel(CxrMtClipConfig.tiny()): first {first * 1000:.0f} ms, median of next "
          f"{args.repeats} {median * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; goal < 1 s: "
          f"{'MET' if max(times) < 1 else 'NOT MET'}")
    result = {"import_s": import_s, "first_build_s": first, "median_build_s": median, "max_build_s": max(times)}
    if args.output:
        from _bench_utils import machine_info, write_json

        write_json(args.output, {"benchmark": "tiny_build", "machine": machine_info(), "results": result})
    return result


if __name__ == "__main__":
    main()
