"""Classify images with an exported ONNX file: top-k labels and probabilities, batched.

Needs only onnxruntime, numpy and pillow. The preprocessing (input size, resize interpolation,
crop_pct, crop mode, mean/std) and the class labels are read from the file's metadata, written by
`horesnet export`. This module imports nothing from torch or timm, and from the package only its error
type (when it is part of the package), so `export/predict.py` can load it by file path and run it where
neither torch nor the package is installed.

Every file is checked up front (it exists, is a regular file, can be read, has an image header
pillow knows), so a bad one fails before any work; the pixels are decoded one batch at a time, so
memory follows --batch-size, not the number of images.

Exit status, the convention of every `horesnet` command:
    0    success
    1    a failure: an image or ONNX file that cannot be used, a model whose outputs are NaN or infinite
    2    a usage error (argparse's status): an unknown flag, a count below 1
    141  the reader of the output went away (`... | head -1`): 128 + SIGPIPE, as for any Unix tool
"""
import argparse
import json
import math
import os
import re
import stat
import sys
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

__all__ = ['IMAGE_EXTENSIONS', 'PredictError', 'Predictor', 'list_images', 'check_image', 'load_image', 'preprocess',
           'check_metadata', 'decode_metadata', 'quiet_on_broken_pipe', 'refuse_undecodable', 'printable', 'add_arguments', 'run',
           'main']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
# metadata_props values that are JSON (lists, numbers); the others are plain strings
JSON_KEYS = ('input_size', 'mean', 'std', 'crop_pct', 'num_classes', 'labels', 'dynamic_batch', 'dynamic_size',
             'trained')
REQUIRED_KEYS = ('input_size', 'mean', 'std', 'interpolation', 'crop_pct')


try:  # in the package, the one error type of the commands; loaded by file path (export/predict.py), no package
    from .errors import HoresnetError
    _ERROR_BASES: tuple = (HoresnetError, ValueError)
except ImportError:
    _ERROR_BASES = (ValueError,)


class PredictError(*_ERROR_BASES):
    """An input the runner cannot use: an unusable image or ONNX file, missing metadata, non-finite outputs."""


