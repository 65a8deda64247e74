"""`horesnet draw SCHEME -o FILE`: a scheme block's data flow drawn from its Butcher tableau (diagram.py)."""
import argparse
from pathlib import Path

from ..diagram import FORMATS, draw_scheme
from ..errors import HoresnetError, UsageError
from ..fileio import atomic_output
from ..schemes import get_scheme

__all__ = ['add_arguments', 'run']


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('scheme', help='a scheme name: horesnet_timm.list_schemes()')
    parser.add_argument('-o', '--output', required=True, help='the drawing: .png, .svg or .pdf')


def run(args) -> int:
    suffix = Path(args.output).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"-o {args.output}: give a file ending in {', '.join(FORMATS)}")
    try:
        scheme = get_scheme(args.scheme)
    except ValueError as e:
        raise HoresnetError(str(e)) from None
    with atomic_output(args.output) as tmp:  # the format is given: the temporary name ends in .tmp
        edges = draw_scheme(scheme.name, str(tmp), fmt=suffix[1:])
    print(f'wrote {args.output}: {scheme.name}, {scheme.stages} stage{"s" * (scheme.stages > 1)}, {edges[0]} non-zero '
          f'a_ij, {edges[1]} non-zero b_i')
    return 0
