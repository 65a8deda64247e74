"""The paper's CIFAR family (Luo et al. 2021, Sec. 3.1 and Table 3).

Stem conv3x3 3->64 + BN + ReLU, then every sub-network at 64 channels and 32x32 (no
downsampling), global average pool, linear classifier. Depth = 2 x (number of sub-networks) + 2.
Each docstring quotes the paper's Table 3 (parameters, CIFAR-10 top-1): the paper's figures,
not ours. At depths 82 and 86 the printed counts (2.87M, 3.01M) are misprints: this layout holds
2.96M and 3.11M there, and the architecture is not bent to match them.
"""
from pathlib import Path
from typing import Any, Dict

from timm.models import generate_default_cfgs, register_model

from .horesnet import HoResNet, create_horesnet

# CIFAR-10 training-set statistics (population std over all pixels)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_LABELS = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (32, 32),
        'crop_pct': 1.0, 'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'label_names': CIFAR10_LABELS,  # timm's field; ONNX export stores it for the runner
        'first_conv': 'stem.conv', 'classifier': 'fc', 'license': 'apache-2.0',
        'paper_ids': 'arXiv:2103.15244',
        'paper_name': 'Rethinking ResNets: Improved Stacking Strategies With High Order Schemes',
        **kwargs,
    }


def _lm_cfg(**kwargs) -> Dict[str, Any]:
    return _cfg(
        paper_ids='arXiv:1710.10121',
        paper_name='Beyond Finite Layer Neural Networks: Bridging Deep Architectures and Numerical '
                   'Differential Equations',
        **kwargs,
    )


# Weights that ship inside the package, declared here and found at load time: each is a Hub folder
# horesnet_timm/weights/<arch>.<tag>/ staged by `horesnet hub push --dry-run` (model.safetensors,
# config.json, card, eval.json). timm loads `file` before the Hub, so `pretrained=True` needs no
# download; a missing or damaged file fails that model's load, never the import.
# tests/test_published.py checks each declaration against its folder's config.json.
WEIGHTS = Path(__file__).resolve().parents[1] / 'weights'
FASHION_MNIST_LABELS = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
# what a tag trained on each dataset takes; grey weights are published for RGB images (hub push)
TRAINED_ON = {
    'fmnist': dict(input_size=(3, 28, 28), pool_size=(28, 28), mean=(0.286,) * 3, std=(0.353,) * 3,
                   label_names=FASHION_MNIST_LABELS),
}
# staged by experiments/fashion_mnist/ship.py: each scheme's best seed on validation (RESULTS.md there)
SHIPPED = ['horesnet58w16_euler.fmnist', 'horesnet58w16_midpoint.fmnist', 'horesnet58w16_rk4.fmnist',
           'horesnet58w16_rk8.fmnist', 'horesnet58w16_lm.fmnist']


def _shipped_cfg(name: str) -> Dict[str, Any]:
    cfg = _lm_cfg if name.split('.')[0].endswith('_lm') else _cfg
    return cfg(**TRAINED_ON[name.split('.')[1]], hf_hub_id=f'horesnet-timm/{name}',
               file=str(WEIGHTS / name / 'model.safetensors'))


def _create(variant: str, pretrained: bool = False, **kwargs) -> HoResNet:
    model_args = dict(channels=(64,), subnet='preact', stem='cifar')
    return create_horesnet(variant, pretrained, **dict(model_args, **kwargs))


def _create_w16(variant: str, pretrained: bool = False, **kwargs) -> HoResNet:
    # A quarter of the paper's width in the stem and the trunk: the width the Fashion-MNIST
    # evidence was trained at on CPU (experiments/fashion_mnist/RESULTS.md), named as such.
    return _create(variant, pretrained, **dict(dict(stem_width=16, channels=(16,)), **kwargs))


