"""Export a model to ONNX with the metadata deployment needs, and prove it computes what PyTorch does.

Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript), torch's default since 2.9,
for opset 18 and newer; it cannot write older opsets (asked for one, it silently writes 18), so
opsets 7-17, which older runtimes need, go through the TorchScript exporter (`dynamo=False`,
deprecated upstream but exact here too). The opset in the file is checked against the one asked for. Both were measured on every
scheme family: both are exact to fp32 round-off and both fold each BatchNorm that follows a conv
(the first BN of a pre-activation sub-network follows an add and a ReLU and cannot be folded),
but TorchScript also writes the no-op fp32 casts of the stage combinations (blocks.upcast_half, 28 in
a depth-58 RK4 model) and one Constant node per coefficient, where dynamo's onnxscript optimiser leaves
none. Dynamo traces LM blocks (which return a tuple) and the `_adaptive` step sizes as plain
tensors. It exports more slowly than the TorchScript exporter.

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
import contextlib
import copy
import errno
import json
import logging
import os
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import timm
import torch
from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_data_config

from . import __version__
from .errors import HoresnetError
from .fileio import atomic_output
from .predict import decode_metadata, load_image, preprocess

__all__ = ['ExportError', 'model_metadata', 'synthetic_images', 'onnx_session', 'compare', 'within_tolerance',
           'opset_range', 'export_onnx']

DEFAULT_OPSET = 18
MIN_OPSET = 7  # the TorchScript exporter's oldest
DYNAMO_MIN_OPSET = 18  # the dynamo exporter's oldest
FP32_TOL = 1e-4
PRECISIONS = ('fp32', 'fp16', 'int8')
MIN_AGREEMENT = {'fp16': 0.9, 'int8': 0.75}  # top-1 agreement with fp32 PyTorch on the images


class ExportError(HoresnetError):
    """An export that cannot be made or did not pass verification."""


def opset_range():
    """The opsets an export can be asked for: the TorchScript exporter's oldest to the onnx package's newest."""
    import onnx
    return MIN_OPSET, onnx.defs.onnx_opset_version()


def model_metadata(model, source: str, precision: str = 'fp32', trained: Optional[bool] = None,
                   provenance: Optional[str] = None) -> Dict[str, str]:
    """What a runner needs without torch, as ONNX metadata_props (lists and numbers as JSON).

    `trained` False marks random weights, so a runner can say its labels are not predictions;
    None (a model passed in from Python) leaves the key out.
    """
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
    if trained is not None:
        meta['trained'] = trained
    if provenance:
        meta['provenance'] = provenance
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


def _export(model, path: str, input_size, opset: int, dynamic_batch: bool, dynamic_size: bool, batch_size: int,
            half: bool = False):
    if half:  # the graph PyTorch runs in fp16: fp16 I/O and convs, stage combinations in fp32 (blocks.upcast_half)
        model = copy.deepcopy(model).half()
    axes = ({0: 'batch'} if dynamic_batch else {}) | ({2: 'height', 3: 'width'} if dynamic_size else {})
    # torch.export specialises a dimension seen as 1, so trace a dynamic batch at 2
    x = torch.randn(2 if dynamic_batch else batch_size, *input_size, dtype=torch.float16 if half else torch.float32)
    if opset >= DYNAMO_MIN_OPSET:
        torch.onnx.export(
            model, (x,), path, input_names=['input'], output_names=['logits'], opset_version=opset,
            dynamo=True, dynamic_shapes=(axes,) if axes else None, optimize=True, external_data=False, verbose=False)
    else:
        with warnings.catch_warnings():  # chosen deliberately (the only exporter of these opsets), and the input
            warnings.simplefilter('ignore', DeprecationWarning)  # check it traces as a constant is a no-op there
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            torch.onnx.export(
                model, (x,), path, input_names=['input'], output_names=['logits'], opset_version=opset,
                dynamo=False, dynamic_axes={'input': axes, 'logits': {0: 'batch'} if dynamic_batch else {}} if axes
                else None, verbose=False)


def _to_int8(src: str, dst: str, calibration: np.ndarray, batch: int = 1) -> None:
    """Static QDQ quantisation calibrated on `calibration` images, fed `batch` at a time (a static-batch
    graph takes no other size; the last batch repeats images to fill it)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{'input': np.resize(calibration[i:i + batch], (batch,) + calibration.shape[1:])}
                                 for i in range(0, len(calibration), batch)])

        def get_next(self):
            return next(self.batches, None)

    # static QDQ, per-channel int8 weights, activations calibrated (min-max) on images
    with _root_logger_quiet():
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _root_logger_quiet():
    """onnxruntime's quantiser warns through the root logger (`logging.warning`: one line per BatchNorm
    weight, advice to pre-process); silence it for the call without configuring the caller's logging."""
    root = logging.getLogger()
    level, stand_in = root.level, logging.NullHandler()
    root.addHandler(stand_in)  # so that logging.warning does not call basicConfig and add a stderr handler
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(stand_in)


