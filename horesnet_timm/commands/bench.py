"""`horesnet bench`: what a stacking scheme costs against plain Euler stacking at the same depth.

Every model in one run, every figure also as a ratio to the Euler model of the same depth in the
same mode. Modes: `eager` (PyTorch), `compile` (torch.compile, default options, fullgraph) and
`onnxruntime` (the model exported as `horesnet export` does, run by onnxruntime; inference only).

  train    one training step: forward, cross-entropy, backward, SGD (momentum 0.9) at --train-batch
  infer    one forward pass in eval mode under torch.inference_mode at --infer-batch; onnxruntime
           runs at --ort-batch, beside PyTorch eager at the same batch (`vs eager`)
  memory   peak memory of one training step and of one inference pass, measured as measure.py
           says. CPU: a fresh process per probe (with measure.MEMORY_ENV), which builds the model
           (eager: nothing run yet; compile: compiled and run twice; onnxruntime: the session
           made) and reports the peak growth of one run. CUDA: in this process, after warm-up.

Times are medians over --repeats rounds after --warmup runs of each; a round runs every model once
(interleaved), so load from other processes falls on all of them alike. On CUDA the defaults are
batch 256, bf16 autocast, channels_last; the same flags exist on CPU.
"""
import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import numpy as np
import timm
import torch
import torch._dynamo.config as dynamo
import torch.nn.functional as F

from .. import __version__
from ..errors import HoresnetError, UsageError
from ..fileio import atomic_output, describe_os_error, output_directory
from ..measure import MEMORY_ENV, cpu_name, cuda_peak_growth, interleaved, peak_growth
from ..onnx_export import export_onnx
from .tour import format_table

__all__ = ['MODELS', 'QUICK_MODELS', 'ORT_VARIANTS', 'machine_line', 'add_arguments', 'run']

MODELS = ['horesnet58_euler', 'horesnet58_midpoint', 'horesnet58_rk4', 'horesnet58_rk8', 'horesnet58_lm',
          'horesnet86_euler', 'horesnet86_midpoint', 'horesnet86_rk8', 'horesnet86_lm']
QUICK_MODELS = ['horesnet10_euler', 'horesnet10_rk4']
MODES = ('eager', 'compile', 'onnxruntime')
# onnxruntime configurations: (graph optimisation level, precision of the exported graph, what it is)
ORT_VARIANTS = {
    'raw': ('ORT_DISABLE_ALL', 'fp32', 'the exported graph as written, no graph optimisation'),
    'basic': ('ORT_ENABLE_BASIC', 'fp32', 'constant folding, redundant-node removal'),
    'extended': ('ORT_ENABLE_EXTENDED', 'fp32', '+ Conv/Add/activation fusions, NCHW kernels'),
    'all': ('ORT_ENABLE_ALL', 'fp32', '+ layout: convs in the blocked NCHWc layout (MLAS)'),
    'fp16': ('ORT_ENABLE_ALL', 'fp16', 'the model exported in half precision'),
    'int8': ('ORT_ENABLE_ALL', 'int8', 'static QDQ int8 (per-channel weights), calibrated on synthetic images'),
}


def machine_line(device: str, threads: int) -> str:
    """One line naming the machine and every version that shapes the figures."""
    parts = [platform.platform(), f'{cpu_name()}, {os.cpu_count()} CPUs, {threads} threads']
    if device == 'cuda':
        parts.append(f'{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, '
                     f'cuDNN {torch.backends.cudnn.version()})')
    try:
        with open('/proc/meminfo') as f:
            parts.append(f'{int(f.readline().split()[1]) / 2 ** 20:.0f} GiB RAM')
    except OSError:
        pass
    parts += [f'python {platform.python_version()}', f'torch {torch.__version__}', f'timm {timm.__version__}']
    for module in ('onnxruntime', 'onnx'):
        try:
            parts.append(f'{module} {__import__(module).__version__}')
        except ImportError:
            pass
    parts.append(f'horesnet-timm {__version__}')
    if hasattr(os, 'getloadavg'):
        parts.append(f'load average {os.getloadavg()[0]:.2f} at start')
    parts.append(time.strftime('%Y-%m-%d %H:%M'))
    return ' | '.join(parts)


