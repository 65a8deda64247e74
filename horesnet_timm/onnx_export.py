"""Export a model to ONNX with the metadata deployment needs, and prove it computes what PyTorch does.

Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), torch's default since 2.9;
the TorchScript exporter (`dynamo=False`) is deprecated upstream. Both were measured on every
scheme family: both are exact to fp32 round-off and both fold each BatchNorm that follows a conv
(the first BN of a pre-activation sub-network follows an add and a ReLU and cannot be folded),
but TorchScript also writes the no-op fp32 casts of the stage combinations (blocks._lift, 28 in
horesnet58_rk4) and one Constant node per coefficient, where dynamo's onnxscript optimiser leaves
none. Dynamo traces LM blocks (which return a tuple) and the `_adaptive` step sizes as plain
tensors. It exports more slowly (about 12 s against 4 s for horesnet58_rk4 on 2 cores).

Verification (on by default; `--no-verify` skips it): onnx.checker, then onnxruntime against the
PyTorch model at batch 1 and a larger batch, on random inputs and on image files decoded and
preprocessed exactly as `horesnet predict` does them. The built-in images are synthetic but
structured (gradients, discs, stripes, 1/f noise; PNG and JPEG), made here so that nothing is
downloaded; `--images` adds your own photographs. fp32 passes when max |logit error| <= 1e-4 *
max(1, max |logit|): 1e-4 absolute for logits up to 1 in magnitude, 1e-4 relative beyond
(untrained deep Euler and LM nets reach 1e8, where fp32 round-off alone exceeds 1e-4). fp16 and int8
files pass on top-1 agreement with the fp32 PyTorch model on the images (MIN_AGREEMENT).
The file is written under a temporary name in the output directory and renamed into place only
after it passed, so a failure leaves nothing behind.
"""
import argparse
import difflib
import json
import logging
import os
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from .predict import PredictError, decode_metadata, list_images, load_image, preprocess

__all__ = ['ExportError', 'create_model', 'model_metadata', 'synthetic_images', 'onnx_session', 'compare',
           'within_tolerance', 'export_onnx', 'add_arguments', 'run']

DEFAULT_OPSET = 18
FP32_TOL = 1e-4
PRECISIONS = ('fp32', 'fp16', 'int8')
MIN_AGREEMENT = {'fp16': 0.9, 'int8': 0.75}  # top-1 agreement with fp32 PyTorch on the images


class ExportError(RuntimeError):
    """An export that cannot be made or did not pass verification."""


def create_model(source: str, checkpoint: Optional[str] = None, use_ema: bool = True, **kwargs):
    """A model in eval mode from a registered name, `hf-hub:org/name`, `local-dir:/path`, or a timm
    train.py checkpoint file (which names its architecture); `checkpoint` weights are loaded over it."""
    import timm
    from . import checkpoint as ckpt
    if checkpoint is None and os.path.isfile(source):
        arch = ckpt.checkpoint_arch(source)
        if not arch:
            raise ExportError(f"'{source}' is a weights file that does not name its model (safetensors files "
                              f"do not): give the model too, e.g. `horesnet export horesnet58_rk4 --checkpoint "
                              f"{source}`")
        source, checkpoint = arch, source
    hub = source.startswith(('hf-hub:', 'local-dir:'))
    if not hub and not timm.is_model(source):
        close = difflib.get_close_matches(source, timm.list_models('horesnet*'), n=3, cutoff=0.6)
        raise ExportError(f"unknown model '{source}'" + (f"; did you mean {', '.join(close)}?" if close else '')
                          + " Give a name from `timm.list_models('horesnet*')`, hf-hub:org/name, "
                            "local-dir:/path, or a timm train.py checkpoint file.")
    model = timm.create_model(source, pretrained=hub, **kwargs)
    if checkpoint is not None:
        ckpt.load_weights(model, checkpoint, use_ema=use_ema)
    return model.eval()


