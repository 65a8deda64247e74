"""Sub-networks F and the blocks that stack them by a scheme.

`SchemeBlock` evaluates any explicit tableau over its own s sub-networks; `MultistepBlock` is the
LM-ResNet step. Both take their sub-networks ready-made, so the same blocks serve the CIFAR
layout (pre-activation F, as the HO-ResNet authors) and the ImageNet one (ResNet's F).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from timm.layers import DropPath, register_notrace_function

from .schemes import Scheme

__all__ = ['PreActBasic', 'Basic', 'Bottleneck', 'SUBNETS', 'SchemeBlock', 'MultistepBlock', 'Transition']


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, **dd) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False, **dd)


class PreActBasic(nn.Module):
    """BN-ReLU-Conv3x3-BN-ReLU-Conv3x3, the HO-ResNet authors' F."""
    convs = 2

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn1 = norm_layer(in_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv1 = _conv(in_chs, out_chs, 3, stride, **dd)
        self.bn2 = norm_layer(out_chs, **dd)
        self.act2 = act_layer(inplace=True)
        self.conv2 = _conv(out_chs, out_chs, 3, **dd)

    def zero_init_last(self):
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(x))))))


class Basic(nn.Module):
    """Conv3x3-BN-ReLU-Conv3x3-BN, the residual function of ResNet-18/34."""
    convs = 2

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = _conv(in_chs, out_chs, 3, stride, **dd)
        self.bn1 = norm_layer(out_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv2 = _conv(out_chs, out_chs, 3, **dd)
        self.bn2 = norm_layer(out_chs, **dd)

    def zero_init_last(self):
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))


class Bottleneck(nn.Module):
    """Conv1x1-BN-ReLU-Conv3x3-BN-ReLU-Conv1x1-BN with a 4x expansion, as ResNet-50."""
    convs = 3
    expansion = 4

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        mid_chs = out_chs // self.expansion
        self.conv1 = _conv(in_chs, mid_chs, 1, **dd)
        self.bn1 = norm_layer(mid_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv2 = _conv(mid_chs, mid_chs, 3, stride, **dd)
        self.bn2 = norm_layer(mid_chs, **dd)
        self.act2 = act_layer(inplace=True)
        self.conv3 = _conv(mid_chs, out_chs, 1, **dd)
        self.bn3 = norm_layer(out_chs, **dd)

    def zero_init_last(self):
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))


SUBNETS = {'preact': PreActBasic, 'basic': Basic, 'bottleneck': Bottleneck}


@register_notrace_function  # branches on the dtype: torch.fx records the call (fx wraps only names without a leading _)
def upcast_half(x: torch.Tensor) -> torch.Tensor:
    # Stage combinations run in fp32 under fp16/bf16: they sum stages with weights of both signs
    # (Verner-8's reach ~600); one rounding at the end instead of one per term cut the bf16 logit
    # error of horesnet58_rk8 / horesnet86_rk8 by ~40% (tests/test_models.py checks the bound).
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _last_reads(reads: Sequence[Sequence[int]]) -> List[int]:
    """For each stage j, the last stage that reads k_j (-1 when none does)."""
    return [max([i for i, r in enumerate(reads) if j in r], default=-1) for j in range(len(reads))]


