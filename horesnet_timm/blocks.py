"""Sub-networks F and the blocks that stack them by a scheme.

`SchemeBlock` evaluates any explicit tableau over its own s sub-networks; `MultistepBlock` is the
LM-ResNet step. Both take their sub-networks ready-made, so the same blocks serve the CIFAR
layout (pre-activation F, as the HO-ResNet authors) and the ImageNet one (ResNet's F).
"""
import json
from typing import Any, Callable, Dict, Final, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from timm.layers import DropPath, register_notrace_function

from .schemes import Scheme
from .stage_plan import HOLD, IN, INPUT, K, UPDATE, PlanOp, plan_reads, stage_plan

__all__ = ['PreActBasic', 'Basic', 'Bottleneck', 'SUBNETS', 'RecordsWiring', 'SchemeBlock', 'MultistepBlock',
           'Transition']


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1, **dd) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=dilation * (kernel_size // 2),
                     dilation=dilation, bias=False, **dd)


class PreActBasic(nn.Module):
    """BN-ReLU-Conv3x3-BN-ReLU-Conv3x3, the HO-ResNet authors' F."""
    convs = 2

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, act_layer=nn.ReLU,
                 norm_layer=nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn1 = norm_layer(in_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv1 = _conv(in_chs, out_chs, 3, stride, dilation, **dd)
        self.bn2 = norm_layer(out_chs, **dd)
        self.act2 = act_layer(inplace=True)
        self.conv2 = _conv(out_chs, out_chs, 3, dilation=dilation, **dd)

    def zero_init_last(self):
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(x))))))


class Basic(nn.Module):
    """Conv3x3-BN-ReLU-Conv3x3-BN, the residual function of ResNet-18/34."""
    convs = 2

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, act_layer=nn.ReLU,
                 norm_layer=nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = _conv(in_chs, out_chs, 3, stride, dilation, **dd)
        self.bn1 = norm_layer(out_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv2 = _conv(out_chs, out_chs, 3, dilation=dilation, **dd)
        self.bn2 = norm_layer(out_chs, **dd)

    def zero_init_last(self):
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))


class Bottleneck(nn.Module):
    """Conv1x1-BN-ReLU-Conv3x3-BN-ReLU-Conv1x1-BN with a 4x expansion, as ResNet-50."""
    convs = 3
    expansion = 4

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, act_layer=nn.ReLU,
                 norm_layer=nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        mid_chs = out_chs // self.expansion
        self.conv1 = _conv(in_chs, mid_chs, 1, **dd)
        self.bn1 = norm_layer(mid_chs, **dd)
        self.act1 = act_layer(inplace=True)
        self.conv2 = _conv(mid_chs, mid_chs, 3, stride, dilation, **dd)
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


@register_notrace_function  # branches on the dtype: every torch.fx tracer records the call (below)
def upcast_half(x: torch.Tensor) -> torch.Tensor:
    # Stage combinations run in fp32 under fp16/bf16: they sum stages with weights of both signs
    # (Verner-8's reach ~600); one rounding at the end instead of one per term cut the bf16 logit
    # error of horesnet58_rk8 / horesnet86_rk8 by ~40% (tests/test_models.py checks the bound).
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# timm's tracer reads its own list; torch.fx.wrap serves every other one (torchvision's feature extractor)
torch.fx.wrap('upcast_half')


@torch.jit.unused
def _fx_tracing() -> bool:
    from torch.fx import _symbolic_trace
    # torch.compile and torch.export handle in-place writes; only symbolic tracing drops them
    # (is_fx_tracing itself warns that it answers for all three)
    return getattr(_symbolic_trace, 'is_fx_symbolic_tracing', _symbolic_trace.is_fx_tracing)()


def no_backward() -> bool:
    """Whether nothing computed now can feed a backward pass (`torch.no_grad`, `torch.inference_mode`),
    so a block may overwrite maps it made. Never while torch.fx traces: a graph drops an in-place
    write whose result it does not read, and may later run with gradients. Never while torch.jit traces:
    the graph must not depend on the grad mode, since jit.trace checks it again under no_grad (OpenVINO's
    convert_model traces so)."""
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return False
    return torch.jit.is_scripting() or not _fx_tracing()


