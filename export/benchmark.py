#!/usr/bin/env python3
"""CPU latency of onnxruntime vs PyTorch eager, before and after graph optimisation.

    python export/benchmark.py [--models horesnet58_euler ...] [--batches 1 32] [--repeats 10] [--markdown]

For each model: export it (fp32, dynamic batch, as `horesnet export`), then time in one process,
interleaved (one run of each variant per round, so load from other processes hits all alike),
the median over rounds after two warm-up runs of:
  eager    PyTorch, eval mode, torch.inference_mode()
  ort-raw  onnxruntime running the exported graph as written (graph optimisations off)
  ort      onnxruntime with all its graph optimisations (Conv+BN / Conv+ReLU / Add fusion, NCHWc layout)
The exported graph is already simplified by the exporter (constant folding, BatchNorm folded into
the conv before it where the sub-network's order allows; see horesnet_timm/onnx_export.py).
Both runtimes get the same number of threads. Not a test: figures depend on the machine.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import onnx
import onnxruntime as ort
import timm
import torch

import horesnet_timm
from horesnet_timm.onnx_export import export_onnx
from horesnet_timm.tour import format_table

MODELS = ['horesnet58_euler', 'horesnet58_midpoint', 'horesnet58_rk4', 'horesnet58_rk8']


def session(path: str, threads: int, optimise: bool, save_to: str = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # idle onnxruntime threads spin for a while after each run, which would steal the cores from the
    # eager run timed next: interleaved timing needs them asleep
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if save_to:
        options.optimized_model_filepath = save_to
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def median_ms(variants: dict, repeats: int) -> dict:
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn(), fn()  # warm-up: allocations, oneDNN / MLAS kernel selection
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def bench(name: str, batches, repeats: int, threads: int, work: str) -> list:
    model = timm.create_model(name).eval()
    path = os.path.join(work, f'{name}.onnx')
    export_onnx(model, path, check=False)
    fused = path + '.ort-optimised.onnx'
    raw, opt = session(path, threads, False), session(path, threads, True, save_to=fused)
    nodes = f'{len(onnx.load(path).graph.node)} -> {len(onnx.load(fused).graph.node)}'
    rows = []
    for b in batches:
        x = torch.randn(b, *model.pretrained_cfg['input_size'])
        feed = {'input': x.numpy()}
        with torch.inference_mode():
            ms = median_ms({'eager': lambda: model(x), 'ort-raw': lambda: raw.run(None, feed),
                            'ort': lambda: opt.run(None, feed)}, repeats)
        rows.append(dict(model=name, scheme=model.scheme, batch=b, eager_ms=ms['eager'], ort_raw_ms=ms['ort-raw'],
                         ort_ms=ms['ort'], raw_ratio=ms['ort-raw'] / ms['eager'], ratio=ms['ort'] / ms['eager'],
                         graph_nodes=nodes))
        print(format_table(rows[-1:], floats='.2f').splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=MODELS)
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 32])
    parser.add_argument('--repeats', type=int, default=10, help='timed rounds per batch (median reported)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='threads for both runtimes')
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'{platform.platform()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs, '
          f'{args.threads} threads | python {platform.python_version()} | torch {torch.__version__} | '
          f'onnxruntime {ort.__version__} | onnx {onnx.__version__} | timm {timm.__version__} | '
          f'horesnet-timm {horesnet_timm.__version__} | median of {args.repeats} interleaved rounds')
    with tempfile.TemporaryDirectory() as work:
        rows = [row for name in args.models for row in bench(name, args.batches, args.repeats, args.threads, work)]
    print(format_table(rows, markdown=args.markdown, floats='.2f'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
