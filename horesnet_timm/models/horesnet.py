"""HO-ResNet: residual stages whose sub-networks are stacked by a higher-order scheme.

One class serves both layouts, parametrised by what repeats:
  * the paper's CIFAR layout (Luo et al. 2021, Sec. 3.1): a conv3x3 stem and one stage of
    pre-activation sub-networks at 64 channels and full resolution;
  * an ImageNet layout: ResNet's 7x7 stem and max-pool, then four stages, each opened by a
    ResNet transition block (stride 2 / projection) and followed by scheme-stacked sub-networks.

`layers` counts the sub-networks F per stage (after the transition). A stage of n sub-networks
becomes n / s blocks of an s-stage scheme, so every scheme at a given `layers` has the same
weights; only the way they are combined differs.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import calculate_drop_path_rates, create_classifier, get_act_layer, get_device_dtype, get_norm_layer
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq
from timm.models._features import feature_take_indices

from ..blocks import SUBNETS, MultistepBlock, SchemeBlock, Transition
from ..schemes import Scheme, get_scheme

__all__ = ['HoResNet', 'Stage', 'MultistepStage', 'create_horesnet']


class Stage(nn.Module):
    """An optional transition, then scheme blocks applied in sequence."""

    def __init__(self, transition: Optional[nn.Module], blocks: List[nn.Module]):
        super().__init__()
        self.transition = transition if transition is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MultistepStage(Stage):
    """LM-ResNet stage: each block also sees the previous block's input."""

    def __init__(self, transition: Optional[nn.Module], blocks: List[nn.Module]):
        super().__init__(transition, [])
        self.blocks = nn.ModuleList(blocks)  # not Sequential: its blocks take and return (x, prev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(x)
        prev: Optional[torch.Tensor] = None
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x, prev = checkpoint(block, x, prev)
            else:
                x, prev = block(x, prev)
        return x


