"""An ImageNet-resolution family: ResNet's stem and four stride-2 stages, sub-networks stacked by a scheme.

The paper's CIFAR layout keeps 64 channels at full resolution, far too costly at 224x224. Here
each stage opens with a ResNet transition block (stride 2 and/or projection shortcut, a plain
residual step because the shape changes) and continues with scheme-stacked sub-networks, so
every scheme at a given depth has exactly the same weights.

Stacked sub-networks per stage are (4, 4, 4, 0): multiples of 4 so Euler, midpoint, RK4 and LM
share one layout, and the last stage (7x7, where a ResNet keeps most of its weights) is its
transition block alone.
  * horesnet32i_*: ResNet's basic F (conv3x3 x2); 15 residual units, 11.5M params (ResNet-18 size)
    at 3.4 GMACs (ResNet-34 cost).
  * horesnet50i_*: ResNet's bottleneck F; 16 units as ResNet-50, 15.9M params at 4.1 GMACs.
Measured by `horesnet tour`; the README's model table is checked against it by a test.
"""
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from .horesnet import HoResNet, create_horesnet


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv', 'classifier': 'fc', 'license': 'apache-2.0',
        **kwargs,
    }


def _create(variant: str, pretrained: bool = False, **kwargs) -> HoResNet:
    model_args = dict(layers=(4, 4, 4, 0), channels=(64, 128, 256, 512), stem='imagenet', zero_init_last=True)
    return create_horesnet(variant, pretrained, **dict(model_args, **kwargs))


default_cfgs = generate_default_cfgs({
    name: _cfg() for name in [
        'horesnet32i_euler', 'horesnet32i_midpoint', 'horesnet32i_rk4', 'horesnet32i_lm',
        'horesnet50i_euler', 'horesnet50i_midpoint', 'horesnet50i_rk4', 'horesnet50i_lm',
    ]
})


@register_model
def horesnet32i_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-32i, basic sub-networks with Euler (plain residual) stacking."""
    model_args = dict(subnet='basic', scheme='euler')
    return _create('horesnet32i_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet32i_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-32i, basic sub-networks with midpoint stacking."""
    model_args = dict(subnet='basic', scheme='midpoint')
    return _create('horesnet32i_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet32i_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-32i, basic sub-networks with RK4 stacking."""
    model_args = dict(subnet='basic', scheme='rk4')
    return _create('horesnet32i_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet32i_lm(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-32i, basic sub-networks with LM-ResNet stacking."""
    model_args = dict(subnet='basic', scheme='lm')
    return _create('horesnet32i_lm', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet50i_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-50i, bottleneck sub-networks with Euler (plain residual) stacking."""
    model_args = dict(subnet='bottleneck', scheme='euler')
    return _create('horesnet50i_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet50i_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-50i, bottleneck sub-networks with midpoint stacking."""
    model_args = dict(subnet='bottleneck', scheme='midpoint')
    return _create('horesnet50i_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet50i_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-50i, bottleneck sub-networks with RK4 stacking."""
    model_args = dict(subnet='bottleneck', scheme='rk4')
    return _create('horesnet50i_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet50i_lm(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-50i, bottleneck sub-networks with LM-ResNet stacking."""
    model_args = dict(subnet='bottleneck', scheme='lm')
    return _create('horesnet50i_lm', pretrained, **dict(model_args, **kwargs))