# --- building what is timed ---------------------------------------------------------------------

def _build(name: str, args):
    model = timm.create_model(name).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _compile(model):
    """torch.compile(model, fullgraph=True), refusing to fall back to eager: every model compiled in one
    process recompiles the same forward, and past dynamo's recompile limit (8) it would quietly run eager."""
    for limit in ('recompile_limit', 'accumulated_recompile_limit', 'cache_size_limit', 'accumulated_cache_size_limit'):
        if hasattr(dynamo, limit):
            setattr(dynamo, limit, 100_000)
    for fail in ('fail_on_recompile_limit_hit', 'fail_on_cache_limit_hit'):
        if hasattr(dynamo, fail):
            setattr(dynamo, fail, True)
    return torch.compile(model, fullgraph=True)


def _batch(args, n: int, model):
    shape = (n, *model.pretrained_cfg['input_size'][:1], args.img_size, args.img_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (n,), generator=g).to(args.device)
    return x, y


def _autocast(args):
    return torch.autocast(args.device, dtype=torch.bfloat16) if args.amp == 'bf16' else nullcontext()


def _train_step(model, args, compiled=None) -> Callable[[], None]:
    """One SGD step of `compiled` (or `model`) on a fixed batch; a small learning rate keeps it finite."""
    run = model if compiled is None else compiled  # a compiled module forwards len() and bool() to the model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x, y = _batch(args, args.train_batch, model)

    def step():
        model.train()
        with _autocast(args):
            loss = F.cross_entropy(run(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _infer(model, args, batch: int, compiled=None) -> Callable[[], None]:
    run = model if compiled is None else compiled
    x, _ = _batch(args, batch, model)

    def infer():
        model.eval()
        with torch.inference_mode(), _autocast(args):
            run(x)
    return infer


def _export(model, path: str, precision: str):
    export_onnx(copy.deepcopy(model).cpu().float().eval(), path, precision=precision, check=False)


def _ort_session(path: str, variant: str, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # idle onnxruntime threads spin after each run, which would take the cores from the PyTorch run
    # timed next: interleaved timing needs them asleep
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_VARIANTS[variant][0])
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _ort_feed(session, x):
    inp = session.get_inputs()[0]
    dtype = np.float16 if 'float16' in inp.type else np.float32
    return {inp.name: x.detach().float().cpu().numpy().astype(dtype)}


# --- timing ------------------------------------------------------------------------------------

# --- memory probes (CPU): one fresh process each -----------------------------------------------

def _probe(args) -> Dict:
    """Run in a fresh process: peak RSS growth of one run of `args.probe` (train / infer)."""
    torch.set_num_threads(args.threads)
    kind, mode = args.probe, args.modes[0]
    if mode.startswith('ort'):
        session = _ort_session(args.onnx, args.ort_variant, args.threads)
        model = timm.create_model(args.models[0])
        feed = _ort_feed(session, _batch(args, args.ort_batch, model)[0])
        del model

        def fn():
            session.run(None, feed)
    else:
        model = _build(args.models[0], args)
        compiled = _compile(model) if mode == 'compile' else None
        fn = _train_step(model, args, compiled) if kind == 'train' else _infer(model, args, args.infer_batch, compiled)
        if compiled is not None:
            fn(), fn()  # compile (train and eval are separate graphs), and settle
    return dict(growth_mib=peak_growth(fn) / 2 ** 20)


def _probe_in_process(name: str, mode: str, kind: str, args, onnx_path: str = '', variant: str = 'all') -> Dict:
    cmd = [sys.executable, '-m', 'horesnet_timm.commands.bench', '--probe', kind, '--models', name, '--modes', mode,
           '--threads', str(args.threads), '--img-size', str(args.img_size), '--train-batch', str(args.train_batch),
           '--infer-batch', str(args.infer_batch), '--ort-batch', str(args.ort_batch), '--amp', args.amp,
           '--device', args.device, '--ort-variant', variant]
    if args.channels_last:
        cmd.append('--channels-last')
    if onnx_path:
        cmd += ['--onnx', onnx_path]
    env = dict(os.environ, **MEMORY_ENV)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'memory probe {name} {mode} {kind} failed:\n{done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run ------------------------------------------------------------------------------------

def _ratio(row: Dict, euler: Optional[Dict], key: str):
    if euler is None or row.get(key) is None or not euler.get(key):
        return None
    return row[key] / euler[key]


def _median_ms(times: List[float]) -> float:
    return statistics.median(times) * 1e3


def measure_mode(mode: str, args, log) -> List[Dict]:
    """Rows (one per model) for one mode: medians, images/s, peak memory."""
    rows = []
    ort_variant = mode.split(':', 1)[1] if mode.startswith('ort:') else 'all'
    is_ort = mode == 'onnxruntime' or mode.startswith('ort:')
    with tempfile.TemporaryDirectory(prefix='horesnet-bench-') as work:
        cases, models, paths = {}, {}, {}
        for name in args.models:
            model = _build(name, args)
            models[name] = model
            if is_ort:
                precision = ORT_VARIANTS[ort_variant][1]
                paths[name] = os.path.join(work, f'{name}-{precision}.onnx')
                start = time.perf_counter()
                _export(model, paths[name], precision)
                log(f'  exported {name} ({precision}) in {time.perf_counter() - start:.0f} s')
                session = _ort_session(paths[name], ort_variant, args.threads)
                x, _ = _batch(args, args.ort_batch, model)
                feed = _ort_feed(session, x)
                cases[(name, 'ort')] = (lambda s=session, f=feed: s.run(None, f))
                cases[(name, 'eager')] = _infer(model, args, args.ort_batch)
            else:
                compiled = _compile(model) if mode == 'compile' else None
                cases[(name, 'train')] = _train_step(model, args, compiled)
                cases[(name, 'infer')] = _infer(model, args, args.infer_batch, compiled)
        flat = {f'{name} {what}': fn for (name, what), fn in cases.items()}
        times = {key: t['wall'] for key, t in interleaved(flat, args.repeats, args.warmup, args.device == 'cuda', log).items()}
        peaks: Dict[str, float] = {}
        # on CPU a compile-mode probe compiles the model again in a fresh process, twice per model: the
        # memory of compiled code is measured on CUDA only, where it is read in this process
        if args.memory and (mode != 'compile' or args.device == 'cuda'):
            for name in args.models:
                kinds = ('infer',) if is_ort else ('train', 'infer')
                for kind in kinds:
                    if args.device == 'cuda':
                        peaks[f'{name} {kind}'] = cuda_peak_growth(cases[(name, kind)]) / 2 ** 20
                    else:
                        probe_mode = f'ort:{ort_variant}' if is_ort else mode
                        peaks[f'{name} {kind}'] = _probe_in_process(
                            name, probe_mode, kind, args, paths.get(name, ''), ort_variant)['growth_mib']
                    log(f'  memory {name} {kind}: {peaks[f"{name} {kind}"]:.0f} MiB')
        for name in args.models:
            model = models[name]
            row = dict(model=name, scheme=model.scheme, depth=model.depth, mode=mode)
            if is_ort:
                row.update(batch=args.ort_batch, infer_ms=_median_ms(times[f'{name} ort']),
                           eager_ms=_median_ms(times[f'{name} eager']))
                row['vs_eager'] = row['infer_ms'] / row['eager_ms']
                row['infer_img_s'] = args.ort_batch / row['infer_ms'] * 1e3
                row['infer_mib'] = peaks.get(f'{name} infer')
                row['times'] = dict(ort=times[f'{name} ort'], eager=times[f'{name} eager'])
            else:
                row.update(train_ms=_median_ms(times[f'{name} train']), infer_ms=_median_ms(times[f'{name} infer']))
                row['train_img_s'] = args.train_batch / row['train_ms'] * 1e3
                row['infer_img_s'] = args.infer_batch / row['infer_ms'] * 1e3
                row['train_mib'] = peaks.get(f'{name} train')
                row['infer_mib'] = peaks.get(f'{name} infer')
                row['times'] = dict(train=times[f'{name} train'], infer=times[f'{name} infer'])
            rows.append(row)
    for row in rows:
        euler = next((r for r in rows if r['depth'] == row['depth'] and r['scheme'] == 'euler'), None)
        for key in ('train_ms', 'infer_ms', 'train_mib', 'infer_mib'):
            if key in row:
                row[key.replace('_ms', '_x').replace('_mib', '_mem_x')] = _ratio(row, euler, key)
    return rows


def _cell(value, fmt: str) -> str:
    return '-' if value is None else format(value, fmt)


def tables(rows: List[Dict], markdown: bool) -> str:
    """One table per mode; `xE` columns are ratios to the Euler model of the same depth and mode."""
    out = []
    for mode in dict.fromkeys(r['mode'] for r in rows):
        group = [r for r in rows if r['mode'] == mode]
        if 'train_ms' in group[0]:
            body = [{'model': r['model'], 'depth': r['depth'], 'train ms': _cell(r['train_ms'], '.1f'),
                     'train xE': _cell(r['train_x'], '.3f'), 'train img/s': _cell(r['train_img_s'], '.1f'),
                     'infer ms': _cell(r['infer_ms'], '.1f'), 'infer xE': _cell(r['infer_x'], '.3f'),
                     'infer img/s': _cell(r['infer_img_s'], '.1f'),
                     'train MiB': _cell(r['train_mib'], '.0f'), 'train mem xE': _cell(r['train_mem_x'], '.2f'),
                     'infer MiB': _cell(r['infer_mib'], '.0f'), 'infer mem xE': _cell(r['infer_mem_x'], '.2f')}
                    for r in group]
        else:
            body = [{'model': r['model'], 'depth': r['depth'], 'batch': r['batch'],
                     'ort ms': _cell(r['infer_ms'], '.1f'), 'infer xE': _cell(r['infer_x'], '.3f'),
                     'img/s': _cell(r['infer_img_s'], '.1f'), 'eager ms': _cell(r['eager_ms'], '.1f'),
                     'vs eager': _cell(r['vs_eager'], '.3f'), 'infer MiB': _cell(r['infer_mib'], '.0f'),
                     'infer mem xE': _cell(r['infer_mem_x'], '.2f')} for r in group]
        out.append(f'mode: {mode}\n' + format_table(body, markdown=markdown))
    return '\n\n'.join(out)


def chart(rows: List[Dict], path: str, title: str) -> None:
    """Ratios to Euler (same depth, same mode) of every non-Euler model: one panel per figure."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [('train_x', 'training step time'), ('infer_x', 'inference latency'),
              ('train_mem_x', 'training peak memory'), ('infer_mem_x', 'inference peak memory')]
    models = list(dict.fromkeys(r['model'] for r in rows if r['scheme'] != 'euler'))
    modes = list(dict.fromkeys(r['mode'] for r in rows))
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), constrained_layout=True)
    width = 0.8 / max(len(modes), 1)
    for ax, (key, label) in zip(axes.flat, panels):
        missing = []
        for m, mode in enumerate(modes):
            values = [next((r.get(key) for r in rows if r['model'] == name and r['mode'] == mode), None)
                      for name in models]
            xs = [i + (m - (len(modes) - 1) / 2) * width for i in range(len(models))]
            bars = ax.bar([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None],
                          width, label=mode)
            ax.bar_label(bars, fmt='%.2f', fontsize=6, padding=1)
            if all(v is None for v in values):
                missing.append(mode)
        ax.axhline(1.0, color='k', linewidth=0.8, linestyle='--')
        ax.set_xticks(range(len(models)), [n.replace('horesnet', '') for n in models], rotation=30, fontsize=8)
        ax.set_title(f'{label} / Euler at the same depth', fontsize=10)
        if missing:  # an empty panel (or a mode without bars) is "not measured", not "no cost"
            ax.text(0.5, 0.5 if len(missing) == len(modes) else 0.97, 'not measured' + ('' if len(missing) == len(modes) else f': {", ".join(missing)}')
                    + ('\n(--no-memory or --quick)' if 'mem' in key and len(missing) == len(modes) else ''),
                    transform=ax.transAxes, ha='center', va='center' if len(missing) == len(modes) else 'top',
                    fontsize=10, color='#888888')
        ax.set_ylim(bottom=0)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle('\n'.join(textwrap.fill(line, 180) for line in title.split('\n')), fontsize=7)
    fig.savefig(path, dpi=120, format='png')
    plt.close(fig)


def _write(folder: str, device: str, rows: List[Dict], command: str, machine: str, settings: str) -> None:
    """bench-DEVICE.md (command, machine, settings, tables), .json (every timing) and .png (the ratios)."""
    stem = os.path.join(folder, f'bench-{device}')
    with atomic_output(stem + '.md') as tmp:
        tmp.write_text(f'`{command}`\n\n{machine}\n\n{settings}\n\n{tables(rows, True)}\n')
    with atomic_output(stem + '.json') as tmp:
        tmp.write_text(json.dumps(dict(command=command, machine=machine, settings=settings, rows=rows), indent=1))
    with atomic_output(stem + '.png') as tmp:
        chart(rows, tmp, f'{command}\n{machine}')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--models', nargs='+', help=f'models to compare (default: {" ".join(MODELS)}; each '
                                                    f'scheme is compared with the Euler model of its depth)')
    parser.add_argument('--modes', nargs='+', help='eager, compile, onnxruntime, or ort:VARIANT for an '
                                                   f'onnxruntime configuration ({", ".join(ORT_VARIANTS)}); default: '
                                                   'all three on CPU, eager and compile on CUDA')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, help='timed rounds, median reported (default 7; --quick 2)')
    parser.add_argument('--warmup', type=int, help='untimed runs of each case first (default 2; --quick 1)')
    parser.add_argument('--train-batch', type=int, help='default 16 (CPU), 256 (CUDA)')
    parser.add_argument('--infer-batch', type=int, help='default 64 (CPU), 256 (CUDA)')
    parser.add_argument('--ort-batch', type=int, help='onnxruntime and its eager reference (default 32)')
    parser.add_argument('--img-size', type=int, default=32)
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='PyTorch and onnxruntime threads')
    parser.add_argument('--amp', choices=('none', 'bf16'), help='autocast (default: bf16 on CUDA, none on CPU)')
    parser.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                        help='channels_last model and input (default: on for CUDA)')
    parser.add_argument('--memory', action=argparse.BooleanOptionalAction, default=None,
                        help='measure peak memory (default: on, off with --quick)')
    parser.add_argument('--quick', action='store_true',
                        help=f'seconds, not an hour: {" ".join(QUICK_MODELS)}, eager, tiny batches, 2 rounds, '
                             f'no memory probes (flags given explicitly still apply)')
    parser.add_argument('--markdown', action='store_true', help='print the tables as Markdown')
    parser.add_argument('--output', help='folder for bench-DEVICE.md (machine line, command, tables), '
                                         '.json (every timing) and .png (the ratios as a chart)')
    # internal: one memory probe in a fresh process
    parser.add_argument('--probe', choices=('train', 'infer'), help=argparse.SUPPRESS)
    parser.add_argument('--onnx', help=argparse.SUPPRESS)
    parser.add_argument('--ort-variant', default='all', help=argparse.SUPPRESS)


def _given(value, default):
    return default if value is None else value  # 0 is a value given, which _check refuses


def _defaults(args) -> None:
    cuda = args.device == 'cuda'
    quick = args.quick
    args.models = args.models or (QUICK_MODELS if quick else MODELS)
    args.modes = args.modes or (['eager'] if quick else ['eager', 'compile'] if cuda else list(MODES))
    args.repeats = _given(args.repeats, 2 if quick else 7)
    args.warmup = _given(args.warmup, 1 if quick else 2)
    args.train_batch = _given(args.train_batch, 2 if quick else 256 if cuda else 16)
    args.infer_batch = _given(args.infer_batch, 4 if quick else 256 if cuda else 64)
    args.ort_batch = _given(args.ort_batch, 4 if quick else 32)
    args.amp = args.amp or ('bf16' if cuda else 'none')
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    args.memory = (not quick) if args.memory is None else args.memory


def _check(args) -> None:
    for mode in args.modes:
        if mode not in MODES and not (mode.startswith('ort:') and mode[4:] in ORT_VARIANTS):
            raise UsageError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}, "
                             f"{', '.join('ort:' + v for v in ORT_VARIANTS)}")
        if args.device == 'cuda' and (mode == 'onnxruntime' or mode.startswith('ort:')):
            raise UsageError('onnxruntime is measured on CPU only (its CPU execution provider); '
                             'drop it from --modes on CUDA')
    if args.warmup < 0:
        raise UsageError('--warmup must be at least 0')
    for flag in ('repeats', 'train_batch', 'infer_batch', 'ort_batch', 'threads', 'img_size'):
        if getattr(args, flag) < 1:
            raise UsageError(f'--{flag.replace("_", "-")} must be at least 1')
    if args.threads > (os.cpu_count() or 1):  # more OpenMP threads than CPUs only wait on each other, or fail
        raise UsageError(f'--threads {args.threads}: this machine has {os.cpu_count()} CPUs')
    unknown = [m for m in args.models if m not in timm.list_models('horesnet*')]
    if unknown:
        raise UsageError(f'--models {unknown[0]!r}: bench compares horesnet models (each scheme against Euler '
                         f'stacking); see `horesnet tour` for their names, and `horesnet restack --benchmark` for '
                         f'other timm networks')
    if args.device == 'cuda':
        if not torch.cuda.is_available():
            raise HoresnetError('--device cuda: no CUDA device is available to PyTorch here')


def run(args) -> int:
    _defaults(args)
    if args.probe:
        print(json.dumps(_probe(args)))
        return 0
    _check(args)
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    machine = machine_line(args.device, args.threads)
    command = 'horesnet ' + ' '.join(getattr(args, 'argv', None) or ['bench'])
    settings = (f'train batch {args.train_batch}, inference batch {args.infer_batch}, onnxruntime batch '
                f'{args.ort_batch}, {args.img_size}x{args.img_size}, amp {args.amp}, '
                f'{"channels_last" if args.channels_last else "NCHW"}, median of {args.repeats} interleaved rounds '
                f'after {args.warmup} warm-up runs')
    print(machine)
    print(settings, flush=True)
    if args.output:  # refuse a bad folder before an hour of work, but make it only when there is a table to write
        if os.path.exists(args.output) and not os.path.isdir(args.output):
            raise HoresnetError(f"--output '{args.output}' is a file; give a folder")
        output_directory(os.path.join(args.output, 'bench') if os.path.isdir(args.output) else args.output)
    rows = []
    started = time.perf_counter()
    for mode in args.modes:
        log(f'{mode}:')
        mode_rows = measure_mode(mode, args, log)
        rows += mode_rows
        print('\n' + tables(mode_rows, args.markdown), flush=True)
        if args.output:  # rewritten after every mode, so a long run that fails late keeps what it measured
            try:
                os.makedirs(args.output, exist_ok=True)
            except OSError as e:
                raise HoresnetError(f"cannot create the output folder '{args.output}': "
                                    f"{describe_os_error(e, False)}") from e
            _write(args.output, args.device, rows, command, machine,
                   f'{settings}; wall time {time.perf_counter() - started:.0f} s')
    if args.output:
        stem = os.path.join(args.output, f'bench-{args.device}')
        print(f'\nwrote {stem}.md, {stem}.json, {stem}.png')
    return 0


if __name__ == '__main__':  # a memory probe, started by `horesnet bench` in a fresh process
    _parser = argparse.ArgumentParser()
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
