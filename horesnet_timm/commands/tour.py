"""`horesnet tour`: the schemes and the registered models, with their sizes measured live (the
tables in README; `--markdown` prints them as README has them)."""
import platform
from typing import Dict, List

import timm
import torch

from .. import __version__
from ..measure import model_stats
from ..schemes import get_scheme, list_schemes

__all__ = ['scheme_rows', 'model_rows', 'format_table', 'run_tour']


def scheme_rows() -> List[Dict]:
    return [dict(scheme=name, stages=s.stages, order=s.order, description=s.title)
            for name, s in ((n, get_scheme(n)) for n in list_schemes())]


def model_rows(pattern: str = 'horesnet*') -> List[Dict]:
    return [model_stats(name) for name in timm.list_models(pattern)]


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


def run_tour(markdown: bool = False) -> None:
    print(f'horesnet-timm {__version__} | timm {timm.__version__} | torch {torch.__version__} | '
          f'python {platform.python_version()} | {platform.machine()}\n')
    print('Stacking schemes (exact Butcher tableaus; orders proven by tests/test_schemes.py)')
    print(format_table(scheme_rows(), markdown), end='\n\n')
    print('Registered models (params counted, GMACs = conv + linear multiply-adds at the default input size)')
    print(format_table(model_rows(), markdown, floats='.2f'))


def add_arguments(parser) -> None:
    parser.add_argument('--markdown', action='store_true', help='print tables as Markdown')


def run(args) -> int:
    run_tour(markdown=args.markdown)
    return 0
