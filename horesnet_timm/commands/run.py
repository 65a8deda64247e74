"""`horesnet run SCRIPT [ARGS...]`: run one of timm's scripts with our models registered.

timm's train.py imports plugins through `--device-modules`; validate.py, inference.py,
benchmark.py and onnx_export.py have no such option, so on their own they cannot find a horesnet
model. This runs the script as `__main__` (as `python SCRIPT ARGS...` would: same argv, the
script's folder first on sys.path) in a process where `horesnet_timm` is already imported.
We chose this over registering on every `import timm` (a .pth hook): that would make each Python
start import torch and change timm's registry for programs that never asked for it.

validate.py and inference.py rebuild the model from their own flags, not from the `--checkpoint`
they load, so a checkpoint trained with `--model-kwargs scheme=gill4` or on 1x28x28 images needs
every such flag repeated. Given a train.py checkpoint, the launcher adds the flags the script
accepts and the command line leaves out (--model, --num-classes, --in-chans, --model-kwargs,
--input-size, --mean, --std, ...) from what train.py recorded, says which, and refuses flags that
contradict the record (the same rule as every other command: loading.py). Published RGB weights
(`--model NAME.TAG --pretrained`) on a dataset of grey images get `--in-chans 1 --input-size 1 H W`.
"""
import argparse
import ast
import os
import runpy
import sys
import traceback
from typing import Dict, List, Optional

import timm

from ..checkpoint import checkpoint_meta
from ..errors import HoresnetError
from ..loading import refuse_conflicts


def add_arguments(parser) -> None:
    parser.add_argument('script', help="a timm script, e.g. validate.py, inference.py, benchmark.py")
    parser.add_argument('script_args', nargs=argparse.REMAINDER, help='its arguments, unchanged')


def _flag_values(argv: List[str], *names: str) -> Optional[List[str]]:
    """The values given to the first of `names` on a command line (`--x a b` or `--x=a`), None if absent."""
    for i, token in enumerate(argv):
        flag, eq, value = token.partition('=')
        if flag in names:
            if eq:
                return [value]
            values = []
            for item in argv[i + 1:]:
                if item.startswith('-') and not item.lstrip('-').replace('.', '', 1).isdigit():
                    break
                values.append(item)
            return values
    return None


def _recorded_flags(meta: Dict) -> Dict[str, List[str]]:
    """train.py's record as the flags timm's evaluation scripts take."""
    args = dict(meta['model_args'])
    flags = {'--model': [meta['arch']], '--num-classes': [str(args.pop('num_classes'))] if 'num_classes' in args
             else None, '--in-chans': [str(args.pop('in_chans'))], '--gp': [args.pop('global_pool')]
             if 'global_pool' in args else None}
    for key in ('bn_momentum', 'bn_eps'):  # not flags of the evaluation scripts; the weights do not depend on them
        args.pop(key, None)
    if args:
        flags['--model-kwargs'] = [f'{k}={v!r}' for k, v in args.items()]
    for key, value in meta.get('data_args', {}).items():
        if key != 'in_chans':
            flags['--' + key.replace('_', '-')] = [str(v) for v in value] if isinstance(value, (list, tuple)) \
                else [str(value)]
    return {k: v for k, v in flags.items() if v}


def _floats(values: List[str]) -> Optional[List[float]]:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None  # not numbers: the script's own parser says so


def _insert_after(argv: List[str], flag: str, items: List[str]) -> List[str]:
    """`argv` with `items` added to the values of `flag` (given as `--flag a b` or `--flag=a`)."""
    for i, token in enumerate(argv):
        if token == flag:
            return argv[:i + 1] + items + argv[i + 1:]
        if token.startswith(flag + '='):
            return argv[:i] + [flag, token[len(flag) + 1:]] + items + argv[i + 1:]
    return argv + [flag, *items]