def model_metadata(model, source: str, precision: str = 'fp32') -> Dict[str, str]:
    """What a runner needs without torch, as ONNX metadata_props (lists and numbers as JSON)."""
    import timm
    import torch
    from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_data_config
    from . import __version__
    cfg = resolve_data_config(model=model)
    labels = getattr(model, 'pretrained_cfg', {}).get('label_names')
    if not labels or len(labels) != model.num_classes:
        subset = infer_imagenet_subset(model)
        labels = ImageNetInfo(subset).label_descriptions() if subset else None
    meta = dict(
        model_name=model.pretrained_cfg.get('architecture', source), source=source,
        scheme=getattr(model, 'scheme', ''), num_classes=model.num_classes,
        input_size=list(cfg['input_size']), mean=list(cfg['mean']), std=list(cfg['std']),
        interpolation=cfg['interpolation'], crop_pct=cfg['crop_pct'], crop_mode=cfg.get('crop_mode', 'center'),
        precision=precision, horesnet_timm_version=__version__, timm_version=timm.__version__,
        torch_version=torch.__version__,
    )
    if labels:
        meta['labels'] = list(labels)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def synthetic_images(directory: str, count: int = 8, size=(96, 80), seed: int = 0) -> List[str]:
    """Deterministic structured images (gradients, shapes, stripes, 1/f noise), half PNG and half
    JPEG, so verification runs the decode-resize-crop-normalise path of a real deployment offline.
    They are not photographs: use `--images` to add your own."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    paths = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # colour gradient
            img = np.stack([xx, yy, 1 - xx * yy], -1) * rng.uniform(0.5, 1, 3)
        elif kind == 1:  # disc on a flat background
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.3)
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
            img = np.where(disc, rng.uniform(0, 1, 3), rng.uniform(0, 1, 3))
        elif kind == 2:  # oriented stripes
            angle, freq = rng.uniform(0, np.pi), rng.uniform(8, 30)
            img = (0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle))))[..., None] * rng.uniform(0, 1, 3)
        else:  # 1/f noise, the power spectrum of natural images
            f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2)
            spectrum = rng.normal(size=(h, w, 3)) + 1j * rng.normal(size=(h, w, 3))
            img = np.real(np.fft.ifft2(spectrum / np.maximum(f, 1 / max(h, w))[..., None], axes=(0, 1)))
            img = (img - img.min()) / (img.max() - img.min())
        path = os.path.join(directory, f'synthetic_{seed}_{i}.' + ('png' if i % 2 == 0 else 'jpg'))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _check_destination(output: str) -> str:
    """The output's directory, existing and writable, else a message that says which and what to do."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ExportError(f"output directory '{directory}' does not exist or is not a directory; create it first")
    if os.path.isdir(output):
        raise ExportError(f"output '{output}' is a directory; give a file name such as model.onnx")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix='.horesnet-', suffix='.probe')
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ExportError(f"output directory '{directory}' is not writable ({e.strerror}); choose another -o") from e
    return directory


def _export(model, path: str, input_size, opset: int, dynamic_batch: bool, dynamic_size: bool, batch_size: int,
            half: bool = False):
    import copy
    import torch
    if half:  # the graph PyTorch runs in fp16: fp16 I/O and convs, stage combinations in fp32 (blocks._lift)
        model = copy.deepcopy(model).half()
    axes = ({0: 'batch'} if dynamic_batch else {}) | ({2: 'height', 3: 'width'} if dynamic_size else {})
    # torch.export specialises a dimension seen as 1, so trace a dynamic batch at 2
    x = torch.randn(2 if dynamic_batch else batch_size, *input_size, dtype=torch.float16 if half else torch.float32)
    torch.onnx.export(
        model, (x,), path, input_names=['input'], output_names=['logits'], opset_version=opset,
        dynamo=True, dynamic_shapes=(axes,) if axes else None, optimize=True, external_data=False, verbose=False)


def _to_int8(src: str, dst: str, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{'input': x[None]} for x in calibration])

        def get_next(self):
            return next(self.batches, None)

    # static QDQ, per-channel int8 weights, activations calibrated (min-max) on images
    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def onnx_session(path: str):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=['CPUExecutionProvider'])


