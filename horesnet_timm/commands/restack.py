"""`horesnet restack BASE`: how a timm model restacks by a scheme (the plan, parameters and MACs against the
base) and, with --benchmark, a CPU timing of both. The restacking itself is the library's
(horesnet_timm.restacking); this module is its command."""
import argparse
import copy
import functools
import os
import platform
import statistics
from typing import Dict, Sequence

import timm
import torch
import torch.nn as nn

from ..errors import UsageError
from ..loading import LoadError
from ..measure import cpu_name, fix_mmap_threshold, interleaved, peak_growth
from ..restacking import _input_size, compare_cost, restack
from ..schemes import list_schemes
from .arguments import ModelKwargs, non_negative_int, positive_int

__all__ = ['benchmark', 'format_benchmark', 'add_arguments', 'run']


# --- CPU cost: time and peak memory of a training step and of inference ---

def benchmark(base: nn.Module, restacked: nn.Module, input_size: Sequence[int], batch_size: int = 8,
              repeats: int = 7, warmup: int = 2, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """A training step (forward, cross-entropy, backward, SGD step) and inference (eval, no_grad) of both
    models on CPU, measured as measure.py measures: medians of wall and CPU seconds over `repeats` interleaved
    rounds after `warmup`, then the peak memory growth of one call each.
    Returns {'base': {...}, 'restacked': {...}} with train_s, train_cpu_s, train_peak and the same for infer.
    """
    fix_mmap_threshold()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *input_size, generator=g)
    y = torch.randint(0, max(base.num_classes, 1), (batch_size,), generator=g)
    models = {'base': base, 'restacked': restacked}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    state = {k: copy.deepcopy(m.state_dict()) for k, m in models.items()}

    def train(key):
        model, opt = models[key], optimizers[key]
        model.train()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def infer(key):
        model = models[key].eval()
        with torch.no_grad():
            model(x)

    steps = (('train', train), ('infer', infer))
    cases = {(key, what): functools.partial(fn, key) for key in models for what, fn in steps}
    times = interleaved({f'{key} {what}': fn for (key, what), fn in cases.items()}, repeats, warmup)
    result = {key: {} for key in models}
    for (key, what), fn in cases.items():
        result[key][f'{what}_s'] = statistics.median(times[f'{key} {what}']['wall'])
        result[key][f'{what}_cpu_s'] = statistics.median(times[f'{key} {what}']['cpu'])
        result[key][f'{what}_peak'] = peak_growth(fn)
    for key, model in models.items():
        optimizers[key].zero_grad(set_to_none=True)
        model.load_state_dict(state[key])  # the steps changed the weights: give them back
    return result


def format_benchmark(result: Dict[str, Dict[str, float]]) -> str:
    a, b = result['base'], result['restacked']
    resolved = lambda v: v is not None and v >= 2 ** 20  # peak growth below 1 MiB is within RSS's page noise
    mib = lambda v: f'{v / 2 ** 20:.1f} MiB' if resolved(v) else ('< 1 MiB' if v is not None else 'n/a')
    ratio = lambda u, v: f'{v / u:.3f}' if u and v is not None else 'n/a'
    mem_ratio = lambda u, v: ratio(u, v) if resolved(u) and resolved(v) else 'n/a'
    ms = lambda v: f'{v * 1e3:.1f} ms'
    rows = [('', 'base', 'restacked', 'ratio')]
    for what, label in (('train', 'training step'), ('infer', 'inference')):
        rows += [(f'{label}, wall', ms(a[f'{what}_s']), ms(b[f'{what}_s']), ratio(a[f'{what}_s'], b[f'{what}_s'])),
                 (f'{label}, CPU time', ms(a[f'{what}_cpu_s']), ms(b[f'{what}_cpu_s']),
                  ratio(a[f'{what}_cpu_s'], b[f'{what}_cpu_s'])),
                 (f'{label}, peak memory', mib(a[f'{what}_peak']), mib(b[f'{what}_peak']),
                  mem_ratio(a[f'{what}_peak'], b[f'{what}_peak']))]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: '  '.join(v.ljust(width[0]) if i == 0 else v.rjust(width[i]) for i, v in enumerate(r))
    return '\n'.join(line(r) for r in rows)