class SchemeBlock(nn.Module):
    """One step of an explicit Runge-Kutta scheme over its own sub-networks F_1..F_s.

    Memory: the running sum h * sum(b_i k_i) is accumulated as stages finish, and each k_j is
    released after the last stage that reads it, so RK4 holds x, the sum and one stage.
    """
    # class-level annotations so TorchScript types the (possibly empty) coefficient lists
    a: List[List[float]]
    b: List[float]
    reads: List[List[int]]
    last_read: List[int]

    def __init__(
            self,
            scheme: Scheme,
            subnets: Sequence[nn.Module],
            learn_step_size: bool = False,
            drop_path: float = 0.,
            act_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if len(subnets) != scheme.stages:
            raise ValueError(f'scheme {scheme.name!r} has {scheme.stages} stages, got {len(subnets)} sub-networks')
        if scheme.multistep:
            raise ValueError(f'scheme {scheme.name!r} is multistep: use MultistepBlock')
        self.subnets = nn.ModuleList(subnets)
        self.a, self.b = scheme.as_floats()
        self.reads = [list(r) for r in scheme.reads]
        self.last_read = _last_reads(self.reads)
        self.step_size = nn.Parameter(torch.ones((), device=device, dtype=dtype)) if learn_step_size else None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def reset_parameters(self):
        if self.step_size is not None:
            nn.init.ones_(self.step_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x, [])[0]

    def forward_stages(self, x: torch.Tensor, keep: List[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The step, and the inputs x + h * sum_j a_ij k_j of the stages i listed in `keep`, 0 < i < s.

        Those are the states the sub-networks read, a model's feature taps (stage 0 reads x itself,
        which the caller has); other numbers are ignored. Only listed inputs are kept, so `forward`
        holds nothing more.
        """
        x_hi = upcast_half(x)
        ks: Dict[int, torch.Tensor] = {}
        acc: Optional[torch.Tensor] = None
        inputs: List[torch.Tensor] = []
        for i, subnet in enumerate(self.subnets):
            stage_in = x
            inc: Optional[torch.Tensor] = None
            for j in self.reads[i]:
                inc = ks[j] * self.a[i][j] if inc is None else torch.add(inc, ks[j], alpha=self.a[i][j])
            if inc is not None:
                if self.step_size is not None:
                    inc = inc * self.step_size
                stage_in = (x_hi + inc).to(x.dtype)
            if i > 0 and i in keep:
                inputs.append(stage_in)
            k = upcast_half(subnet(stage_in))
            if self.b[i] != 0.:
                if acc is None:
                    acc = k if self.b[i] == 1. else k * self.b[i]
                else:
                    acc = torch.add(acc, k, alpha=self.b[i])
            if self.last_read[i] > i:
                ks[i] = k
            for j in self.reads[i]:
                if self.last_read[j] == i:
                    del ks[j]
        assert acc is not None
        if self.step_size is not None:
            acc = acc * self.step_size
        return self.act(x + self.drop_path(acc.to(x.dtype))), inputs

    def truncate(self, stages: int):
        """Cut the block before stage `stages` (0 < stages < s): it then returns that stage's input.

        Used by a model pruned to a feature tap inside the block. The input of stage m is
        x + h * sum_j a_mj k_j, the step's own form with a_m for b, so the tableau's row m becomes
        the output row; the activation and stochastic depth, which belong to the full step, go.
        A sub-network that stage m does not depend on becomes the identity, so that no parameter
        is left without a gradient (e.g. Kutta-Nystrom's stage 6 does not read k_5).
        """
        if not 0 < stages < len(self.subnets):
            raise ValueError(f'can cut a {len(self.subnets)}-stage block before stage 1..{len(self.subnets) - 1}, '
                             f'not {stages}')
        needed = set(self.reads[stages])
        for i in reversed(range(stages)):
            if i in needed:
                needed.update(self.reads[i])
        self.subnets = nn.ModuleList([m if i in needed else nn.Identity() for i, m in enumerate(self.subnets[:stages])])
        self.reads = [r if i in needed else [] for i, r in enumerate(self.reads[:stages])]
        self.last_read = _last_reads(self.reads)
        self.b = self.a[stages][:stages]
        self.act = nn.Identity()
        self.drop_path = nn.Identity()


class MultistepBlock(nn.Module):
    """LM-ResNet step u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + F_n(u_n), written x + k_n (prev - x) + F(x).

    The first block of a stage has no u_{n-1}; it is built with `first=True`, has no k_n (so no
    parameter goes unused) and is a plain Euler step. Returns (u_{n+1}, u_n) so a stage can chain
    blocks. Stochastic depth drops F_n(u_n) per sample, the 'stochastic control' of Lu et al.
    """

    def __init__(
            self,
            subnet: nn.Module,
            first: bool = False,
            drop_path: float = 0.,
            act_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.subnets = nn.ModuleList([subnet])  # same parameter names as a one-stage SchemeBlock
        self.k = None if first else nn.Parameter(torch.empty((), device=device, dtype=dtype))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        if self.k is not None:
            nn.init.uniform_(self.k, -0.1, 0.)  # as Lu et al. initialise k_n

    def forward(self, x: torch.Tensor, prev: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        y = x + self.drop_path(self.subnets[0](x))
        if self.k is not None and prev is not None:
            y = y + self.k * (prev - x)
        return self.act(y), x


class Transition(nn.Module):
    """A ResNet block that changes width and/or resolution (a projection shortcut), opening a stage."""

    def __init__(
            self,
            subnet: nn.Module,
            in_chs: int,
            out_chs: int,
            stride: int,
            drop_path: float = 0.,
            act_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
            norm_layer=nn.BatchNorm2d,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.subnet = subnet
        self.shortcut = nn.Sequential(_conv(in_chs, out_chs, 1, stride, **dd), norm_layer(out_chs, **dd))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.subnet(x)))
