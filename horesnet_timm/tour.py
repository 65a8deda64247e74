"""A tour of the package that needs no download and no GPU: the schemes, the registered models with
their sizes measured live, and one training step per scheme."""
import platform
import time
from typing import Dict, List

import timm
import torch
from .schemes import get_scheme, list_schemes
from .stats import measure

__all__ = ['scheme_rows', 'model_rows', 'train_step_rows', 'format_table', 'run_tour']


def scheme_rows() -> List[Dict]:
    return [dict(scheme=name, stages=s.stages, order=s.order, description=s.title)
            for name, s in ((n, get_scheme(n)) for n in list_schemes())]


def model_rows(pattern: str = 'horesnet*') -> List[Dict]:
    return [measure(name) for name in timm.list_models(pattern)]


def train_step_rows(batch_size: int = 8, seed: int = 0) -> List[Dict]:
    """One SGD step per scheme on the paper's layout, at least 4 sub-networks deep, on a random CIFAR-sized batch."""
    rows = []
    for name in list_schemes():
        torch.manual_seed(seed)
        stages = get_scheme(name).stages
        layers = -(-4 // stages) * stages  # the smallest multiple of the scheme's stages >= 4
        model = timm.create_model('horesnet10_euler', scheme=name, layers=(layers,))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        with_grad = sum(p.grad is not None for p in model.parameters())
        opt.step()
        rows.append(dict(
            scheme=name, depth=model.depth, params_m=sum(p.numel() for p in model.parameters()) / 1e6,
            loss=loss.item(), grads=f'{with_grad}/{len(list(model.parameters()))}',
            ms=(time.perf_counter() - start) * 1e3,
        ))
    return rows


def format_table(rows: List[Dict], markdown: bool = False, floats: str = '.3f') -> str:
    cols = list(rows[0])
    cell = lambda v: format(v, floats) if isinstance(v, float) else str(v)
    body = [[cell(r[c]) for c in cols] for r in rows]
    if markdown:
        lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
        return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in body])
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
    fmt = lambda r: '  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
    return '\n'.join([fmt(cols), fmt(['-' * w for w in widths])] + [fmt(r) for r in body])


def run_tour(markdown: bool = False, steps: bool = True) -> None:
    from . import __version__
    print(f'horesnet-timm {__version__} | timm {timm.__version__} | torch {torch.__version__} | '
          f'python {platform.python_version()} | {platform.machine()}, {torch.get_num_threads()} threads\n')
    print('Stacking schemes (exact Butcher tableaus; orders proven by tests/test_schemes.py)')
    print(format_table(scheme_rows(), markdown), end='\n\n')
    print('Registered models (params counted, GMACs = conv + linear multiply-adds at the default input size)')
    print(format_table(model_rows(), markdown, floats='.2f'), end='\n\n')
    if steps:
        print('One SGD step per scheme (paper layout, >= 4 sub-networks, batch 8 at 32x32; ms of a single run)')
        print(format_table(train_step_rows(), markdown, floats='.2f'))


def add_arguments(parser) -> None:
    parser.add_argument('--markdown', action='store_true', help='print tables as Markdown')
    parser.add_argument('--no-steps', dest='steps', action='store_false', help='skip the training steps')


def run(args) -> int:
    run_tour(markdown=args.markdown, steps=args.steps)
    return 0