# --- the `horesnet restack` command ---

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('base', metavar='BASE',
                        help='a timm model name, e.g. resnet50, convnext_atto, vit_tiny_patch16_224')
    parser.add_argument('--scheme', default='rk4', choices=list_schemes(), metavar='SCHEME',
                        help=f'stacking scheme (default rk4): {", ".join(list_schemes())}')
    parser.add_argument('--learn-step-size', action='store_true', help='one learnable step size h per restacked block')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargs, metavar='KEY=VALUE',
                        help='create_model arguments of the base, e.g. num_classes=10 layers="(3, 4, 6, 3)"')
    parser.add_argument('--input-size', type=positive_int, nargs=3, metavar=('C', 'H', 'W'),
                        help="input size at which shapes and MACs are measured (default: the model's)")
    group = parser.add_argument_group('CPU benchmark')
    group.add_argument('--benchmark', action='store_true',
                       help='also time a training step and inference, and their peak memory, against the base '
                            '(random weights and data, interleaved repeats, medians)')
    group.add_argument('--batch-size', type=positive_int, help='benchmark batch (default 8)')
    group.add_argument('--repeats', type=positive_int, help='timed repeats per model (default 7)')
    group.add_argument('--warmup', type=non_negative_int, help='untimed repeats first (default 2)')
    group.add_argument('--threads', type=positive_int, help='torch threads, at most the CPU count (default: torch\'s '
                                                             'own)')


BENCHMARK_DEFAULTS = {'batch_size': 8, 'repeats': 7, 'warmup': 2}


def _check_benchmark_flags(args: argparse.Namespace) -> None:
    """The benchmark's flags apply to --benchmark only, and --threads to the CPUs there are; fills the defaults."""
    given = [k for k in (*BENCHMARK_DEFAULTS, 'threads') if getattr(args, k) is not None]
    if given and not args.benchmark:
        flags = ', '.join('--' + k.replace('_', '-') for k in given)
        raise UsageError(f'{flags} set{"s" * (len(given) == 1)} the benchmark: add --benchmark, or drop {flags}')
    if args.threads is not None and args.threads > (os.cpu_count() or 1):
        raise UsageError(f'--threads {args.threads}: this machine has {os.cpu_count()} CPUs')
    for key, value in BENCHMARK_DEFAULTS.items():
        setattr(args, key, value if getattr(args, key) is None else getattr(args, key))


def run(args: argparse.Namespace) -> int:
    _check_benchmark_flags(args)
    kwargs = dict(args.model_kwargs or {})
    if not timm.is_model(args.base):
        raise LoadError(f"unknown timm model '{args.base}'; timm.list_models() lists them")
    try:
        base = timm.create_model(args.base, device='meta', **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise LoadError(f'cannot build {args.base} with {kwargs}: {e}') from e
    restacked = restack(copy.deepcopy(base), args.scheme, args.learn_step_size, args.input_size)
    print(restacked.restack_plan.format())
    print()
    print(compare_cost(base, restacked, args.input_size))
    if args.benchmark:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        base = timm.create_model(args.base, **kwargs)
        restacked = restack(copy.deepcopy(base), args.scheme, args.learn_step_size, args.input_size)
        input_size = tuple(args.input_size or _input_size(base))
        try:
            result = benchmark(base, restacked, input_size, args.batch_size, args.repeats, args.warmup)
        except ValueError as e:
            if 'more than 1 value per channel' not in str(e):
                raise
            raise UsageError(f'--batch-size {args.batch_size} at {"x".join(map(str, input_size))}: a training step '
                             f'with BatchNorm needs more than one value per channel; give a batch of at least 2 or '
                             f'a larger --input-size') from None
        threads = torch.get_num_threads()
        print(f"\nCPU ({cpu_name()}, {threads} thread{'s' * (threads != 1)}), batch {args.batch_size} at "
              f"{'x'.join(map(str, input_size))}, medians of {args.repeats} interleaved repeats after {args.warmup} "
              f"warm-up; python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}")
        print(format_benchmark(result))
    return 0
