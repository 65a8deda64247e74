"""The `horesnet` command: one sub-command per module.

Each module named in COMMANDS defines `add_arguments(parser)` and `run(args) -> int`, and keeps
its heavy imports inside `run`, so `horesnet --help` stays fast.
"""
import argparse
import importlib
import sys
from typing import List, Optional

# sub-command -> (module, one-line help)
COMMANDS = {
    'tour': ('horesnet_timm.tour', 'list the schemes and models with measured sizes and run a training step '
                                   'per scheme (the default command; no download, no GPU)'),
    'run': ('horesnet_timm.launch', "run a timm script (validate.py, inference.py, benchmark.py, ...) with the "
                                    "horesnet models registered"),
    'card': ('horesnet_timm.cards', 'render a Hugging Face Hub model card with measured stats'),
    'hub': ('horesnet_timm.hub', 'publish weights on the Hugging Face Hub (push)'),
    'export': ('horesnet_timm.onnx_export', 'export a model to ONNX with its preprocessing metadata, verified '
                                            'against PyTorch in onnxruntime'),
    'predict': ('horesnet_timm.predict', 'classify images with an exported ONNX file (onnxruntime, numpy and '
                                         'pillow only)'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='horesnet', description='HO-ResNet / LM-ResNet models for timm')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(['tour'])
    return importlib.import_module(args.module).run(args)


if __name__ == '__main__':
    sys.exit(main())