def _layers_error(scheme: Scheme, stage: int, layers: Tuple[int, ...], depth_of) -> ValueError:
    s, count = scheme.stages, layers[stage]
    options = [n for n in (count // s * s, (count // s + 1) * s) if n > 0]
    fixes = [tuple(layers[:stage]) + (n,) + tuple(layers[stage + 1:]) for n in options]
    return ValueError(
        f'scheme {scheme.name!r} has {s} stages, so a stage needs a multiple of {s} sub-networks, but stage '
        f'{stage + 1} has {count} (layers={tuple(layers)}). Use '
        + ' or '.join(f'layers={fix} (depth {depth_of(fix)})' for fix in fixes) + '.')


class HoResNet(nn.Module):
    """HO-ResNet and LM-ResNet, a timm model.

    Args:
        layers: sub-networks F per stage (after each stage's transition, if any).
        channels: width of each stage (before the sub-network's expansion).
        scheme: a name from `horesnet_timm.list_schemes()` or a `Scheme`.
        subnet: 'preact' (BN-ReLU-Conv x2, the HO-ResNet authors'), 'basic' or 'bottleneck' (ResNet's).
        stem: 'cifar' (conv3x3, stride 1) or 'imagenet' (conv7x7 stride 2 + 3x3 max-pool).
        learn_step_size: one learnable step size h per block, initialised to 1 (the paper's 'adaptive').
        block_act: apply the activation after each block's final add (the authors' choice), else none.
        zero_init_last: zero the last layer of every sub-network, so each block starts as the identity.
    """

    def __init__(
            self,
            layers: Tuple[int, ...] = (28,),
            channels: Tuple[int, ...] = (64,),
            scheme: Union[str, Scheme] = 'euler',
            subnet: str = 'preact',
            stem: str = 'cifar',
            stem_width: int = 64,
            learn_step_size: bool = False,
            block_act: bool = True,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            zero_init_last: bool = False,
            act_layer: Union[str, type] = nn.ReLU,
            norm_layer: Union[str, type] = nn.BatchNorm2d,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        scheme = get_scheme(scheme)
        if subnet not in SUBNETS:
            raise ValueError(f'unknown subnet {subnet!r}; valid: {", ".join(SUBNETS)}')
        if stem not in ('cifar', 'imagenet'):
            raise ValueError(f"unknown stem {stem!r}; valid: 'cifar', 'imagenet'")
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f'in_chans must be a positive integer (3 for RGB, 1 for grayscale), got {in_chans!r}')
        if len(layers) != len(channels):
            raise ValueError(f'layers {tuple(layers)} and channels {tuple(channels)} must have one entry per stage')
        if learn_step_size and scheme.multistep:
            raise ValueError("learn_step_size applies to Runge-Kutta schemes; 'lm' learns its k_n instead")
        subnet_cls = SUBNETS[subnet]

        act_layer = get_act_layer(act_layer)
        norm_layer = get_norm_layer(norm_layer)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.scheme = scheme.name
        self.grad_checkpointing = False

        # per stage: (in_chs, out_chs, stride); a transition opens it when the shape changes
        expansion = getattr(subnet_cls, 'expansion', 1)
        widths = [stem_width] + [w * expansion for w in channels]
        plan = [(widths[i], widths[i + 1], 1 if i == 0 else 2) for i in range(len(layers))]
        has_transition = [stride != 1 or cin != cout for cin, cout, stride in plan]
        depth_of = lambda ls: 2 + subnet_cls.convs * (sum(ls) + sum(has_transition))  # stem + convs + classifier
        for i, count in enumerate(layers):
            if count < 0 or count % scheme.stages:
                raise _layers_error(scheme, i, layers, depth_of)
        self.depth = depth_of(layers)

        stem_stride = 1 if stem == 'cifar' else 2
        self.stem = nn.Sequential()
        self.stem.add_module('conv', nn.Conv2d(
            in_chans, stem_width, 3 if stem == 'cifar' else 7, stride=stem_stride,
            padding=1 if stem == 'cifar' else 3, bias=False, **dd))
        self.stem.add_module('bn', norm_layer(stem_width, **dd))
        self.stem.add_module('act', act_layer(inplace=True))
        self.stem_pool = nn.Identity() if stem == 'cifar' else nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=stem_width, reduction=stem_stride, module='stem')]
        reduction = stem_stride * (1 if stem == 'cifar' else 2)

        # stochastic depth: one rate per residual unit (transition or block), rising linearly
        num_units = sum(has_transition) + sum(layers) // scheme.stages
        dpr = iter(calculate_drop_path_rates(drop_path_rate, num_units))

        block_act_layer = act_layer if block_act else None
        make = lambda cin, cout, s=1: subnet_cls(cin, cout, s, act_layer=act_layer, norm_layer=norm_layer, **dd)
        stages = []
        for i, ((cin, cout, stride), count) in enumerate(zip(plan, layers)):
            transition = None
            if has_transition[i]:
                transition = Transition(
                    make(cin, cout, stride), cin, cout, stride, drop_path=next(dpr),
                    act_layer=block_act_layer, norm_layer=norm_layer, **dd)
            if scheme.multistep:
                blocks = [MultistepBlock(make(cout, cout), first=j == 0, drop_path=next(dpr),
                                         act_layer=block_act_layer, **dd) for j in range(count)]
                stages.append(MultistepStage(transition, blocks))
            else:
                blocks = [SchemeBlock(scheme, [make(cout, cout) for _ in range(scheme.stages)],
                                      learn_step_size=learn_step_size, drop_path=next(dpr),
                                      act_layer=block_act_layer, **dd) for _ in range(count // scheme.stages)]
                stages.append(Stage(transition, blocks))
            reduction *= stride
            self.feature_info.append(dict(num_chs=cout, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)

        self.num_features = widths[-1]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = False):
        """(Re)initialise every weight and buffer, e.g. after `to_empty()` on a meta-built model."""
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()  # norms (and their running stats), step sizes, LM k_n
            # Kaiming-normal convs and classifier, as the HO-ResNet authors
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.transition', (-1,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return 'fc' if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def _check_input(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                'expected an NCHW batch with ' + str(self.in_chans) + ' channels (in_chans), got shape '
                + str(list(x.shape)) + '; add a batch dimension with x.unsqueeze(0), or create the model '
                + 'with in_chans=' + str(x.shape[-3] if x.dim() >= 3 else 1))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features after the stem (index 0) and after each stage (1..n)."""
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        self._check_input(x)
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.stem_pool(x)
        stages = self.stages if not stop_early else self.stages[:max_index]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i + 1 in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        prune_end = max_index < len(self.stages)
        self.stages = self.stages[:max_index]
        if max_index == 0:
            self.stem_pool = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self.stem_pool(self.stem(x))
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_horesnet(variant: str, pretrained: bool = False, **kwargs) -> HoResNet:
    out_indices = tuple(range(len(kwargs.get('layers', (0,))) + 1))
    return build_model_with_cfg(
        HoResNet, variant, pretrained,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
        **kwargs,
    )
