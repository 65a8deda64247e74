import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'
# one small registered model per scheme family and layout: Euler, midpoint, RK4, Verner-8 with fixed and learned
# steps, LM, and the ImageNet layout (transitions, four stages) with a Runge-Kutta and an LM trunk
ONE_PER_FAMILY = ['horesnet10_euler', 'horesnet10_midpoint', 'horesnet10_rk4', 'horesnet30_rk8', 'horesnet30_rk8_adaptive',
                  'horesnet58_lm', 'horesnet32i_rk4', 'horesnet32i_lm']


def make_image_folder(root: Path, size: int = 32, mode: str = 'RGB', per_class: int = 8,
                      classes=('disc', 'stripes'), splits=('train', 'validation')) -> Path:
    """A tiny ImageFolder dataset (<root>/<split>/<class>/*.png) whose classes are visibly different."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    patterns = {'disc': ((xx - .5) ** 2 + (yy - .5) ** 2 < .1), 'stripes': (np.sin(xx * 20) > 0)}
    for split in splits:
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                base = patterns[name] * 0.7 + rng.uniform(0, 0.3, (size, size))
                pixels = (np.stack([base] * 3, -1) * 255).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / f'{j}.png')
    return root


def make_fashion_mnist(root: Path, train: int = 256, test: int = 64) -> Path:
    """A small stand-in for Fashion-MNIST in the layout torchvision reads (`<root>/FashionMNIST/raw/*-ubyte`,
    the four idx files un-gzipped, as README says to unpack Debian's package): 28x28 grey images of ten
    visibly different classes (stripes of ten orientations), so a model learns them within an epoch."""
    import struct
    raw = root / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28] / 28
    for prefix, count in (('train', train), ('t10k', test)):
        labels = np.arange(count) % 10
        angles = labels * np.pi / 10
        images = 0.5 + 0.5 * np.sin(12 * (xx[None] * np.cos(angles)[:, None, None] + yy[None] * np.sin(angles)[:, None, None]))
        images = np.clip(images * 200 + rng.normal(0, 20, images.shape), 0, 255).astype(np.uint8)
        (raw / f'{prefix}-images-idx3-ubyte').write_bytes(struct.pack('>IIII', 0x803, count, 28, 28) + images.tobytes())
        (raw / f'{prefix}-labels-idx1-ubyte').write_bytes(struct.pack('>II', 0x801, count) + labels.astype(np.uint8).tobytes())
    return root


def load_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope='session')
def config_generator():
    return runpy.run_path(str(CONFIGS / 'generate.py'), run_name='config_generator')


@pytest.fixture(scope='session')
def train_py_arguments() -> dict:
    return json.loads((CONFIGS / 'train_py_args.json').read_text())['arguments']


def train_py_checkpoint(path, model, arch, ema=True, **args):
    """The layout timm's train.py CheckpointSaver writes, with its pickled argparse.Namespace: train.py's
    defaults for the arguments that shape the model and its data, updated by `args`."""
    import argparse
    import torch
    namespace = dict(model=arch, model_kwargs={}, num_classes=None, in_chans=None, input_size=None, img_size=None,
                     mean=None, std=None, crop_pct=None, crop_mode=None, interpolation='', gp=None,
                     bn_momentum=None, bn_eps=None, dataset='torch/cifar10', epochs=300, seed=42, lr=0.1,
                     batch_size=128, drop=0.0, drop_path=None)
    namespace.update(args)
    state = {'module.' + k: v for k, v in model.state_dict().items()}
    checkpoint = {'epoch': 299, 'arch': arch, 'args': argparse.Namespace(**namespace), 'version': 2, 'metric': 94.8,
                  'state_dict': state}
    if ema:
        checkpoint['state_dict_ema'] = model.state_dict()
    torch.save(checkpoint, path)
    return str(path)


def randomised(model, seed=0):
    """Every float tensor (BN statistics, zero-init weights, step sizes, LM k_n) non-trivial."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.05 + (1.0 if t.ndim <= 1 else 0.0))
    return model.eval()


# --- the shipped Fashion-MNIST test subset (tests/data/README.md) and what the pretrained tags score on it ---
# These helpers use no pytest, so they also run as a script: `python tests/conftest.py [NAME ...]` writes the
# subset top-1 into the eval.json of each shipped folder named (default: every folder that has none yet).

SUBSET = Path(__file__).resolve().parent / 'data' / 'fashion_mnist_test_1000.npz'
SUBSET_IMAGES = 'first 1000 of the test split'


def load_subset():
    """(images, labels) of the shipped subset: uint8 N x 28 x 28 and int64 N, numpy arrays."""
    with np.load(SUBSET) as data:
        return data['images'], data['labels']


def grey_batch(images, model):
    """uint8 grey images (N x H x W) as `model`'s pretrained_cfg says to feed them: x / 255 in each of its input
    channels (R = G = B for an RGB model), then its mean and std; no resize."""
    import torch
    cfg = model.pretrained_cfg
    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None].expand(-1, cfg['input_size'][0], -1, -1)
    return (x / 255 - torch.tensor(cfg['mean'])[:, None, None]) / torch.tensor(cfg['std'])[:, None, None]


def top1(model, images, labels, batch: int = 500) -> float:
    """Top-1 (%) of `model` in eval mode on uint8 grey images (N x H x W), fed as `grey_batch` says."""
    import torch
    x = grey_batch(images, model)
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return 100 * (predicted == labels).float().mean().item()


def subset_top1(name: str, **kwargs) -> float:
    """Top-1 (%) of `timm.create_model(name, pretrained=True, **kwargs)` on the shipped subset, to 2 decimals."""
    import timm
    import horesnet_timm  # noqa: F401
    return round(top1(timm.create_model(name, pretrained=True, **kwargs), *load_subset()), 2)


def record_subset_top1(name: str) -> dict:
    """Measure shipped tag `name` on the subset and write the result into horesnet_timm/weights/<name>/eval.json
    as "subset": {"images": ..., "top1": ...}. A record without the field gets it appended and keeps its other
    lines as they are; one that has it is rewritten (indent=1). Returns the field."""
    from horesnet_timm.models.cifar import WEIGHTS
    path = WEIGHTS / name / 'eval.json'
    text = path.read_text(encoding='utf-8')
    record = json.loads(text)
    subset = {'images': SUBSET_IMAGES, 'top1': subset_top1(name)}
    if 'subset' in record:
        text = json.dumps({**record, 'subset': subset}, indent=1) + '\n'
    else:
        body = text.rstrip()
        if not body.endswith('}'):
            raise ValueError(f'{path} is not a JSON object')
        text = body[:-1].rstrip() + ',\n "subset": ' + json.dumps(subset) + '}\n'
    if json.loads(text) != {**record, 'subset': subset}:
        raise ValueError(f'{path}: rewriting it would change other fields')
    path.write_text(text, encoding='utf-8')
    return subset


if __name__ == '__main__':
    import sys
    from horesnet_timm.models.cifar import WEIGHTS
    names = sys.argv[1:] or sorted(p.parent.name for p in WEIGHTS.glob('*/eval.json')
                                   if 'subset' not in json.loads(p.read_text(encoding='utf-8')))
    for name in names:
        print(name, record_subset_top1(name))