def compare(model, session, cases: Dict[str, np.ndarray]) -> List[Dict]:
    """onnxruntime against PyTorch per named input batch: max abs / rel error, max |logit|, top-1 agreement."""
    import torch
    rows = []
    onnx_input = session.get_inputs()[0]
    dtype = np.float16 if onnx_input.type == 'tensor(float16)' else np.float32
    for name, x in cases.items():
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = session.run(None, {onnx_input.name: x.astype(dtype)})[0].astype(np.float32)
        err = float(np.abs(out - ref).max())
        scale = float(np.abs(ref).max())
        rows.append(dict(case=name, batch=len(x), max_abs=err, max_rel=err / max(scale, 1e-12), max_logit=scale,
                         top1=float((out.argmax(1) == ref.argmax(1)).mean())))
    return rows


def within_tolerance(row: Dict, tol: float = FP32_TOL) -> bool:
    """The fp32 bound: max |logit error| <= tol x max(1, max |logit|)."""
    return row['max_abs'] <= tol * max(1., row['max_logit'])


def verify(model, path: str, metadata: Dict[str, str], images: Sequence[str], batch_size: int,
           dynamic_batch: bool, dynamic_size: bool, precision: str, tol: float = FP32_TOL) -> List[Dict]:
    """Check the file and compare onnxruntime with PyTorch; raise ExportError above the tolerance."""
    import onnx
    onnx.checker.check_model(path, full_check=True)
    cfg = decode_metadata(metadata)
    c, h, w = cfg['input_size']
    rng = np.random.default_rng(0)
    real = np.stack([preprocess(load_image(p, c), cfg) for p in images])
    batches = [1, batch_size] if dynamic_batch else [batch_size]
    cases = {}
    for b in batches:
        cases[f'random b={b}'] = rng.standard_normal((b, c, h, w), dtype=np.float32)
        cases[f'images b={b}'] = np.resize(real, (b,) + real.shape[1:])  # repeats images if fewer than b
    if dynamic_batch:
        cases[f'images b={len(real)}'] = real
    if dynamic_size:
        cases[f'random {h + 16}x{w + 8}'] = rng.standard_normal((batches[-1], c, h + 16, w + 8), dtype=np.float32)
    rows = compare(model, onnx_session(path), cases)
    if precision == 'fp32':
        bad = [r for r in rows if not within_tolerance(r, tol)]
        if bad:
            raise ExportError(f'onnxruntime differs from PyTorch beyond {tol:g} x max(1, |logit|): ' + '; '.join(
                f"{r['case']}: max abs {r['max_abs']:.3g} (logits up to {r['max_logit']:.3g})" for r in bad))
    else:
        agreement = np.mean([r['top1'] for r in rows if r['case'].startswith('images')])
        if agreement < MIN_AGREEMENT[precision]:
            raise ExportError(f'{precision} top-1 agrees with fp32 PyTorch on {agreement:.0%} of the images, '
                              f'below {MIN_AGREEMENT[precision]:.0%}')
    return rows


def export_onnx(
        model,
        output: str,
        source: Optional[str] = None,
        opset: int = DEFAULT_OPSET,
        dynamic_batch: bool = True,
        dynamic_size: bool = False,
        precision: str = 'fp32',
        batch_size: int = 8,
        check: bool = True,
        images: Sequence[str] = (),
        tol: float = FP32_TOL,
) -> Dict:
    """Export `model` (eval mode) to `output`; returns the metadata and, if `check`, the comparison rows.

    Without a dynamic batch axis the file is fixed at `batch_size`. Nothing is left at `output`
    (or beside it) when anything fails.
    """
    import onnx
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    directory = _check_destination(output)
    for p in images:
        load_image(p)  # a bad --images file fails before the slow export
    model = model.eval()
    metadata = model_metadata(model, source or model.pretrained_cfg.get('architecture', ''), precision)
    metadata.update(opset=str(opset), dynamic_batch=json.dumps(dynamic_batch), dynamic_size=json.dumps(dynamic_size))
    input_size = json.loads(metadata['input_size'])
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(output)}.', suffix='.tmp')
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix='horesnet-export-') as work:
            fp32 = os.path.join(work, 'model.onnx')
            _export(model, fp32, input_size, opset, dynamic_batch, dynamic_size, batch_size, half=precision == 'fp16')
            samples = list(images) + synthetic_images(work)
            if precision == 'int8':
                calibration = synthetic_images(work, count=16, seed=1)  # other images than the verification's
                cfg = decode_metadata(metadata)
                _to_int8(fp32, fp32 + '.int8', np.stack([preprocess(load_image(p, input_size[0]), cfg)
                                                         for p in calibration + list(images)]))
                fp32 += '.int8'
            proto = onnx.load(fp32)
            onnx.helper.set_model_props(proto, metadata)
            proto.doc_string = f"{metadata['model_name']} ({metadata['scheme']}), exported by horesnet-timm"
            onnx.save(proto, tmp)
            rows = verify(model, tmp, metadata, samples, batch_size, dynamic_batch, dynamic_size, precision, tol) \
                if check else []
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dict(output=output, metadata=metadata, checks=rows)


