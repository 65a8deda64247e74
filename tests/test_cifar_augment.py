"""`aa: cifar10` / `aa: padcrop` in timm's train transform: what the paper's CIFAR pipeline does, and
nothing changes in timm until horesnet_timm.cifar_augment is imported."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from timm.data import create_transform
from torchvision import transforms

from horesnet_timm.cifar_augment import RandomPadCrop


def _train_transform(aa, size=32):
    # the CIFAR configs' settings: RandomResizedCrop with scale/ratio 1 is the identity
    return create_transform(size, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                            auto_augment=aa, mean=(0, 0, 0), std=(1, 1, 1))


def _image(size=32, mode='RGB'):
    pixels = np.random.default_rng(0).integers(1, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _is_pad4_crop(out, img):
    padded = np.pad(np.asarray(img), [(4, 4), (4, 4)] + [(0, 0)] * (np.asarray(img).ndim - 2))
    h, w = out.shape[:2]
    return [(i, j) for i in range(9) for j in range(9) if np.array_equal(padded[i:i + h, j:j + w], out)]


@pytest.mark.parametrize('mode', ['RGB', 'L'])
def test_padcrop_is_a_translation_with_zero_fill(mode):
    img, crop = _image(mode=mode), RandomPadCrop(4)
    offsets = set()
    for _ in range(200):
        out = np.asarray(crop(img))
        assert out.shape == np.asarray(img).shape
        found = _is_pad4_crop(out, img)
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 40  # 81 offsets possible, drawn uniformly


def test_train_transform_uses_them():
    import horesnet_timm.cifar_augment  # noqa: F401
    padcrop = _train_transform('padcrop')
    out = padcrop(_image())  # identity RRC -> pad-crop -> ToTensor
    assert _is_pad4_crop((out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), _image())
    cifar10 = _train_transform('cifar10')
    aa = [t for t in cifar10.transforms if isinstance(t, transforms.Compose)][0].transforms
    assert isinstance(aa[0], RandomPadCrop) and aa[1].policy == transforms.AutoAugmentPolicy.CIFAR10
    assert cifar10(_image()).shape == (3, 32, 32)
    assert 'AutoAugment' in type(_train_transform('original').transforms[1]).__name__  # timm's own still there


def test_plain_import_does_not_patch_timm():
    code = ('import horesnet_timm, timm.data as d\n'
            'try:\n    d.create_transform(32, is_training=True, auto_augment="cifar10")\n'
            'except AssertionError as e:\n    print("unknown:", e)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'unknown: Unknown AA policy cifar10' in result.stdout, result.stderr
