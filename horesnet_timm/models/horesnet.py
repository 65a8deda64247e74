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
import json
from numbers import Integral, Real
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import (
    calculate_drop_path_rates, create_classifier, get_act_layer, get_device_dtype, get_norm_layer,
    register_notrace_function)
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from timm.models._features_fx import FeatureGraphNet

from ..blocks import SUBNETS, MultistepBlock, SchemeBlock, Transition
from ..schemes import Scheme, get_scheme
from ..stages import MultistepStage, Stage

__all__ = ['HoResNet', 'Stage', 'MultistepStage', 'STEMS', 'create_horesnet']


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int, meaning: str = ''):
    if not _is_int(value) or value < minimum:
        error = ValueError if _is_int(value) else TypeError
        raise error(f'{name} must be an integer >= {minimum}{meaning}, got {value!r}')


def _check_per_stage(name: str, value, example: str, minimum: Optional[int] = None) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
        raise TypeError(f'{name} must be a tuple of integers, one per stage (e.g. {name}={example}), got {value!r}')
    if not value or (minimum is not None and min(value) < minimum):
        at_least = f' >= {minimum}' if minimum is not None else ''
        raise ValueError(f'{name} must have one integer{at_least} per stage (e.g. {name}={example}), '
                         f'got {tuple(value)!r}')
    return tuple(int(v) for v in value)


def _check_rate(name: str, value):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f'{name} must be a probability, a number with 0 <= {name} < 1, got {value!r}')
    if not 0 <= value < 1:
        raise ValueError(f'{name} must be a probability, 0 <= {name} < 1, got {value!r}')


# timm's SelectAdaptivePool2d pool types; '' keeps the feature map (features only)
POOL_TYPES = ('', 'avg', 'max', 'avgmax', 'catavgmax')


def _layer(name: str, get, value):
    """timm's layer factory lookup, with a ValueError naming the argument (timm raises a bare KeyError)."""
    try:
        return get(value)
    except (KeyError, ValueError, AssertionError):
        examples = 'relu, gelu, silu' if name == 'act_layer' else 'batchnorm2d, groupnorm'
        raise ValueError(f'unknown {name} {value!r}: give a name timm knows (e.g. {examples}) or a class') from None


def _check_flag(name: str, value):
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')


