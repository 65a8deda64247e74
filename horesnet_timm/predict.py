"""Classify images with an exported ONNX file: top-k labels and probabilities, batched.

Needs only onnxruntime, numpy and pillow. The preprocessing (input size, resize interpolation,
crop_pct, mean/std) and the class labels are read from the file's metadata, written by
`horesnet export`. This module imports nothing from torch or from the rest of the package
(whose `__init__` imports torch), so `export/predict.py` can load it by file path and run it
where torch is not installed.
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ['IMAGE_EXTENSIONS', 'PredictError', 'Predictor', 'list_images', 'load_image', 'preprocess', 'decode_metadata',
           'add_arguments', 'run', 'main']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
# metadata_props values that are JSON (lists, numbers); the others are plain strings
JSON_KEYS = ('input_size', 'mean', 'std', 'crop_pct', 'num_classes', 'labels', 'dynamic_batch', 'dynamic_size')
REQUIRED_KEYS = ('input_size', 'mean', 'std', 'interpolation', 'crop_pct')


class PredictError(ValueError):
    """An input the runner cannot use: a missing or unreadable image or ONNX file, or missing metadata."""


def list_images(paths: Sequence[str]) -> List[str]:
    """Image files given directly, plus the image files (by extension, sorted) of any folder given."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise PredictError(f"folder '{path}' holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise PredictError(f"image '{path}' does not exist")
    return files


def load_image(path: str, channels: int = 3):
    """A decoded PIL image in RGB (or L for one-channel models); PredictError names a file that is not one."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return image.convert('RGB' if channels == 3 else 'L')
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # truncated files raise OSError
        raise PredictError(f"cannot read image '{path}': {e}. Give PNG, JPEG or another format pillow reads.") from e


def preprocess(image, cfg: Dict) -> np.ndarray:
    """timm's eval transform in numpy: resize the short side to size / crop_pct, centre-crop, normalise.

    Same arithmetic as timm.data.create_transform(is_training=False) with crop_mode 'center' (both
    resize with pillow), so the ONNX file sees what the PyTorch model saw.
    """
    from PIL import Image
    _, height, width = cfg['input_size']
    filters = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC, 'nearest': Image.NEAREST,
               'lanczos': Image.LANCZOS, 'box': Image.BOX, 'hamming': Image.HAMMING}
    resample = filters.get(cfg['interpolation'], Image.BILINEAR)
    crop_pct = cfg['crop_pct'] or 0.875
    if height == width:  # torchvision Resize(int): short side to the size, long side truncated
        short = math.floor(height / crop_pct)
        w, h = image.size
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    else:  # timm's ResizeKeepRatio: scale so that both sides cover the target
        target = (math.floor(height / crop_pct), math.floor(width / crop_pct))
        ratio = min(image.size[1] / target[0], image.size[0] / target[1])
        size = (round(image.size[0] / ratio), round(image.size[1] / ratio))
    image = image.resize(size, resample)
    left, top = int(round((size[0] - width) / 2.0)), int(round((size[1] - height) / 2.0))
    image = image.crop((left, top, left + width, top + height))
    x = np.asarray(image, dtype=np.float32) / 255.
    x = x[:, :, None] if x.ndim == 2 else x
    x = (x - np.asarray(cfg['mean'], np.float32)) / np.asarray(cfg['std'], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def decode_metadata(raw: Dict[str, str]) -> Dict:
    """ONNX metadata_props as written by `horesnet export`, with the JSON values decoded."""
    return {k: json.loads(v) if k in JSON_KEYS else v for k, v in raw.items()}


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """An onnxruntime session plus the preprocessing and labels stored in the ONNX file."""

    def __init__(self, onnx_path: str, threads: Optional[int] = None):
        import onnxruntime as ort
        if not os.path.isfile(onnx_path):
            raise PredictError(f"ONNX file '{onnx_path}' does not exist (make one with `horesnet export`)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(onnx_path, options, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise PredictError(f"cannot load ONNX file '{onnx_path}': {e}") from e
        raw = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise PredictError(f"ONNX file '{onnx_path}' lacks the preprocessing metadata {missing}; "
                               f"export it with `horesnet export`, which writes them")
        self.metadata = decode_metadata(raw)
        self.input = self.session.get_inputs()[0]
        batch = self.input.shape[0]
        self.max_batch = batch if isinstance(batch, int) else None  # a static batch axis fixes the batch
        self.dtype = np.float16 if self.input.type == 'tensor(float16)' else np.float32  # fp16 exports take fp16
        self.labels = self.metadata.get('labels')

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = batch.astype(self.dtype)
        if self.max_batch and len(batch) < self.max_batch:  # pad a static-batch model's last batch
            pad = np.zeros((self.max_batch - len(batch),) + batch.shape[1:], batch.dtype)
            return self.session.run(None, {self.input.name: np.concatenate([batch, pad])})[0][:len(batch)]
        return self.session.run(None, {self.input.name: batch})[0]

    def predict(self, paths: Sequence[str], topk: int = 5, batch_size: int = 32) -> List[Dict]:
        """Top-k classes of each image: [{'image', 'top': [{'index', 'label', 'prob'}, ...]}, ...]."""
        batch_size = min(batch_size, self.max_batch or batch_size)
        channels = self.metadata['input_size'][0]
        images = [load_image(p, channels) for p in paths]  # decode all first: a bad file fails before any work
        results = []
        for start in range(0, len(images), batch_size):
            x = np.stack([preprocess(im, self.metadata) for im in images[start:start + batch_size]])
            probs = softmax(self.logits(x).astype(np.float32))
            for path, p in zip(paths[start:start + batch_size], probs):
                top = np.argsort(-p, kind='stable')[:topk]
                results.append(dict(image=path, top=[
                    dict(index=int(i), label=self.labels[i] if self.labels else str(int(i)), prob=float(p[i]))
                    for i in top]))
        return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('onnx', help='ONNX file written by `horesnet export`')
    parser.add_argument('images', nargs='+', help='image files and/or folders of images')
    parser.add_argument('--topk', type=int, default=5, help='classes to print per image (default 5)')
    parser.add_argument('--batch-size', type=int, default=32, help='images per onnxruntime call (default 32)')
    parser.add_argument('--threads', type=int, default=None, help='onnxruntime intra-op threads (default: all cores)')
    parser.add_argument('--json', action='store_true', help='print the results as JSON')


def run(args: argparse.Namespace) -> int:
    try:
        predictor = Predictor(args.onnx, threads=args.threads)
        results = predictor.predict(list_images(args.images), topk=args.topk, batch_size=args.batch_size)
    except PredictError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            print(r['image'] + ': ' + ', '.join(f"{t['label']} {t['prob']:.3f}" for t in r['top']))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Classify images with an ONNX file exported by horesnet-timm '
                                                 '(needs only onnxruntime, numpy and pillow)')
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