# The shipped tags come first and each untagged cfg is marked default ('.*'): timm would otherwise make
# the first tag with weights the default, and `create_model('horesnet10_rk4')` a 1x28x28 model.
default_cfgs = generate_default_cfgs({
    **{name: _shipped_cfg(name) for name in SHIPPED},
    **{name + '.*': _cfg() for name in [
        'horesnet10_euler', 'horesnet10_midpoint', 'horesnet10_rk4',
        'horesnet18_euler', 'horesnet18_midpoint', 'horesnet18_rk4',
        'horesnet26_rk4',
        'horesnet30_euler', 'horesnet30_midpoint', 'horesnet30_rk8', 'horesnet30_rk8_adaptive',
        'horesnet58_euler', 'horesnet58_midpoint', 'horesnet58_rk4', 'horesnet58_rk8', 'horesnet58_rk8_adaptive',
        'horesnet82_rk4',
        'horesnet86_euler', 'horesnet86_midpoint', 'horesnet86_rk8', 'horesnet86_rk8_adaptive',
    ]},
    'horesnet58_lm.*': _lm_cfg(),
    'horesnet86_lm.*': _lm_cfg(),
    **{name + '.*': _cfg() for name in [
        'horesnet58w16_euler', 'horesnet58w16_midpoint', 'horesnet58w16_rk4', 'horesnet58w16_rk8']},
    'horesnet58w16_lm.*': _lm_cfg(),
})