def _check_layers(scheme: Scheme, layers: Tuple[int, ...], has_transition: List[bool], depth_of):
    """Each stage holds whole blocks and computes something; else a ValueError with depths that work."""
    for stage, count in enumerate(layers):
        if count < 0:
            problem = f'stage {stage + 1} has {count} sub-networks, and a count cannot be negative'
        elif count == 0 and not has_transition[stage]:
            problem = (f'stage {stage + 1} has no sub-networks and no transition block (its width and '
                       f'resolution do not change), so it would be empty')
        elif count % scheme.stages:
            problem = (f'scheme {scheme.name!r} has {scheme.stages} stages, so a stage needs a multiple of '
                       f'{scheme.stages} sub-networks, but stage {stage + 1} has {count}')
        else:
            continue
        s, n = scheme.stages, abs(count)
        options = [n] if n and n % s == 0 else [m for m in (n // s * s, (n // s + 1) * s) if m > 0]
        fixes = [layers[:stage] + (m,) + layers[stage + 1:] for m in options]
        raise ValueError(f'{problem} (layers={layers}). Use '
                         + ' or '.join(f'layers={fix} (depth {depth_of(fix)})' for fix in fixes) + '.')


@register_notrace_function  # timm's FX tracer records one call, run on the real input
def check_input(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """`x` if it is an NCHW batch of `in_chans` channels, else a ValueError that names the likely cause."""
    if x.dim() == 4 and x.shape[1] == in_chans:
        return x
    if x.dim() == 3 and x.shape[0] == in_chans:
        cause = 'this is one CHW image: add a batch dimension with x.unsqueeze(0)'
    elif x.dim() == 4 and x.shape[3] == in_chans:
        cause = 'this is an NHWC (channels-last) batch: permute it with x.permute(0, 3, 1, 2)'
    elif x.dim() == 4:
        cause = (f'the model takes {in_chans} channels (in_chans) but the input has {x.shape[1]}: create the model '
                 f'with in_chans={x.shape[1]} or convert the images')
    else:
        cause = f'expected a 4-D NCHW batch, the input is {x.dim()}-D'
    raise ValueError(f'expected an NCHW batch with {in_chans} channels, got shape {list(x.shape)}; {cause}')


# Every torch.fx tracer (torchvision's create_feature_extractor included, which knows no timm list)
# records check_input as one call instead of tracing its shape tests.
torch.fx.wrap('check_input')


def _subnet_taps(num_subnets: int, per_block: int, **info) -> List[Dict]:
    """feature_info of a flat trunk's inner taps: the input of sub-network i, 0 < i < num_subnets.

    At a block boundary that is the previous block's output. Inside a Runge-Kutta block no module
    outputs it, so the tap is the sub-network's input (hook_type='forward_pre', which timm's hook
    extractor reads; its FX extractor reads module outputs and would return k_i instead).
    """
    taps = []
    for i in range(1, num_subnets):
        block, stage = divmod(i, per_block)
        if stage == 0:
            taps.append(dict(info, module=f'stages.0.blocks.{block - 1}'))
        else:
            taps.append(dict(info, module=f'stages.0.blocks.{block}.subnets.{stage}', hook_type='forward_pre'))
    return taps


# stem -> (odd conv kernel size, conv stride, a 3x3 stride-2 max-pool after it); a new stem is an entry here
STEMS = {
    'cifar': (3, 1, False),  # the paper's: full resolution into the first stage
    'imagenet': (7, 2, True),  # ResNet's: a quarter of the resolution
}


def _check_arguments(scheme: Scheme, layers, channels, *, subnet, stem, stem_width, in_chans, num_classes, global_pool,
                     drop_rate, drop_path_rate, learn_step_size, block_act, zero_init_last) -> Tuple[tuple, tuple]:
    """Refuse, naming the argument, what cannot build a model; returns layers and channels as tuples."""
    layers = _check_per_stage('layers', layers, '(28,)')
    channels = _check_per_stage('channels', channels, '(64,)', minimum=1)
    _check_int('stem_width', stem_width, 1)
    _check_int('in_chans', in_chans, 1, ' (3 for RGB, 1 for grayscale)')
    _check_int('num_classes', num_classes, 0, ' (0 for no classifier)')
    _check_rate('drop_rate', drop_rate)
    _check_rate('drop_path_rate', drop_path_rate)
    _check_flag('learn_step_size', learn_step_size)
    _check_flag('block_act', block_act)
    _check_flag('zero_init_last', zero_init_last)
    if not isinstance(subnet, str) or subnet not in SUBNETS:
        raise ValueError(f'unknown subnet {subnet!r}; valid: {", ".join(SUBNETS)}')
    if not isinstance(stem, str) or stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(map(repr, STEMS))}")
    if len(layers) != len(channels):
        raise ValueError(f'layers {layers} and channels {channels} must have one entry per stage')
    if learn_step_size and scheme.multistep:
        raise ValueError("learn_step_size applies to Runge-Kutta schemes; 'lm' learns its k_n instead")
    if global_pool not in POOL_TYPES or (global_pool == '' and num_classes > 0):
        raise ValueError(f"global_pool {global_pool!r}: choose one of {', '.join(map(repr, POOL_TYPES[1:]))}, "
                         f"or '' (the unpooled map) with num_classes=0")
    return layers, channels


class HoResNet(nn.Module):
    """HO-ResNet and LM-ResNet, a timm model.

    Args:
        layers: sub-networks F per stage (after each stage's transition, if any).
        channels: width of each stage (before the sub-network's expansion).
        scheme: a name from `horesnet_timm.list_schemes()` or a `Scheme`.
        subnet: 'preact' (BN-ReLU-Conv x2, the HO-ResNet authors'), 'basic' or 'bottleneck' (ResNet's).
        stem: a key of STEMS: 'cifar' (conv3x3, stride 1) or 'imagenet' (conv7x7 stride 2 + 3x3 max-pool).
        output_stride: 32, 16 or 8 for a trunk that reduces by 32 (the ImageNet layout): the last stages dilate
            instead of striding, as timm's ResNet, for dense prediction (DeepLab); the weights are the same.
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
            output_stride: int = 32,
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
        layers, channels = _check_arguments(
            scheme, layers, channels, subnet=subnet, stem=stem, stem_width=stem_width, in_chans=in_chans,
            num_classes=num_classes, global_pool=global_pool, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            learn_step_size=learn_step_size, block_act=block_act, zero_init_last=zero_init_last)
        subnet_cls = SUBNETS[subnet]
        act_layer, norm_layer = _layer('act_layer', get_act_layer, act_layer), _layer('norm_layer', get_norm_layer,
                                                                                    norm_layer)
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
        _check_layers(scheme, layers, has_transition, depth_of)
        self.depth = depth_of(layers)
        # One stage of sub-networks is a non-hierarchical trunk, all at one resolution: as timm's
        # ViTs tap every block, it taps every sub-network's input. Staged trunks tap each stage.
        self.flat = len(layers) == 1 and layers[0] > 0

        kernel_size, stem_stride, pooled = STEMS[stem]
        reduction = stem_stride * (2 if pooled else 1)
        if output_stride not in (8, 16, 32) or (output_stride != 32 and reduction * 2 ** (len(plan) - 1) != 32):
            raise ValueError(f'output_stride {output_stride!r}: a trunk that reduces its input 32 times (the ImageNet '
                             f'layout) takes 32, 16 or 8; this one reduces it {reduction * 2 ** (len(plan) - 1)} '
                             f'times, so it has no stride to trade for dilation and takes 32 only')
        self.stem = nn.Sequential()
        self.stem.add_module('conv', nn.Conv2d(in_chans, stem_width, kernel_size, stride=stem_stride,
                                               padding=kernel_size // 2, bias=False, **dd))
        self.stem.add_module('bn', norm_layer(stem_width, **dd))
        self.stem.add_module('act', act_layer(inplace=True))
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1) if pooled else nn.Identity()
        self.feature_info = [dict(num_chs=stem_width, reduction=stem_stride, module='stem')]

        # stochastic depth: one rate per residual unit (transition or block), rising linearly
        num_units = sum(has_transition) + sum(layers) // scheme.stages
        dpr = iter(calculate_drop_path_rates(drop_path_rate, num_units))

        block_act_layer = act_layer if block_act else None
        make = lambda cin, cout, s=1, d=1: subnet_cls(cin, cout, s, d, act_layer=act_layer, norm_layer=norm_layer, **dd)
        stages = []
        dilation = 1
        for i, ((cin, cout, stride), count) in enumerate(zip(plan, layers)):
            if reduction * stride > output_stride:  # past the output stride: dilate instead (timm's ResNet)
                dilation, stride = dilation * stride, 1
            transition = None
            if has_transition[i]:
                transition = Transition(
                    make(cin, cout, stride, dilation), cin, cout, stride, drop_path=next(dpr),
                    act_layer=block_act_layer, norm_layer=norm_layer, **dd)
            if scheme.multistep:
                blocks = [MultistepBlock(make(cout, cout, 1, dilation), first=j == 0, drop_path=next(dpr),
                                         act_layer=block_act_layer, **dd) for j in range(count)]
                stages.append(MultistepStage(transition, blocks))
            else:
                blocks = [SchemeBlock(scheme, [make(cout, cout, 1, dilation) for _ in range(scheme.stages)],
                                      learn_step_size=learn_step_size, drop_path=next(dpr),
                                      act_layer=block_act_layer, **dd) for _ in range(count // scheme.stages)]
                stages.append(Stage(transition, blocks))
            reduction *= stride
            if self.flat:
                self.feature_info += _subnet_taps(count, scheme.stages, num_chs=cout, reduction=reduction)
            self.feature_info.append(dict(num_chs=cout, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_taps = len(self.feature_info)

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

    # The classifier's weights do not show how the features they read were pooled: the state dict records it,
    # and weights with a classifier refuse a model that pools otherwise (without one, any pooling is a choice).
    @torch.jit.unused
    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(list(json.dumps({'global_pool': self.global_pool.pool_type}).encode()), dtype=torch.uint8)

    @torch.jit.unused
    def set_extra_state(self, state: torch.Tensor) -> None:
        pass  # compared in _load_from_state_dict, which knows whether the weights hold a classifier

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        record, mine = state_dict.get(prefix + '_extra_state'), self.global_pool.pool_type
        if record is not None and prefix + 'fc.weight' in state_dict and self.num_classes:
            try:
                saved = json.loads(bytes(record.tolist()).decode())['global_pool']
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                raise ValueError(f'the head record in these weights is damaged ({e!r})') from e
            if saved != mine:
                raise ValueError(
                    f"these weights' classifier reads {saved!r}-pooled features and this model pools by {mine!r}: "
                    f"its outputs would mean nothing. Build it with global_pool={saved!r}, or with another "
                    f"num_classes (a new classifier) or num_classes=0 (features) to pool otherwise")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if record is None and prefix + '_extra_state' in missing_keys:
            missing_keys.remove(prefix + '_extra_state')  # weights saved before the head was recorded

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The taps `feature_info` lists: the stem output (index 0), then in a flat trunk the input of
        sub-networks 1..N-1 and the trunk output (N), in a staged trunk each stage's output.
        There is no final norm, so `norm` changes nothing."""
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        x = check_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(self.num_taps, indices)
        stop = max_index if stop_early else self.num_taps - 1  # sub-networks (flat) or stages to run
        intermediates: List[torch.Tensor] = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.stem_pool(x)
        for i, stage in enumerate(self.stages):
            if self.flat:  # the one stage (none once pruned to the stem): tap i > 0 is sub-network i's input
                x, inputs = stage.forward_intermediates(x, take_indices, stop)
                intermediates.extend(inputs)
            elif i < stop:
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
        """Keep what the highest of `indices` needs; forward_features then ends at that tap."""
        take_indices, max_index = feature_take_indices(self.num_taps, indices)
        prune_end = max_index < self.num_taps - 1
        if max_index == 0:
            self.stages = self.stages[:0]
            self.stem_pool = nn.Identity()
        elif self.flat:
            self.stages[0].truncate(max_index)
        else:
            self.stages = self.stages[:max_index]
        self.num_taps = max_index + 1
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.in_chans)
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
    # features_only's default taps: a staged trunk gives the stem and every stage, as ResNet. A
    # flat trunk (one stage) has a tap per sub-network, all at one resolution (up to 43 of them):
    # as timm's vision_transformer does for its blocks, it gives the last 3, the deepest features.
    layers = kwargs.get('layers', ())
    staged = isinstance(layers, (tuple, list)) and len(layers) > 1
    out_indices = tuple(range(len(layers) + 1)) if staged else 3
    model = build_model_with_cfg(
        HoResNet, variant, pretrained,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
        **kwargs,
    )
    labels = getattr(model, 'pretrained_cfg', {}).get('label_names')
    if labels and len(labels) != getattr(model, 'num_classes', len(labels)):  # a new classifier: they name no output
        model.pretrained_cfg = model.default_cfg = {k: v for k, v in model.pretrained_cfg.items()
                                                    if k not in ('label_names', 'label_descriptions')}
    if isinstance(model, FeatureGraphNet):
        # FX returns module outputs; a tap inside a block is a sub-network's input, which no module outputs
        inner = [f['module'] for f in model.feature_info.get_dicts() if f.get('hook_type') == 'forward_pre']
        if inner:
            raise ValueError(
                f"feature_cls='fx' cannot return the taps inside a multi-stage block "
                f"({', '.join(inner)}: each is a sub-network's input, which no module outputs, and FX returns "
                f"module outputs); use the default features_only extractor or feature_cls='hook', or out_indices "
                f"at block boundaries")
    return model
