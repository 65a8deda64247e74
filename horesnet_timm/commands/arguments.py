"""What the commands share on their command lines: value types (argparse `type=`), one per kind of number,
each refusal a usage error naming the value (predict.py keeps its own: it runs without the package); and
the model flags, named as in timm's train.py / validate.py, that every command taking a model reads
through the one loader (loading.load_model)."""
import argparse
import math

from timm.utils import ParseKwargs

from ..errors import UsageError
from ..loading import CROP_MODES, INTERPOLATIONS, Loaded, load_model

__all__ = ['positive_int', 'non_negative_int', 'positive_float', 'fraction', 'ModelKwargs', 'add_model_arguments',
           'load_from_args']


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {'a whole number' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive integer')
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{value} is not an integer >= 0')
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text} is not a positive number')
    return value


def fraction(text: str) -> float:
    """A number in (0, 1], such as a crop fraction."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'{value} is not in (0, 1]')
    return value


class ModelKwargs(argparse.Action):
    """timm's ParseKwargs (KEY=VALUE, values read as Python literals), imported when used; a usage error
    instead of a traceback for an item without '='."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if v and '=' not in v]
        if bad:
            raise argparse.ArgumentError(self, f"{bad[0]!r} is not KEY=VALUE (e.g. scheme=gill4)")
        ParseKwargs.__call__(self, parser, namespace, values, option_string)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL (or --model) plus timm's flags for weights, architecture and data."""
    parser.add_argument('model', nargs='?', metavar='MODEL',
                        help="registered name (timm.list_models('horesnet*')), hf-hub:org/name, local-dir:/path, "
                             "a timm train.py checkpoint, or a .safetensors file with a config.json beside it")
    group = parser.add_argument_group('model (flags as in timm train.py / validate.py)')
    group.add_argument('-m', '--model', dest='model_flag', metavar='MODEL', help='the same as MODEL')
    group.add_argument('--checkpoint', metavar='PATH', help='weights: a timm train.py checkpoint or a .safetensors file')
    group.add_argument('--pretrained', action='store_true', help="the registered name's published weights")
    group.add_argument('--no-ema', dest='use_ema', action='store_false',
                       help="a train.py checkpoint's state_dict, not its EMA weights (default: EMA when present)")
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargs, metavar='KEY=VALUE',
                       help='create_model arguments, e.g. scheme=gill4 layers="(8,)"')
    group.add_argument('--num-classes', type=non_negative_int, metavar='N', help='classifier size')
    group.add_argument('--in-chans', type=positive_int, metavar='N', help='input channels (default: from '
                                                                           '--input-size, as train.py)')
    group.add_argument('--gp', metavar='POOL', help='global pool type (avg, max, avgmax, ...)')
    group.add_argument('--input-size', type=positive_int, nargs=3, metavar=('C', 'H', 'W'), help='input size')
    group.add_argument('--img-size', type=positive_int, metavar='N', help='input height and width')
    group.add_argument('--mean', type=float, nargs='+', metavar='MEAN', help='normalisation mean per channel')
    group.add_argument('--std', type=float, nargs='+', metavar='STD', help='normalisation std per channel')
    group.add_argument('--crop-pct', type=fraction, help='centre-crop fraction')
    group.add_argument('--crop-mode', choices=CROP_MODES, help='crop mode')
    group.add_argument('--interpolation', choices=INTERPOLATIONS, help='resize interpolation')


def load_from_args(args: argparse.Namespace) -> Loaded:
    """load_model from the flags of add_model_arguments."""
    if args.model and args.model_flag and args.model != args.model_flag:
        raise UsageError(f"MODEL '{args.model}' and --model '{args.model_flag}' differ: give one")
    source = args.model or args.model_flag
    if source is None and args.checkpoint is None:
        raise UsageError('name a model: a registered name, hf-hub:org/name, local-dir:/path or a checkpoint file')
    if args.std is not None and any(s <= 0 for s in args.std):
        raise UsageError(f'--std must be positive, got {args.std}')
    model_args = dict(args.model_kwargs or {})
    for key, value in (('num_classes', args.num_classes), ('global_pool', args.gp)):
        if value is not None:
            model_args[key] = value
    in_chans = args.in_chans if args.in_chans is not None else args.input_size[0] if args.input_size else None
    if in_chans is not None:  # as train.py derives it
        model_args['in_chans'] = in_chans
    data_args = {k: getattr(args, k) for k in ('input_size', 'img_size', 'mean', 'std', 'crop_pct', 'crop_mode',
                                               'interpolation')}
    return load_model(source, args.checkpoint, model_args, data_args, args.pretrained, args.use_ema)
