"""`horesnet export MODEL -o FILE`: a model to ONNX with its preprocessing metadata, verified against PyTorch in
onnxruntime (onnx_export.py), with the parity table printed."""
import argparse
import json
import os
import sys
from typing import Dict, List

from ..errors import UsageError
from ..fileio import output_directory
from ..onnx_export import (DEFAULT_OPSET, DYNAMO_MIN_OPSET, FP32_TOL, MIN_AGREEMENT, MIN_OPSET, PRECISIONS, export_onnx,
                           opset_range)
from ..predict import list_images
from .arguments import add_model_arguments, load_from_args, positive_float, positive_int

__all__ = ['format_checks', 'add_arguments', 'run']


def format_checks(rows: List[Dict], precision: str = 'fp32', tol: float = FP32_TOL) -> str:
    """verify's rows as a table, and the rule the file passed by (which rows it reads)."""
    lines = [f"{'case':<18} {'batch':>5} {'max abs err':>12} {'max rel err':>12} {'max |logit|':>12} {'top-1 agree':>11}"]
    lines += [f"{r['case']:<18} {r['batch']:>5} {r['max_abs']:>12.3g} {r['max_rel']:>12.3g} {r['max_logit']:>12.3g} "
              f"{r['top1']:>11.0%}" for r in rows]
    if precision == 'fp32':
        lines.append(f'passed: every row within {tol:g} x max(1, max |logit|) of PyTorch')
    else:
        lines.append(f"passed: top-1 agreement with fp32 PyTorch over the 'images' rows of at least "
                     f"{MIN_AGREEMENT[precision]:.0%}; the 'random' rows show the size of the {precision} error and "
                     f"are not part of the check (random inputs have no class to agree on)")
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    group = parser.add_argument_group('export')
    group.add_argument('-o', '--output', default=None, help='output .onnx file (default: <model>.onnx)')
    group.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                       help=f'ONNX opset, from {MIN_OPSET} to the installed onnx package\'s newest (default '
                            f'{DEFAULT_OPSET}; below {DYNAMO_MIN_OPSET} through torch\'s TorchScript exporter)')
    group.add_argument('--static-batch', dest='dynamic_batch', action='store_false',
                       help='fix the batch axis at --batch-size (default: dynamic)')
    group.add_argument('--dynamic-size', action='store_true', help='dynamic height and width')
    group.add_argument('--precision', choices=PRECISIONS, default='fp32',
                       help='fp32 (default), fp16 (the model in half: fp16 I/O and convs, stage combinations in fp32), '
                            'int8 (onnxruntime static QDQ quantisation, calibrated on images)')
    group.add_argument('--batch-size', type=positive_int, default=8,
                       help='the larger verification batch; the fixed batch with --static-batch (default 8)')
    group.add_argument('--images', nargs='+', default=[], help='image files or folders to verify (and calibrate '
                                                                'int8) on, in addition to the built-in synthetic ones')
    group.add_argument('--tol', type=positive_float, default=FP32_TOL,
                       help=f'fp32 tolerance on logits, times max(1, max |logit|) (default {FP32_TOL:g})')
    group.add_argument('--no-verify', dest='check', action='store_false', help='skip the checker and the parity checks')


def run(args: argparse.Namespace) -> int:
    low, high = opset_range()
    if not low <= args.opset <= high:  # before the slow work
        raise UsageError(f'--opset {args.opset}: this installation exports opsets {low} to {high}')
    images = list_images(args.images) if args.images else []
    if args.output:
        output_directory(args.output)
    loaded = load_from_args(args)
    output = args.output or os.path.basename(loaded.architecture.split(':')[-1]) + '.onnx'
    if not loaded.trained:
        print(f'note: {loaded.architecture} has random weights (no --checkpoint or --pretrained); the file is marked '
              f'untrained', file=sys.stderr)
    result = export_onnx(loaded.model, output, source=loaded.source, opset=args.opset,
                         dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size, precision=args.precision,
                         batch_size=args.batch_size, check=args.check, images=images, tol=args.tol,
                         trained=loaded.trained, provenance=loaded.provenance)
    meta = result['metadata']
    if result['checks']:
        print(format_checks(result['checks'], args.precision, args.tol))
    print(f"wrote {output}: {meta['model_name']} ({meta['scheme']}), {meta['precision']}, opset {meta['opset']}, "
          f"input {'x'.join(map(str, json.loads(meta['input_size'])))}" + ('' if args.check else ' (not verified)'))
    return 0