class RecordsWiring:
    """A block that carries in its state dict what its weights do not show: how it combines them.

    Schemes with the same number of stages share every key and shape, so RK4 weights load without a
    word into a Gill block, by any loader (timm's load_checkpoint, validate.py, transformers). With
    the wiring in the state dict (`get_extra_state`, saved by torch.save and safetensors alike),
    `load_state_dict` refuses weights of another wiring. Weights saved before it was recorded carry
    none and load as before.
    """

    def wiring(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _description(self) -> Dict[str, Any]:
        acts = sorted({type(m).__name__ for m in self.subnets.modules()
                       if not any(True for _ in m.children()) and not any(True for _ in m.parameters(recurse=False))})
        return {**self.wiring(), 'block_act': type(self.act).__name__, 'subnet_acts': acts,
                'subnet': type(self.subnets[0]).__name__}  # pre-activation and post-activation share every key

    @torch.jit.unused
    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(list(json.dumps(self._description(), sort_keys=True).encode()), dtype=torch.uint8)

    @torch.jit.unused
    def set_extra_state(self, state: torch.Tensor) -> None:
        try:
            saved = json.loads(bytes(state.tolist()).decode())
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f'the wiring record of a {type(self).__name__} in these weights is damaged ({e})') from e
        # names differ, tableaus decide; a record from before a field was recorded is compared on the rest
        mine = {k: v for k, v in self._description().items() if k in saved}
        same = lambda d: {k: v for k, v in d.items() if k != 'scheme'}
        if same(saved) != same(mine):
            differ = [k for k in sorted(set(saved) | set(mine)) if k != 'scheme' and saved.get(k) != mine.get(k)]
            what = ', '.join('the tableau' if k in ('a', 'b') else f'{k} {saved.get(k)!r} vs {mine.get(k)!r}'
                             for k in differ if k != 'b' or 'a' not in differ)
            how = f'scheme={saved.get("scheme")!r}' if saved.get('scheme') != mine.get('scheme') else 'its arguments'
            theirs = (f"a {saved.get('scheme')!r} block, this model's is {mine.get('scheme')!r} and"
                      if saved.get('scheme') != mine.get('scheme') else f"a {saved.get('scheme')!r} block")
            raise ValueError(
                f"these weights were trained in {theirs} wired otherwise ({what}): they would compute something "
                f"else. Build the model with {how} as the "
                f"weights were trained, or load them with horesnet_timm.loading.load_model, which reads the "
                f"architecture a checkpoint records")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + '_extra_state'
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)  # weights saved before the wiring was recorded