def format_checks(rows: List[Dict]) -> str:
    lines = [f"{'case':<18} {'batch':>5} {'max abs err':>12} {'max rel err':>12} {'max |logit|':>12} {'top-1 agree':>11}"]
    lines += [f"{r['case']:<18} {r['batch']:>5} {r['max_abs']:>12.3g} {r['max_rel']:>12.3g} {r['max_logit']:>12.3g} "
              f"{r['top1']:>11.0%}" for r in rows]
    return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model', help="registered name (timm.list_models('horesnet*')), hf-hub:org/name, "
                                      "local-dir:/path, or a timm train.py checkpoint")
    parser.add_argument('-o', '--output', default=None, help='output .onnx file (default: <model>.onnx)')
    parser.add_argument('--checkpoint', default=None, help='weights: .safetensors or a timm train.py checkpoint')
    parser.add_argument('--no-ema', dest='use_ema', action='store_false',
                        help="load a train.py checkpoint's state_dict, not its EMA weights")
    parser.add_argument('--num-classes', type=int, default=None, help='classifier size the weights were trained with')
    parser.add_argument('--scheme', default=None, help='scheme override, as timm.create_model(..., scheme=)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--static-batch', dest='dynamic_batch', action='store_false',
                        help='fix the batch axis at --batch-size (default: dynamic)')
    parser.add_argument('--dynamic-size', action='store_true', help='dynamic height and width')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='fp32 (default), fp16 (the model in half: fp16 I/O and convs, stage combinations in fp32), '
                             'int8 (onnxruntime static QDQ quantisation, calibrated on images)')
    parser.add_argument('--batch-size', type=int, default=8, help='the larger verification batch; the fixed batch '
                                                                  'with --static-batch (default 8)')
    parser.add_argument('--images', nargs='+', default=[], help='image files or folders to verify (and calibrate '
                                                                 'int8) on, in addition to the built-in synthetic ones')
    parser.add_argument('--tol', type=float, default=FP32_TOL,
                        help=f'fp32 tolerance on logits, times max(1, max |logit|) (default {FP32_TOL:g})')
    parser.add_argument('--no-verify', dest='check', action='store_false', help='skip the checker and the parity checks')


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    logging.getLogger('onnxruntime').setLevel(logging.ERROR)  # quantisation warns per BatchNorm weight
    kwargs = {k: v for k, v in (('num_classes', args.num_classes), ('scheme', args.scheme)) if v is not None}
    output = args.output or os.path.basename(args.model.split(':')[-1]).split('.')[0] + '.onnx'
    try:
        images = list_images(args.images) if args.images else []
        model = create_model(args.model, args.checkpoint, use_ema=args.use_ema, **kwargs)
        result = export_onnx(model, output, source=args.model, opset=args.opset, dynamic_batch=args.dynamic_batch,
                             dynamic_size=args.dynamic_size, precision=args.precision, batch_size=args.batch_size,
                             check=args.check, images=images, tol=args.tol)
    except (ExportError, CheckpointError, PredictError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    meta = result['metadata']
    if result['checks']:
        print(format_checks(result['checks']))
    print(f"wrote {output}: {meta['model_name']} ({meta['scheme']}), {meta['precision']}, opset {meta['opset']}, "
          f"input {'x'.join(map(str, json.loads(meta['input_size'])))}" + ('' if args.check else ' (not verified)'))
    return 0
