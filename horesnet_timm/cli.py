"""The `horesnet` command."""
import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='horesnet', description='HO-ResNet / LM-ResNet models for timm')
    commands = parser.add_subparsers(dest='command')
    tour = commands.add_parser('tour', help='list the schemes and models with measured sizes, run a training step '
                                            'per scheme (the default command; no download, no GPU)')
    tour.add_argument('--markdown', action='store_true', help='print tables as Markdown')
    tour.add_argument('--no-steps', dest='steps', action='store_false', help='skip the training steps')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in (None, 'tour'):
        from .tour import run_tour
        run_tour(markdown=getattr(args, 'markdown', False), steps=getattr(args, 'steps', True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
