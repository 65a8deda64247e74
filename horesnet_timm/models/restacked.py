"""`restacked`: a timm model of the registry with its residual blocks grouped by a scheme (restack.py).

    timm.create_model('restacked', base='resnet50', scheme='rk4')            # random weights
    timm.create_model('restacked', base='resnet50', scheme='rk4', pretrained=True)   # resnet50's weights
    python train.py ... --model restacked --model-kwargs base=resnet50 scheme=rk4 --device-modules horesnet_timm

Model arguments: `base` (a timm model name, with a pretrained tag if wanted, e.g.
resnet50.a1_in1k), `scheme`, `learn_step_size`; every other argument (num_classes, in_chans,
drop_path_rate, layers, ...) goes to the base model. The model is the base model's class, built by
timm, then restacked in place: its pretrained_cfg is the base's (data config, classifier name)
with `architecture='restacked'`, and its recorded arguments include base and scheme, so timm's
save_for_hf writes a config.json that `hf-hub:` / `local-dir:` rebuild.

Weights: `pretrained=True` alone loads the base model's published weights through timm (with its
own checkpoint filter and classifier / input-channel adaptation), then restacks. A pretrained_cfg
that names restacked weights (what `hf-hub:` and `local-dir:` pass) loads them after restacking;
a state dict of the base model loads too (`restack_plan.convert_state_dict` renames its keys).
"""
from typing import Any, Dict, Optional, Union

import timm
import torch.nn as nn
from timm.models import generate_default_cfgs, load_pretrained, register_model
from timm.models._builder import resolve_pretrained_cfg
from timm.models._pretrained import PretrainedCfg

from ..restacking import restack

__all__ = ['restacked', 'create_restacked']

DEFAULT_BASE = 'resnet50'
DEFAULT_SCHEME = 'rk4'

# The registry entry: no weights of its own. A built model reports its base's cfg instead.
default_cfgs = generate_default_cfgs({
    'restacked': {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225), 'license': 'apache-2.0',
        'paper_ids': 'arXiv:2103.15244',
        'paper_name': 'Rethinking ResNets: Improved Stacking Strategies With High Order Schemes',
    },
})


def create_restacked(
        variant: str,
        pretrained: bool = False,
        base: str = DEFAULT_BASE,
        scheme: str = DEFAULT_SCHEME,
        learn_step_size: bool = False,
        pretrained_cfg: Optional[Union[str, Dict[str, Any], PretrainedCfg]] = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        pretrained_model_args: Optional[Dict[str, Any]] = None,
        cache_dir=None,
        **kwargs,
) -> nn.Module:
    if not isinstance(base, str) or not timm.is_model(base):
        raise ValueError(f"{variant}: base must be a timm model name (timm.list_models()), got {base!r}")
    if kwargs.get('features_only'):
        raise ValueError(f'{variant} does not support features_only: restack the classifier model')
    if isinstance(pretrained_cfg, str):
        raise ValueError(f"{variant} has no pretrained tags of its own ('{pretrained_cfg}'): name the base weights' "
                         f"tag in base=, e.g. base={base.split('.')[0]}.{pretrained_cfg}")
    own_weights = pretrained_cfg is not None  # restacked weights: a config.json from hf-hub: or local-dir:
    if own_weights:
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay).to_dict()
        if cfg.get('num_classes') is not None and cfg['num_classes'] >= 0:
            kwargs.setdefault('num_classes', cfg['num_classes'])
        model = timm.create_model(base, pretrained=False, **kwargs)
    else:
        model = timm.create_model(base, pretrained=pretrained, pretrained_cfg_overlay=pretrained_cfg_overlay,
                                  cache_dir=cache_dir, **kwargs)
        cfg = dict(model.pretrained_cfg)
    restack(model, scheme, learn_step_size)
    model.pretrained_cfg = model.default_cfg = dict(cfg, architecture=variant)
    model.pretrained_model_args = dict(pretrained_model_args or {})
    if own_weights and pretrained:
        load_pretrained(model, model.pretrained_cfg, num_classes=model.num_classes,
                        in_chans=kwargs.get('in_chans', 3), filter_fn=model.restack_plan.convert_state_dict,
                        cache_dir=cache_dir)
    # recorded for save_for_hf (create_model adds the keywords it was given on top)
    model._model_args = dict(getattr(model, '_model_args', {}), base=base, scheme=model.scheme,
                             learn_step_size=learn_step_size)
    return model


@register_model
def restacked(pretrained: bool = False, **kwargs) -> nn.Module:
    """A timm model with its runs of residual blocks restacked by a scheme: base=resnet50, scheme=rk4 by default."""
    return create_restacked('restacked', pretrained, **kwargs)