def onnx_session(path: str):
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=['CPUExecutionProvider'])


def compare(model, session, cases: Dict[str, np.ndarray]) -> List[Dict]:
    """onnxruntime against PyTorch per named input batch: max abs / rel error, max |logit|, top-1 agreement."""
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
                         top1=float((out.argmax(1) == ref.argmax(1)).mean()),
                         finite_ref=bool(np.isfinite(ref).all()), finite=bool(np.isfinite(out).all())))
    return rows


def within_tolerance(row: Dict, tol: float = FP32_TOL) -> bool:
    """The fp32 bound: finite logits and max |logit error| <= tol x max(1, max |logit|)."""
    return row['finite'] and row['finite_ref'] and row['max_abs'] <= tol * max(1., row['max_logit'])


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
    if not all(r['finite_ref'] for r in rows):
        raise ExportError('the PyTorch model itself gives NaN or infinite logits on the verification inputs; its '
                          'weights are broken, so no export of them can be right')
    if not all(r['finite'] for r in rows):
        cases_bad = ', '.join(r['case'] for r in rows if not r['finite'])
        raise ExportError(f'the {precision} file gives NaN or infinite logits ({cases_bad})'
                          + ('; fp16 overflows beyond 65504: export fp32' if precision == 'fp16' else ''))
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
        trained: Optional[bool] = None,
        provenance: Optional[str] = None,
) -> Dict:
    """Export `model` (eval mode) to `output`; returns the metadata and, if `check`, the comparison rows.

    The preprocessing metadata comes from `model.pretrained_cfg` (which `loading.load_model` sets
    to describe the loaded weights). Without a dynamic batch axis the file is fixed at `batch_size`.
    Nothing is left at `output` (or beside it) when anything fails.
    """
    import onnx
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    low, high = opset_range()
    if not isinstance(opset, int) or not low <= opset <= high:
        raise ExportError(f'opset {opset} cannot be exported: this installation writes opsets {low} to {high} '
                          f'(onnx {onnx.__version__})')
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f'batch size must be a positive integer, got {batch_size!r}')
    for p in images:
        load_image(p)  # a bad --images file fails before the slow export
    model = model.eval()
    metadata = model_metadata(model, source or model.pretrained_cfg.get('architecture', ''), precision, trained,
                              provenance)
    metadata.update(opset=str(opset), dynamic_batch=json.dumps(dynamic_batch), dynamic_size=json.dumps(dynamic_size))
    input_size = json.loads(metadata['input_size'])
    with atomic_output(output) as tmp, tempfile.TemporaryDirectory(prefix='horesnet-export-') as work:
        try:  # everything up to the final save writes to the scratch folder, not to the output's
            path = os.path.join(work, 'model.onnx')
            _export(model, path, input_size, opset, dynamic_batch, dynamic_size, batch_size, half=precision == 'fp16')
            samples = list(images) + synthetic_images(work)
            if precision == 'int8':
                calibration = synthetic_images(work, count=16, seed=1)  # other images than the verification's
                cfg = decode_metadata(metadata)
                _to_int8(path, path + '.int8', np.stack([preprocess(load_image(p, input_size[0]), cfg)
                                                         for p in calibration + list(images)]),
                         batch=1 if dynamic_batch else batch_size)
                path += '.int8'
            proto = onnx.load(path)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ExportError(f"the scratch folder '{os.path.dirname(work)}' is full (the export's working files go "
                              f"there): free space in it, or point TMPDIR at a folder with space") from e
        written = next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), None)
        if written != opset:
            raise ExportError(f'asked for opset {opset}, but the exporter wrote opset {written}; ask for {written}')
        onnx.helper.set_model_props(proto, metadata)
        proto.doc_string = f"{metadata['model_name']} ({metadata['scheme']}), exported by horesnet-timm"
        onnx.save(proto, str(tmp))
        rows = verify(model, str(tmp), metadata, samples, batch_size, dynamic_batch, dynamic_size, precision, tol) \
            if check else []
    return dict(output=output, metadata=metadata, checks=rows)