class SchemeBlock(RecordsWiring, nn.Module):
    """One step of an explicit Runge-Kutta scheme over its own sub-networks F_1..F_s.

    The stage combinations follow a plan worked out once from the tableau (`stage_plan`): between
    sub-networks the block keeps only a basis of what the later stages and the output still read,
    updated as each k_t arrives (RK4 keeps one map besides the stage input, Verner-8 at most five). With no backward pass to feed (`torch.no_grad` / `torch.inference_mode`) the block
    also updates the maps it made in place and builds each input in the buffer of a map it no
    longer needs; it never writes to x or to a sub-network's output, which may be held elsewhere.
    """
    # the plan's codes, as constants TorchScript can read
    K: Final[int] = K
    IN: Final[int] = IN
    UPDATE: Final[int] = UPDATE
    HOLD: Final[int] = HOLD
    # class-level annotations so TorchScript types the (possibly empty) coefficient lists
    a: List[List[float]]
    b: List[float]
    plan: List[List[PlanOp]]

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
        self.scheme_name = scheme.name
        self.a, self.b = scheme.as_floats()
        self.plan = [[PlanOp(op.kind, op.slot, list(op.sources), list(op.coefs), op.into, list(op.release))
                      for op in step] for step in stage_plan(tuple(tuple(r) for r in scheme.a), tuple(scheme.b))]
        self.ends_at_input = False  # `truncate` cuts the block before a stage: it then returns that input
        self.step_size = nn.Parameter(torch.ones((), device=device, dtype=dtype)) if learn_step_size else None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.has_drop_path = drop_path > 0.
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def reset_parameters(self):
        if self.step_size is not None:
            nn.init.ones_(self.step_size)

    def wiring(self) -> Dict[str, Any]:
        return {'scheme': self.scheme_name, 'a': self.a, 'b': self.b, 'learned_step': self.step_size is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x, [])[0]

    def _sum(self, slots: Dict[int, torch.Tensor], srcs: List[int], coefs: List[float], base: Optional[torch.Tensor],
             into: int, reuse: bool) -> torch.Tensor:
        """base + h * sum_i coefs_i slots[srcs_i] (with base None: the sum alone, without h).

        Written into the buffer of slots[into] when into >= 0 (srcs[0] may be that slot: it is read
        first); else into a new buffer, which `reuse` (no backward pass) lets later terms update in place.
        """
        if len(srcs) == 0:
            assert base is not None
            return base
        h = self.step_size if base is not None else None
        start = base
        if h is not None and not reuse:
            start = None  # autograd: (sum) * h, which saves one map for h's gradient, then + base
        first = slots[srcs[0]]
        if start is None:
            out = torch.mul(first, coefs[0], out=slots[into]) if into >= 0 else first * coefs[0]
        elif h is None:
            out = torch.add(start, first, alpha=coefs[0], out=slots[into]) if into >= 0 else \
                torch.add(start, first, alpha=coefs[0])
        else:
            out = torch.addcmul(start, first, h, value=coefs[0], out=slots[into]) if into >= 0 else \
                torch.addcmul(start, first, h, value=coefs[0])
        for i in range(1, len(srcs)):
            if not reuse:
                out = torch.add(out, slots[srcs[i]], alpha=coefs[i])
            elif h is None:
                out.add_(slots[srcs[i]], alpha=coefs[i])
            else:
                out.addcmul_(slots[srcs[i]], h, value=coefs[i])
        if h is not None and not reuse:
            assert base is not None
            out = base + out * h
        return out

    def forward_stages(self, x: torch.Tensor, keep: List[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The step, and the inputs x + h * sum_j a_ij k_j of the stages i listed in `keep`, 0 < i < s.

        Those are the states the sub-networks read, a model's feature taps (stage 0 reads x itself,
        which the caller has); other numbers are ignored. Only listed inputs are kept, so `forward`
        holds nothing more.
        """
        reuse = no_backward()  # the block may overwrite maps it made
        x_hi = upcast_half(x)
        slots: Dict[int, torch.Tensor] = {}  # the plan's maps, K the stage output, IN the next input
        owned: List[int] = []  # slots whose buffer this call made: never x, never a sub-network's output
        inputs: List[torch.Tensor] = []
        out = x
        last = len(self.subnets) - 1
        for i, subnet in enumerate(self.subnets):
            if i == 0:
                slots[self.K] = upcast_half(subnet(x))
            else:
                if i in keep:
                    inputs.append(slots[self.IN])
                slots[self.K] = upcast_half(subnet(slots.pop(self.IN)))  # the call holds the only reference
            for op in self.plan[i]:
                if op.kind == self.HOLD:
                    slots[op.slot] = slots[self.K]
                elif op.kind == self.UPDATE:
                    mine = reuse and op.slot in owned
                    for j in range(len(op.sources)):
                        if mine:
                            slots[op.slot].add_(slots[op.sources[j]], alpha=op.coefs[j])
                        else:
                            slots[op.slot] = torch.add(slots[op.slot], slots[op.sources[j]], alpha=op.coefs[j])
                            mine = reuse
                    owned.append(op.slot)
                else:
                    buffer = op.into if reuse and op.into in owned else -1
                    if i < last or self.ends_at_input:
                        slots[self.IN] = self._sum(slots, op.sources, op.coefs, x_hi, buffer, reuse).to(x.dtype)
                    elif reuse and not (self.training and self.has_drop_path) and x_hi.dtype == x.dtype:
                        out = self.act(self._sum(slots, op.sources, op.coefs, x, buffer, reuse))
                    else:
                        total = slots[op.sources[0]] if len(op.sources) == 1 and op.coefs[0] == 1. else \
                            self._sum(slots, op.sources, op.coefs, None, buffer, reuse)
                        if self.step_size is not None:
                            total = total * self.step_size
                        out = self.act(x + self.drop_path(total.to(x.dtype)))
                for r in op.release:
                    del slots[r]
        if self.ends_at_input:
            out = slots[self.IN]
        return out, inputs

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
        # the plan as it is up to stage m's input, which the cut block returns bit for bit as the whole
        # block's tap; a sub-network whose output that arithmetic reads is kept (exactly the k_j that the
        # rows read, for every tableau here: stage_plan forms each input from maps of only those k_j)
        reads = plan_reads(self.plan)
        needed = set(reads[stages])
        for i in reversed(range(stages)):
            if i in needed:
                needed.update(reads[i])
        self.subnets = nn.ModuleList([m if i in needed else nn.Identity() for i, m in enumerate(self.subnets[:stages])])
        self.b = self.a[stages][:stages]
        self.plan = self.plan[:stages - 1] + [[op for op in self.plan[stages - 1] if op.kind == INPUT]]
        self.ends_at_input = True
        self.act = nn.Identity()
        self.drop_path = nn.Identity()
        self.has_drop_path = False


class MultistepBlock(RecordsWiring, nn.Module):
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
        self.has_drop_path = drop_path > 0.
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        if self.k is not None:
            nn.init.uniform_(self.k, -0.1, 0.)  # as Lu et al. initialise k_n

    def wiring(self) -> Dict[str, Any]:
        return {'scheme': 'lm', 'multistep': True}

    def forward(self, x: torch.Tensor, prev: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if no_backward() and not (self.training and self.has_drop_path):
            # x + F(x) + k prev - k x in one buffer, without the map prev - x
            y = torch.add(x, self.subnets[0](x))
            if self.k is not None and prev is not None:
                y.addcmul_(prev, self.k).addcmul_(x, self.k, value=-1.)
            return self.act(y), x
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