@register_model
def horesnet10_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-10, 4 Euler blocks. Paper: 0.3M params, 91.72% CIFAR-10."""
    model_args = dict(layers=(4,), scheme='euler')
    return _create('horesnet10_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet10_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-10, 2 midpoint blocks. Paper: 0.3M params, 91.97% CIFAR-10."""
    model_args = dict(layers=(4,), scheme='midpoint')
    return _create('horesnet10_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet10_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-10, 1 RK4 block. Paper: 0.3M params, 91.51% CIFAR-10."""
    model_args = dict(layers=(4,), scheme='rk4')
    return _create('horesnet10_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet18_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-18, 8 Euler blocks. Paper: 0.59M params, 92.68% CIFAR-10."""
    model_args = dict(layers=(8,), scheme='euler')
    return _create('horesnet18_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet18_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-18, 4 midpoint blocks. Paper: 0.59M params, 92.95% CIFAR-10."""
    model_args = dict(layers=(8,), scheme='midpoint')
    return _create('horesnet18_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet18_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-18, 2 RK4 blocks. Paper: 0.59M params, 92.98% CIFAR-10."""
    model_args = dict(layers=(8,), scheme='rk4')
    return _create('horesnet18_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet26_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-26, 3 RK4 blocks. Paper: 0.89M params, 93.41% CIFAR-10."""
    model_args = dict(layers=(12,), scheme='rk4')
    return _create('horesnet26_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet30_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-30, 14 Euler blocks. Paper: 1.03M params, 93.02% CIFAR-10."""
    model_args = dict(layers=(14,), scheme='euler')
    return _create('horesnet30_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet30_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-30, 7 midpoint blocks. Paper: 1.03M params, 93.17% CIFAR-10."""
    model_args = dict(layers=(14,), scheme='midpoint')
    return _create('horesnet30_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet30_rk8(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-30, 1 Verner-8 block, fixed step. Paper: 1.03M params, 93.39% CIFAR-10."""
    model_args = dict(layers=(14,), scheme='verner8')
    return _create('horesnet30_rk8', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet30_rk8_adaptive(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-30, 1 Verner-8 block, learnable step. Paper: 1.03M+1 params, 94.17% CIFAR-10."""
    model_args = dict(layers=(14,), scheme='verner8', learn_step_size=True)
    return _create('horesnet30_rk8_adaptive', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58, 28 Euler blocks. Paper: 2.07M params, 92.81% CIFAR-10."""
    model_args = dict(layers=(28,), scheme='euler')
    return _create('horesnet58_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58, 14 midpoint blocks. Paper: 2.07M params, 94.08% CIFAR-10."""
    model_args = dict(layers=(28,), scheme='midpoint')
    return _create('horesnet58_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58, 7 RK4 blocks. Paper: 2.07M params, 94.79% CIFAR-10."""
    model_args = dict(layers=(28,), scheme='rk4')
    return _create('horesnet58_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58_rk8(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58, 2 Verner-8 blocks, fixed step. Paper: 2.07M params, 94.91% CIFAR-10."""
    model_args = dict(layers=(28,), scheme='verner8')
    return _create('horesnet58_rk8', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58_rk8_adaptive(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58, 2 Verner-8 blocks, learnable step. Paper: 2.07M+2 params, 95.06% CIFAR-10."""
    model_args = dict(layers=(28,), scheme='verner8', learn_step_size=True)
    return _create('horesnet58_rk8_adaptive', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58_lm(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58, 28 LM-ResNet blocks (Lu et al. 2018; not in Table 3)."""
    model_args = dict(layers=(28,), scheme='lm')
    return _create('horesnet58_lm', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet82_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-82, 10 RK4 blocks. Paper: 2.87M (misprint; the layout gives 2.96M) params, 94.83% CIFAR-10."""
    model_args = dict(layers=(40,), scheme='rk4')
    return _create('horesnet82_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet86_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-86, 42 Euler blocks. Paper: 3.01M (misprint; the layout gives 3.11M) params, 92.73% CIFAR-10."""
    model_args = dict(layers=(42,), scheme='euler')
    return _create('horesnet86_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet86_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-86, 21 midpoint blocks. Paper: 3.01M (misprint; 3.11M) params, 93.87% CIFAR-10."""
    model_args = dict(layers=(42,), scheme='midpoint')
    return _create('horesnet86_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet86_rk8(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-86, 3 Verner-8 blocks, fixed step. Paper: 3.01M+ (misprint; 3.11M) params, 95.02% CIFAR-10."""
    model_args = dict(layers=(42,), scheme='verner8')
    return _create('horesnet86_rk8', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet86_rk8_adaptive(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-86, 3 Verner-8 blocks, learnable step. Paper: 3.01M+3 (misprint; 3.11M+3) params, 95.15% CIFAR-10."""
    model_args = dict(layers=(42,), scheme='verner8', learn_step_size=True)
    return _create('horesnet86_rk8_adaptive', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet86_lm(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-86, 42 LM-ResNet blocks (Lu et al. 2018; not in Table 3)."""
    model_args = dict(layers=(42,), scheme='lm')
    return _create('horesnet86_lm', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58w16_euler(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58 at width 16 (stem and trunk; the paper's is 64), 28 Euler blocks."""
    model_args = dict(layers=(28,), scheme='euler')
    return _create_w16('horesnet58w16_euler', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58w16_midpoint(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58 at width 16 (stem and trunk; the paper's is 64), 14 midpoint blocks."""
    model_args = dict(layers=(28,), scheme='midpoint')
    return _create_w16('horesnet58w16_midpoint', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58w16_rk4(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58 at width 16 (stem and trunk; the paper's is 64), 7 RK4 blocks."""
    model_args = dict(layers=(28,), scheme='rk4')
    return _create_w16('horesnet58w16_rk4', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58w16_rk8(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58 at width 16 (stem and trunk; the paper's is 64), 2 Verner-8 blocks, fixed step."""
    model_args = dict(layers=(28,), scheme='verner8')
    return _create_w16('horesnet58w16_rk8', pretrained, **dict(model_args, **kwargs))


@register_model
def horesnet58w16_lm(pretrained: bool = False, **kwargs) -> HoResNet:
    """HO-ResNet-58 at width 16 (stem and trunk; the paper's is 64), 28 LM-ResNet blocks."""
    model_args = dict(layers=(28,), scheme='lm')
    return _create_w16('horesnet58w16_lm', pretrained, **dict(model_args, **kwargs))