def _check_file(path: str, what: str, missing: str = '') -> None:
    """Return if `path` is a regular file this process may read, else raise PredictError naming the cause."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):  # opened only if regular: opening a FIFO waits for a writer, forever
            open(path, 'rb').close()
            return
    except ValueError as e:  # a NUL byte, or a lone surrogate that no bytes decode to
        raise PredictError(f"{what} {path!r} is not a valid file name ({e})") from None
    except (FileNotFoundError, NotADirectoryError):
        raise PredictError(f"{what} '{path}' does not exist{missing}") from None
    except PermissionError:
        raise PredictError(f"cannot read {what} '{path}': permission denied") from None
    except OSError as e:
        raise PredictError(f"cannot read {what} '{path}': {e.strerror}") from None
    kind = 'a folder' if stat.S_ISDIR(mode) else 'not a regular file (a device, FIFO or socket)'
    raise PredictError(f"{what} '{path}' is {kind}")


def list_images(paths: Sequence[str]) -> List[str]:
    """Image files given directly, plus the image files (by extension, sorted) of any folder given."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            _check_file(path, 'image')
            files.append(path)
            continue
        try:
            names = os.listdir(path)
        except OSError as e:
            raise PredictError(f"cannot list folder '{path}': {(e.strerror or str(e)).lower()}") from None
        found = sorted(os.path.join(path, f) for f in names if f.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise PredictError(f"folder '{path}' holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        files += found
    return files


def _read_image(path: str, mode: Optional[str]):
    """The image converted to `mode`, or with mode None its size, read from the header alone."""
    from PIL import Image, UnidentifiedImageError
    _check_file(path, 'image')
    try:
        with warnings.catch_warnings():
            # Pillow refuses images over 2 x MAX_IMAGE_PIXELS and only warns above MAX_IMAGE_PIXELS. That
            # range holds real photographs (a 100-megapixel camera's 11648x8736), and each image is
            # downsampled as soon as it is decoded, so one such image (at most ~540 MB as RGB) is in memory
            # at a time: decode them, without the warning, which names no file and asks nothing.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.convert(mode) if mode else image.size
    except Image.DecompressionBombError as e:
        pixels = re.search(r'\((\d+) pixels\)', str(e))  # pillow's message is the only place that says
        raise PredictError(
            f"image '{path}' has {f'{int(pixels[1]):,}' if pixels else 'too many'} pixels: pillow refuses images "
            f"over {2 * Image.MAX_IMAGE_PIXELS:,} pixels as a decompression-bomb guard; resize it first") from None
    except UnidentifiedImageError:
        raise PredictError(f"cannot read image '{path}': not an image pillow reads (PNG, JPEG, BMP, GIF, TIFF, "
                           f"WebP, ...), or its header is damaged") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # pillow's errors for cut or malformed pixel data
        raise PredictError(f"image '{path}' is truncated or corrupt ({e})") from None


def check_image(path: str):
    """The image's (width, height), from its header alone; PredictError names a file that cannot be one."""
    return _read_image(path, None)


def load_image(path: str, channels: int = 3):
    """A decoded PIL image in RGB (or L for one-channel models); PredictError names a file that is not one."""
    return _read_image(path, 'RGB' if channels == 3 else 'L')


FILTERS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')  # timm's eval interpolations
CROP_MODES = ('center', 'squash', 'border')


def _crop_or_pad(image, height: int, width: int, fill):
    """torchvision's CenterCrop (fill 0) / timm's CenterCropOrPad: pad a side shorter than the crop, then crop."""
    from PIL import Image
    w, h = image.size
    if width > w or height > h:
        left, top = max(width - w, 0) // 2, max(height - h, 0) // 2
        canvas = Image.new(image.mode, (w + max(width - w, 0), h + max(height - h, 0)), fill)
        canvas.paste(image, (left, top))
        image, (w, h) = canvas, canvas.size
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def preprocess(image, cfg: Dict) -> np.ndarray:
    """timm's eval transform (`timm.data.create_transform(is_training=False)`) in numpy, for each crop mode:
    'center' resizes the short side to size / crop_pct (keeping the aspect ratio) and centre-crops; 'squash'
    resizes both sides to size / crop_pct and centre-crops; 'border' fits the long side, pads with the mean
    colour and centre-crops. Both resize with pillow, so the ONNX file sees what the PyTorch model saw."""
    from PIL import Image
    _, height, width = cfg['input_size']
    resample = getattr(Image.Resampling, cfg['interpolation'].upper())
    crop_pct = cfg['crop_pct'] or 0.875
    mode = cfg.get('crop_mode') or 'center'
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    w, h = image.size
    fill = 0
    if mode == 'squash':
        size = (scale[1], scale[0])
    elif mode == 'center' and scale[0] == scale[1]:  # torchvision Resize(int): short side, long side truncated
        size = (scale[0], int(scale[0] * h / w)) if w <= h else (int(scale[0] * w / h), scale[0])
    else:  # timm's ResizeKeepRatio: the short side ('center') or the long side ('border') to its target
        ratios = (h / scale[0], w / scale[1])
        ratio = max(ratios) if mode == 'border' else min(ratios)
        size = (round(w / ratio), round(h / ratio))
        if mode == 'border':
            fill = tuple(round(255 * m) for m in cfg['mean']) if image.mode == 'RGB' else round(255 * cfg['mean'][0])
    image = _crop_or_pad(image.resize(size, resample), height, width, fill)
    x = np.asarray(image, dtype=np.float32) / 255.
    x = x[:, :, None] if x.ndim == 2 else x
    x = (x - np.asarray(cfg['mean'], np.float32)) / np.asarray(cfg['std'], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def check_metadata(cfg: Dict, path: str, outputs: Optional[int] = None, input_shape: Sequence = ()) -> None:
    """Refuse metadata that does not describe a graph it came with (its output count and its input's C, H, W,
    where the graph fixes them): every value is used as it stands."""
    def bad(what):
        raise PredictError(f"ONNX file '{path}': its metadata {what}; re-export it with `horesnet export`")
    size = cfg['input_size']
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)
            and size[0] in (1, 3)):
        bad(f'input_size {size!r} is not [1 or 3 channels, height, width]')
    if any(isinstance(have, int) and have != want for have, want in zip(input_shape, size)):
        bad(f'input_size {size} is not the size its graph takes ({list(input_shape)})')
    for key in ('mean', 'std'):
        values = cfg[key]
        if not (isinstance(values, list) and len(values) == size[0]
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            bad(f'{key} {values!r} is not {size[0]} finite number(s), one per input channel')
    if min(cfg['std']) <= 0:
        bad(f"std {cfg['std']!r} is not positive")
    crop_pct = cfg['crop_pct']
    if crop_pct is not None and not (isinstance(crop_pct, (int, float)) and math.isfinite(crop_pct) and crop_pct > 0):
        bad(f'crop_pct {crop_pct!r} is not a positive number')
    if crop_pct is not None and math.floor(min(size[1:]) / crop_pct) < 1:
        bad(f'crop_pct {crop_pct!r} resizes a {size[1]}x{size[2]} input to nothing')
    if cfg['interpolation'] not in FILTERS:
        bad(f"interpolation {cfg['interpolation']!r} is not one of {', '.join(FILTERS)}")
    if (cfg.get('crop_mode') or 'center') not in CROP_MODES:
        bad(f"crop_mode {cfg['crop_mode']!r} is not one of {', '.join(CROP_MODES)}")
    labels = cfg.get('labels')
    if labels is not None and not (isinstance(labels, list) and all(isinstance(v, str) for v in labels)):
        bad(f'labels {str(labels)[:40]!r} are not a list of names')
    if labels is not None and outputs is not None and len(labels) != outputs:
        bad(f'holds {len(labels)} labels for {outputs} outputs')
    if labels is not None and (len(set(labels)) != len(labels) or not all(v.strip() for v in labels)):
        bad('labels are not distinct names (one is empty or repeated)')
    classes = cfg.get('num_classes')
    if classes is not None and outputs is not None and classes not in (0, outputs):
        bad(f'num_classes {classes!r} does not match the {outputs} outputs of the graph')


def decode_metadata(raw: Dict[str, str]) -> Dict:
    """ONNX metadata_props as written by `horesnet export`, with the JSON values decoded."""
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value) if key in JSON_KEYS else value
        except json.JSONDecodeError:
            raise PredictError(f"ONNX metadata '{key}' holds {value[:40]!r}, which is not JSON; "
                               f"re-export the file with `horesnet export`") from None
    return decoded


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """An onnxruntime session plus the preprocessing and labels stored in the ONNX file."""

    def __init__(self, onnx_path: str, threads: Optional[int] = None):
        import onnxruntime as ort
        if threads is not None and threads < 1:
            raise ValueError(f'threads must be >= 1 (or None for all cores), got {threads}')
        _check_file(onnx_path, 'ONNX file', missing=' (make one with `horesnet export`)')
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        model: object = onnx_path
        if not _utf8(onnx_path):  # onnxruntime opens UTF-8 paths only: a name in another encoding is read here
            with open(onnx_path, 'rb') as f:
                model = f.read()
        try:
            self.session = ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise PredictError(f"cannot load ONNX file '{onnx_path}': {_one_line(e)}") from e
        raw = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise PredictError(f"ONNX file '{onnx_path}' lacks the preprocessing metadata {missing}; "
                               f"export it with `horesnet export`, which writes them")
        self.path = onnx_path
        self.metadata = decode_metadata(raw)
        self.trained = self.metadata.get('trained')  # None in files exported before the key existed
        self.input = self.session.get_inputs()[0]
        batch = self.input.shape[0]
        self.max_batch = batch if isinstance(batch, int) else None  # a static batch axis fixes the batch
        self.dtype = np.float16 if self.input.type == 'tensor(float16)' else np.float32  # fp16 exports take fp16
        self.labels = self.metadata.get('labels')
        outputs = self.session.get_outputs()[0].shape[-1]
        self.outputs = outputs if isinstance(outputs, int) else None
        check_metadata(self.metadata, onnx_path, self.outputs, self.input.shape[1:])

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = batch.astype(self.dtype)
        n = len(batch)
        if self.max_batch and n < self.max_batch:  # pad a static-batch model's last batch
            batch = np.concatenate([batch, np.zeros((self.max_batch - n,) + batch.shape[1:], batch.dtype)])
        try:
            return self.session.run(None, {self.input.name: batch})[0][:n]
        except Exception as e:  # onnxruntime's own error types (Fail, InvalidArgument, ...) derive from Exception
            raise PredictError(f"onnxruntime cannot run ONNX file '{self.path}': {_one_line(e)}") from None

    def _non_finite(self, paths: List[str]) -> str:
        names = ', '.join(f"'{p}'" for p in paths[:3]) + (f' and {len(paths) - 3} more of that batch'
                                                            if len(paths) > 3 else '')
        fp16 = ' (or, this file being fp16, logits beyond 65504 overflow: export in fp32)' \
            if self.dtype == np.float16 else ''
        return (f"ONNX file '{self.path}' produced non-finite outputs (NaN or infinity) for {names}: its weights or "
                f"the export are broken{fp16}; re-export it with `horesnet export`")

    def iter_predict(self, paths: Sequence[str], topk: int = 5, batch_size: int = 32) -> Iterator[Dict]:
        """predict()'s results one by one, as each batch is done. Every header is read first; the pixels
        are decoded one batch at a time, each image downsampled as soon as it is decoded."""
        if topk < 1 or batch_size < 1:
            raise ValueError(f'topk and batch_size must be >= 1, got topk={topk}, batch_size={batch_size}')
        if self.metadata.get('num_classes') == 0:
            raise PredictError(f"ONNX file '{self.path}' has no classifier (num_classes 0): it outputs "
                               f"{self.outputs or 'pooled'} features per image, not class scores; run it with "
                               f"onnxruntime directly for the features")
        paths = list(paths)
        for path in paths:
            check_image(path)
        batch_size = min(batch_size, self.max_batch or batch_size)
        channels = self.metadata['input_size'][0]
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            logits = self.logits(np.stack([preprocess(load_image(p, channels), self.metadata) for p in chunk]))
            logits = logits.astype(np.float32)
            broken = [path for path, row in zip(chunk, logits) if not np.isfinite(row).all()]
            if broken:  # softmax would turn them into NaN probabilities, printed as if they meant something
                raise PredictError(self._non_finite(broken))
            for path, p in zip(chunk, softmax(logits)):
                top = np.argsort(-p, kind='stable')[:topk]  # all classes when topk exceeds them
                result = dict(image=path, top=[
                    dict(index=int(i), label=self.labels[i] if self.labels else str(int(i)), prob=float(p[i]))
                    for i in top])
                if self.trained is not None:
                    result['trained'] = self.trained
                yield result

    def predict(self, paths: Sequence[str], topk: int = 5, batch_size: int = 32) -> List[Dict]:
        """Top-k classes of each image: [{'image', 'top': [{'index', 'label', 'prob'}, ...]}, ...], plus
        'trained' (false for random weights) when the file records it."""
        return list(self.iter_predict(paths, topk, batch_size))


def _count(text: str) -> int:
    """argparse type for --topk, --batch-size, --threads: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number >= 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('onnx', help='ONNX file written by `horesnet export`')
    parser.add_argument('images', nargs='+', help='image files and/or folders of images')
    parser.add_argument('--topk', type=_count, default=5,
                        help='classes to print per image (default 5; all of them if fewer)')
    parser.add_argument('--batch-size', type=_count, default=32, help='images decoded and run together (default 32)')
    parser.add_argument('--threads', type=_count, default=None,
                        help='onnxruntime intra-op threads (default: all cores)')
    parser.add_argument('--json', action='store_true', help='print the results as JSON')


def printable(text: str) -> str:
    """`text` with a file name that is not UTF-8 shown as its bytes (\\xff), not as Python's surrogate escapes."""
    try:
        return text.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def _one_line(e: BaseException) -> str:
    """A library's error text (onnxruntime writes several lines) as one line."""
    return ' '.join(str(e).split())


def _utf8(text: str) -> bool:
    """False for a file name in another encoding, which Python hands over with surrogate escapes (PEP 383)."""
    try:
        text.encode('utf-8')
        return True
    except UnicodeEncodeError:
        return False


def refuse_undecodable(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Exit 2 naming an argument that is not valid UTF-8 (a file name in another encoding): onnx, timm's scripts
    and the JSON records cannot carry it, so it would fail later, deep inside a library. (`horesnet predict`
    needs no such check: it reads images and ONNX files under any name.)"""
    for arg in argv:
        if not _utf8(arg):
            parser.error(f"argument '{printable(arg)}' is not valid UTF-8: rename the file (or link it) to a UTF-8 "
                         f"name")


def quiet_on_broken_pipe(fn: Callable[..., int], *args, **kwargs) -> int:
    """fn(*args, **kwargs), or 141 without a traceback when stdout's reader has gone (`... | head -1`)."""
    try:
        status = fn(*args, **kwargs)
        sys.stdout.flush()  # output still buffered fails here, rather than in the interpreter's exit
        return status
    except BrokenPipeError:
        # Python ignores SIGPIPE, so the closed pipe arrives as this exception. Point stdout at /dev/null,
        # or the interpreter's final flush raises it again ("Exception ignored ... BrokenPipeError").
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout without a file descriptor (a test's capture)
            pass
        return 141


def run(args: argparse.Namespace) -> int:
    """`horesnet predict`: a PredictError goes to the caller's printer (the `horesnet` command's, or `main`'s)."""
    predictor = Predictor(args.onnx, threads=args.threads)
    if predictor.trained is False:
        provenance = predictor.metadata.get('provenance')
        print(f"warning: ONNX file '{args.onnx}' holds untrained (random) weights: these labels are not "
              f"predictions" + (f" ({provenance})" if provenance else ''), file=sys.stderr)
    results = predictor.iter_predict(list_images(args.images), topk=args.topk, batch_size=args.batch_size)
    if args.json:  # whole, so that a failure leaves no half-written JSON
        print(json.dumps(list(results), indent=1))
    else:  # line by line as the batches finish: progress, and `| head` stops the work early
        if hasattr(sys.stdout, 'reconfigure'):
            # file names that are not UTF-8 arrive as surrogate escapes (PEP 383): write their
            # original bytes back, as ls does, where a strict stdout would raise
            sys.stdout.reconfigure(errors='surrogateescape')
        for r in results:
            print(r['image'] + ': ' + ', '.join(f"{t['label']} {t['prob']:.3f}" for t in r['top']))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Classify images with an ONNX file exported by horesnet-timm '
                                                 '(needs only onnxruntime, numpy and pillow)')
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:  # the `horesnet` command's printer, for a runner that has no package around it
        return quiet_on_broken_pipe(run, args)
    except PredictError as e:
        print(f'{parser.prog}: error: {printable(str(e))}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