def fill_from_checkpoint(script: str, argv: List[str]) -> List[str]:
    """`argv` plus the model and data flags of a train.py checkpoint given with --checkpoint."""
    checkpoint = _flag_values(argv, '--checkpoint')
    with open(script, encoding='utf-8', errors='replace') as f:
        source = f.read()
    if not checkpoint or "'--checkpoint'" not in source:
        return argv
    meta = checkpoint_meta(checkpoint[0])
    if 'model_args' not in meta:
        return argv  # no record: the script's own flags decide, as without the launcher
    model = _flag_values(argv, '--model', '-m')
    if model and model[0] != meta['arch']:
        raise HoresnetError(f"'{checkpoint[0]}' holds weights of {meta['arch']}, not {model[0]}: drop --model")
    given = {}
    for item in _flag_values(argv, '--model-kwargs') or []:
        key, _, value = item.partition('=')
        try:
            given[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            given[key] = value
    for flag, key in (('--num-classes', 'num_classes'), ('--in-chans', 'in_chans'), ('--gp', 'global_pool')):
        value = _flag_values(argv, flag)
        if value:
            given[key] = value[0] if key == 'global_pool' else int(value[0])
    if given:
        refuse_conflicts(meta['arch'], meta['model_args'], given, f"'{checkpoint[0]}' was trained as")
    recorded = _recorded_flags(meta)
    for flag in ('--mean', '--std'):
        value = _flag_values(argv, flag)
        if value and flag in recorded and _floats(value) != _floats(recorded[flag]):
            raise HoresnetError(f"'{checkpoint[0]}' was trained with {flag} {' '.join(recorded[flag])}; {flag} "
                                f"{' '.join(value)} would feed the weights other inputs. Drop {flag}")
    argv, added = list(argv), []
    for flag, values in recorded.items():
        names = {'--model': ('--model', '-m'), '--input-size': ('--input-size', '--img-size')}.get(flag, (flag,))
        if f"'{flag}'" not in source:
            continue
        if flag == '--model-kwargs' and _flag_values(argv, flag) is not None:
            # one --model-kwargs must hold them all (timm's parser keeps the last one given): the recorded
            # keys the user left out join theirs
            extra = [item for item in values if item.partition('=')[0] not in given]
            argv = _insert_after(argv, flag, extra)
            added += extra
        elif _flag_values(argv, *names) is None:
            argv += [flag, *values]
            added += [flag, *values]
    if added:
        print(f"horesnet run: from the train.py record in '{checkpoint[0]}': {' '.join(added)}", file=sys.stderr)
    return argv


# timm's torchvision datasets of grey images: their PIL images reach the transforms with one channel
GREY_DATASETS = ('torch/mnist', 'torch/fashion_mnist', 'torch/kmnist', 'torch/qmnist', 'torch/emnist')


def fill_for_grey_images(argv: List[str]) -> List[str]:
    """`argv` plus `--in-chans 1 --input-size 1 H W` when published RGB weights meet a dataset of grey images
    (timm's transforms would keep one channel and normalise it with three means)."""
    model, dataset = _flag_values(argv, '--model', '-m'), _flag_values(argv, '--dataset', '-d')
    if not (model and dataset and dataset[0] in GREY_DATASETS and '--pretrained' in argv
            and _flag_values(argv, '--input-size', '--img-size') is None and timm.is_model(model[0])):
        return argv
    cfg = timm.models.get_pretrained_cfg(model[0])
    if cfg is None or cfg.input_size[0] != 3 or (_flag_values(argv, '--in-chans') or ['1'])[0] != '1':
        return argv
    added = ([] if _flag_values(argv, '--in-chans') else ['--in-chans', '1']) + [
        '--input-size', '1', *map(str, cfg.input_size[1:])]
    print(f"horesnet run: {dataset[0]} gives grey images and {model[0]} takes RGB ones: {' '.join(added)} (timm "
          f"sums its first convolution over the colours, which reads a grey image as its RGB picture)", file=sys.stderr)
    return argv + added


def run(args) -> int:
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        raise HoresnetError(f"no script '{args.script}' (give the path of a timm script, e.g. "
                            f"<pytorch-image-models>/validate.py)")
    sys.argv = [script, *fill_for_grey_images(fill_from_checkpoint(script, args.script_args))]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:  # what `python SCRIPT` would do with it
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except Exception:  # the script's own failure: its traceback, as `python SCRIPT` would print it
        traceback.print_exc()
        return 1
    return 0
