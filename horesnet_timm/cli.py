"""The `horesnet` command: one sub-command per module, and the one place errors become exit statuses.

Each module named in COMMANDS (horesnet_timm/commands/, and predict.py for the torch-free runner) defines
`add_arguments(parser)` and `run(args) -> int`. A command imports its own module only, so `horesnet --help`
and `horesnet predict` import no torch.

Exit statuses, for every sub-command: 0 success; 1 a failure with a cause the user can act on
(HoresnetError, a bad image, an operating-system error such as a full disk), printed as one line
without a traceback (`--debug` shows it); 2 a usage error (argparse's own status); 130 / 143 after
SIGINT / SIGTERM (129 after SIGHUP), once every partial output has been removed (outputs are written under
temporary names and renamed when complete; SIGTERM and SIGHUP are raised as SystemExit so that the clean-up
runs).
"""
import argparse
import importlib
import os
import signal
import sys
from typing import List, Optional

from .errors import HoresnetError, UsageError
from . import fileio
from .fileio import describe_os_error
from .predict import printable, quiet_on_broken_pipe, refuse_undecodable

# sub-command -> (module, one-line help)
COMMANDS = {
    'demo': ('horesnet_timm.commands.demo', 'train an HO-ResNet and its Euler twin on real data, compare them, export to '
                                   'ONNX, stage a Hub folder and reload it (the default command; no download, '
                                   'no GPU, minutes on a laptop CPU)'),
    'draw': ('horesnet_timm.commands.draw', "draw a scheme block's data flow from its Butcher tableau (.png, .svg)"),
    'tour': ('horesnet_timm.commands.tour', 'list the schemes and the registered models with their parameters and MACs, '
                                   'measured live'),
    'bench': ('horesnet_timm.commands.bench', 'time and memory of every scheme against Euler stacking at the same depth '
                                     '(eager, torch.compile, onnxruntime; CPU or CUDA), as a table and a chart'),
    'run': ('horesnet_timm.commands.run', "run a timm script (validate.py, inference.py, benchmark.py, ...) with the "
                                    "horesnet models registered"),
    'card': ('horesnet_timm.commands.card', 'render a Hugging Face Hub model card with measured stats'),
    'hub': ('horesnet_timm.commands.hub', 'publish weights on the Hugging Face Hub (push, publish-shipped)'),
    'export': ('horesnet_timm.commands.export', 'export a model to ONNX with its preprocessing metadata, verified '
                                            'against PyTorch in onnxruntime'),
    'restack': ('horesnet_timm.commands.restack', 'show how a timm model (resnet50, convnext_atto, ...) restacks by a scheme: '
                                         'runs, groups, remainders, params and MACs against the base'),
    'predict': ('horesnet_timm.predict', 'classify images with an exported ONNX file (onnxruntime, numpy and '
                                         'pillow only)'),
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """Every sub-command with its flags; with `only`, the flags of that sub-command alone (the others are listed
    but not imported)."""
    parser = argparse.ArgumentParser(prog='horesnet', description='HO-ResNet / LM-ResNet models for timm')
    parser.add_argument('--debug', action='store_true', help='show the traceback of a failure')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def _terminate(signum, frame):
    fileio.signalled = 128 + signum  # in case the exception below lands where Python swallows it
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


# optional dependencies -> the extra that installs them (pyproject.toml)
EXTRAS = {'onnx': 'onnx', 'onnxruntime': 'onnx', 'onnxscript': 'onnx', 'PIL': 'onnx', 'sklearn': 'demo',
          'matplotlib': 'demo'}


def _failure(e: BaseException) -> Optional[str]:
    """The one line to print for a failure the user can act on, or None for a bug."""
    if isinstance(e, HoresnetError):
        return str(e)
    if isinstance(e, ModuleNotFoundError) and (e.name or '').split('.')[0] in EXTRAS:
        return (f"this command needs {e.name.split('.')[0]}, which is not installed: "
                f"pip install 'horesnet-timm[{EXTRAS[e.name.split('.')[0]]}]'")
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
            "can't allocate memory" in str(e) or type(e).__name__ == 'OutOfMemoryError')):  # torch's CPU and CUDA
        return 'out of memory: use a smaller batch or input'
    if isinstance(e, OSError):
        return describe_os_error(e)
    return None


def refuse_output_over_input(args) -> None:
    """An output (`--output`, `--output-dir`) that is also a file or folder the command reads would be destroyed."""
    for out_name in ('output', 'output_dir'):
        out = getattr(args, out_name, None)
        if not isinstance(out, str) or not os.path.exists(out):
            continue
        inputs = {name: value for name, value in vars(args).items() if name not in (out_name, 'argv')}
        for name, value in inputs.items():
            for given in value if isinstance(value, list) else [value]:
                if isinstance(given, str) and os.path.exists(given) and os.path.samefile(given, out):
                    raise UsageError(f"'{out}' is both this command's --{out_name.replace('_', '-')} and its "
                                     f"{name.upper() if name == 'model' else '--' + name.replace('_', '-')}: writing "
                                     f"it would destroy what it reads; choose another output")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    asks_help = not {'-h', '--help'}.isdisjoint(argv)
    try:
        parser = build_parser(only=command or ('' if asks_help else 'demo'))  # no command: the demo
    except KeyboardInterrupt:  # while the command's libraries import
        print(f'horesnet {command or "demo"}: interrupted', file=sys.stderr)
        return 130
    if command != 'predict':  # the runner reads files under any name
        refuse_undecodable(parser, argv)
    args = parser.parse_args(argv)
    if args.command is None:
        argv = ['demo']
        args = parser.parse_args(argv)
    args.argv = argv  # the command line as typed, for records of how a result was made
    # SIGTERM and SIGHUP (a closed terminal) end the command as SIGINT does: partial outputs are removed
    fileio.signalled = None
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:  # a reader gone from stdout (`horesnet predict ... | head`) ends the command quietly
        refuse_output_over_input(args)
        status = quiet_on_broken_pipe(importlib.import_module(args.module).run, args)
        return status if fileio.signalled is None else fileio.signalled  # a signal whose exception was swallowed
    except KeyboardInterrupt:
        print(f'horesnet {args.command}: interrupted', file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        message = _failure(e)
        if message is None:
            message = (f'internal error ({type(e).__name__}: {e}); run `horesnet --debug {args.command} ...` for '
                       f'the traceback, and report it')
        print(f'horesnet {args.command}: error: {printable(message)}', file=sys.stderr, flush=True)
        return getattr(e, 'exit_code', 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        fileio.signalled = None  # the command is over: nothing left for the record to stop


if __name__ == '__main__':
    sys.exit(main())
