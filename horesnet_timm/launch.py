"""`horesnet run SCRIPT [ARGS...]`: run one of timm's scripts with our models registered.

timm's train.py imports plugins through `--device-modules`; validate.py, inference.py,
benchmark.py and onnx_export.py have no such option, so on their own they cannot find a horesnet
model. This runs the script as `__main__` (as `python SCRIPT ARGS...` would: same argv, the
script's folder first on sys.path) in a process where `horesnet_timm` is already imported.
We chose this over registering on every `import timm` (a .pth hook): that would make each Python
start import torch and change timm's registry for programs that never asked for it.
"""
import argparse
import os
import runpy
import sys


def add_arguments(parser) -> None:
    parser.add_argument('script', help="a timm script, e.g. validate.py, inference.py, benchmark.py")
    parser.add_argument('script_args', nargs=argparse.REMAINDER, help='its arguments, unchanged')


def run(args) -> int:
    import horesnet_timm  # noqa: F401  registers the models before the script looks them up
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        raise SystemExit(f"horesnet run: no script '{args.script}' (give the path of a timm script, "
                         f"e.g. <pytorch-image-models>/validate.py)")
    sys.argv = [script, *args.script_args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:  # what `python SCRIPT` would do with it
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0
