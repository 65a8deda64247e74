"""CIFAR training augmentation for timm's train.py: `--aa cifar10` and `--aa padcrop`.

The paper trains with the usual CIFAR pipeline: zero-pad by 4 and crop back at a random offset,
horizontal flip, then AutoAugment with its CIFAR-10 policy (Cubuk et al., 2019). timm's train.py
knows neither the pad-crop nor the CIFAR-10 policy, and timm has no registry for augmentations.
So this module, and only this module, patches one timm function: the AutoAugment factory that
timm's train transform calls (`timm.data.transforms_factory.auto_augment_transform`) learns two
names and passes every other name through unchanged:

    cifar10   pad-4 random crop, then torchvision's AutoAugment(AutoAugmentPolicy.CIFAR10)
    padcrop   pad-4 random crop only (the paper's "raw data" runs)

The patch happens when this module is imported, which train.py does for every entry of
`--device-modules` (our CIFAR configs list it). `import horesnet_timm` alone does not import it.
Used with `scale: [1, 1]` and `ratio: [1, 1]`, timm's RandomResizedCrop is the identity, so the
train transform is: pad-crop + AutoAugment (+ the flip timm applies first) + ToTensor/Normalize.
"""
from typing import Callable, Dict

import timm.data.transforms_factory as transforms_factory
from torchvision import transforms
from torchvision.transforms import functional as F

__all__ = ['RandomPadCrop', 'CIFAR_AUGMENTATIONS']


class RandomPadCrop:
    """Zero-pad by `padding` pixels and crop back to the input's size at a uniformly random offset."""

    def __init__(self, padding: int = 4):
        self.padding = padding

    def __call__(self, img):
        width, height = img.size
        padded = F.pad(img, [self.padding], fill=0)
        top, left, _, _ = transforms.RandomCrop.get_params(padded, (height, width))
        return F.crop(padded, top, left, height, width)

    def __repr__(self):
        return f'{type(self).__name__}(padding={self.padding})'


CIFAR_AUGMENTATIONS: Dict[str, Callable[[], Callable]] = {
    'cifar10': lambda: transforms.Compose([
        RandomPadCrop(4), transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)]),
    'padcrop': lambda: RandomPadCrop(4),
}


def _install() -> None:
    timm_factory = getattr(transforms_factory, 'auto_augment_transform', None)
    if timm_factory is None:
        raise ImportError('horesnet_timm.cifar_augment: this timm has no '
                          'timm.data.transforms_factory.auto_augment_transform to extend; use timm>=1.0.31,<1.1 '
                          'or drop horesnet_timm.cifar_augment from device_modules and the aa key from the config')
    if getattr(timm_factory, 'extends_timm', None):
        return  # already installed

    def auto_augment_transform(config_str, hparams=None):
        if config_str in CIFAR_AUGMENTATIONS:
            return CIFAR_AUGMENTATIONS[config_str]()
        return timm_factory(config_str, hparams)

    auto_augment_transform.extends_timm = timm_factory
    transforms_factory.auto_augment_transform = auto_augment_transform


_install()
