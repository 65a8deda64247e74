"""Sub-networks F and the blocks that stack them by a scheme.

`SchemeBlock` evaluates any explicit tableau over its own s sub-networks; `MultistepBlock` is the
LM-ResNet step. Both take their sub-networks ready-made, so the same blocks serve the CIFAR
layout (pre-activation F, as the HO-ResNet authors) and the ImageNet one (ResNet's F).
"""
import functools
import json
from typing import Any, Callable, Dict, Final, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from timm.layers import DropPath, register_notrace_function

from .schemes import Scheme

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
    write whose result it does not read, and may later run with gradients."""
    if torch.is_grad_enabled():
        return False
    return torch.jit.is_scripting() or not _fx_tracing()


# --- the stage plan -------------------------------------------------------------------------
#
# While sub-network t runs, a block must keep stage t's input and enough maps to form the later
# stages' inputs and the output. All of those are linear in the k_j computed so far, so the fewest
# maps that carry them is the rank of the later rows of (A, b) restricted to the columns seen so
# far, which can be well below what the sparsity pattern suggests: Verner-8 then holds at most 6
# maps, its input included, where keeping each k_j until its last reader holds up to 10, and
# folding some k_j into running inputs of every later stage that reads them at best 9. `stage_plan`
# keeps exactly such a basis, worked out once per tableau in exact arithmetic; the block runs it as data.

_INPUT, _UPDATE, _HOLD = 0, 1, 2
_K = -1  # the slot of the stage output just computed
_IN = -2  # the slot of the next stage's input


class PlanOp(NamedTuple):
    """One op of the arithmetic that follows a sub-network (a NamedTuple, so that TorchScript reads it too).

    _INPUT: the next stage's input x + h sum coefs * sources (after the last stage, the output) into slot _IN;
    _UPDATE: slot += sum coefs * sources; _HOLD: keep the stage output _K as slot.
    """
    kind: int
    slot: int
    sources: List[int]
    coefs: List[float]
    into: int  # the slot whose buffer receives the result (no backward pass), or -1 for a new buffer
    release: List[int]  # slots no later op reads, dropped after this one


def _nonzero(v) -> bool:
    return not v == 0


def _row_space(rows: List[list]) -> List[Tuple[int, list]]:
    """Fully reduced echelon basis [(pivot column, row)] of the span of `rows` (exact)."""
    basis: List[Tuple[int, list]] = []
    for row in rows:
        row = _residual(row, basis)
        pivot = next((i for i, v in enumerate(row) if _nonzero(v)), None)
        if pivot is not None:
            row = [v / row[pivot] for v in row]
            basis = [(p, [u - r[pivot] * w for u, w in zip(r, row)]) for p, r in basis] + [(pivot, row)]
    return basis


def _residual(v: list, basis: List[Tuple[int, list]]) -> list:
    """`v` less its component in the span of a fully reduced echelon basis: zero iff v is in that span."""
    for p, r in basis:
        if _nonzero(v[p]):
            v = [u - v[p] * w for u, w in zip(v, r)]
    return list(v)


def _coordinates(target: list, vectors: List[list]) -> list:
    """alpha with sum_i alpha_i vectors_i == target, for independent vectors whose span holds target."""
    rows = [[vec[r] for vec in vectors] + [target[r]] for r in range(len(target))]
    for col in range(len(vectors)):
        top = next(i for i in range(col, len(rows)) if _nonzero(rows[i][col]))
        rows[col], rows[top] = rows[top], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        rows = [row if i == col or not _nonzero(row[col]) else [u - row[col] * w for u, w in zip(row, rows[col])]
                for i, row in enumerate(rows)]
    assert not any(_nonzero(row[-1]) for row in rows[len(vectors):]), 'target outside the span'
    return [rows[i][-1] for i in range(len(vectors))]


@functools.lru_cache(maxsize=None)
def stage_plan(a: Tuple[tuple, ...], b: tuple) -> Tuple[Tuple[PlanOp, ...], ...]:
    """The ops that follow each sub-network of a block with exact tableau (a, b): one tuple per stage.

    After sub-network t - 1 the kept maps W and k_{t-1} span U; what stays needed is V, the span of
    the later rows a_n[:t] (n > t) and b[:t]. Some maps (the "spent" ones: raw stage outputs
    first) are picked so that with k they span U modulo V; every other map W_i then moves into V
    by adding a combination of k and the spent maps (in place when nothing needs a backward pass),
    k itself is held if V still lacks a direction, and the next stage's input x + h a_t k (the output
    x + h b k after the last stage) is written over a spent map where one is free. While sub-network
    t runs the block holds dim V + 1 maps, the least possible; between sub-networks at most two more.
    """
    s = len(b)
    zero = b[0] * 0
    one = zero + 1
    kept: List[list] = []  # [slot, coefficients over k_0..k_{t-1}, raw: holds a sub-network's output as is]
    free_slot = 0
    steps = []
    for t in range(1, s + 1):  # the step after sub-network t - 1
        for m in kept:
            m[1] = m[1] + [zero]
        e = [zero] * (t - 1) + [one]
        later = [list(a[n][:t]) for n in range(t + 1, s)] + [list(b[:t])] if t < s else []
        space = _row_space(later)
        e_rest = _residual(e, space)
        k_spent = any(_nonzero(v) for v in e_rest)
        pivots = [e_rest] if k_spent else []
        pivot_maps = [(_K, e)] if k_spent else []
        spent = []
        for m in sorted(kept, key=lambda m: not m[2]):
            rest = _residual(m[1], space)
            if any(_nonzero(v) for v in _residual(rest, _row_space(pivots))):
                pivots.append(rest)
                pivot_maps.append((m[0], m[1]))
                spent.append(m)
        staying = [m for m in kept if m not in spent]
        # the next input x + h a_t k (after the last stage, the output x + h b k), from the maps as they
        # were, so that it reads only the k_j that stage reads; written over a spent map of this call's
        # own making that no update below reads, preferably one of its terms (read first)
        target = list(a[t][:t]) if t < s else list(b)
        alpha = _coordinates(target, [m[1] for m in kept] + [e])
        terms = [(slot, v) for slot, v in zip([m[0] for m in kept] + [_K], alpha) if _nonzero(v)]
        updates = []
        for m in staying:  # W_i -= sum_j c_j P_j puts W_i in V
            c = _coordinates(_residual(m[1], space), pivots) if pivots else []
            if any(_nonzero(v) for v in c):
                updates.append(PlanOp(_UPDATE, m[0], [pm[0] for pm, v in zip(pivot_maps, c) if _nonzero(v)],
                                      [-float(v) for v in c if _nonzero(v)], -1, []))
                for (_, vec), v in zip(pivot_maps, c):
                    m[1] = [u - v * w for u, w in zip(m[1], vec)]
                m[2] = False
        free = [m[0] for m in spent if not m[2] and not any(m[0] in op.sources for op in updates)]
        into = next((sl for sl, _ in terms if sl in free), free[0] if free else -1)
        terms.sort(key=lambda term: term[0] != into)
        ops = [PlanOp(_INPUT, _IN, [sl for sl, _ in terms], [float(v) for _, v in terms], into, [])] + updates
        if later and not k_spent and len(staying) < len(space):
            ops.append(PlanOp(_HOLD, free_slot, [_K], [1.0], -1, []))
            staying.append([free_slot, e, True])
            free_slot += 1
        # release each spent map, and k unless held, after its last reader
        held = any(op.kind == _HOLD for op in ops)
        for slot in [m[0] for m in spent] + ([] if held else [_K]):
            last = max((i for i, op in enumerate(ops) if slot in op.sources or op.into == slot), default=0)
            ops[last].release.append(slot)
        kept = staying
        steps.append(tuple(ops))
    return tuple(steps)


def _plan_reads(plan: List[List[PlanOp]]) -> List[List[int]]:
    """For each stage, the k_j that the plan's arithmetic for its input reads (stage 0: none)."""
    reads: List[List[int]] = [[]]
    cone: Dict[int, set] = {}
    for t, step in enumerate(plan):
        cone[_K] = {t}
        for op in step:
            if op.kind == _HOLD:
                cone[op.slot] = set(cone[_K])
            elif op.kind == _UPDATE:
                cone[op.slot] = cone[op.slot].union(*(cone[sl] for sl in op.sources))
            elif t + 1 < len(plan):
                reads.append(sorted(set().union(*(cone[sl] for sl in op.sources))))
            for sl in op.release:
                cone.pop(sl, None)
    return reads


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
        return {**self.wiring(), 'block_act': type(self.act).__name__, 'subnet_acts': acts}

    @torch.jit.unused
    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(list(json.dumps(self._description(), sort_keys=True).encode()), dtype=torch.uint8)

    @torch.jit.unused
    def set_extra_state(self, state: torch.Tensor) -> None:
        try:
            saved = json.loads(bytes(state.tolist()).decode())
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f'the wiring record of a {type(self).__name__} in these weights is damaged ({e})') from e
        mine = self._description()
        same = lambda d: {k: v for k, v in d.items() if k != 'scheme'}  # names differ, tableaus decide
        if same(saved) != same(mine):
            differ = [k for k in sorted(set(saved) | set(mine)) if k != 'scheme' and saved.get(k) != mine.get(k)]
            what = ', '.join('the tableau' if k in ('a', 'b') else f'{k} {saved.get(k)!r} vs {mine.get(k)!r}'
                             for k in differ if k != 'b' or 'a' not in differ)
            how = f'scheme={saved.get("scheme")!r}' if saved.get('scheme') != mine.get('scheme') else 'its arguments'
            raise ValueError(
                f"these weights were trained in a {saved.get('scheme')!r} block, this model's is {mine.get('scheme')!r} "
                f"and wired otherwise ({what}): they would compute something else. Build the model with {how} as the "
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
    K: Final[int] = _K
    IN: Final[int] = _IN
    UPDATE: Final[int] = _UPDATE
    HOLD: Final[int] = _HOLD
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
        return {'scheme': self.scheme_name, 'a': self.a, 'b': self.b}

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
        slots: Dict[int, torch.Tensor] = {}  # the plan's maps, _K the stage output, _IN the next input
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
        reads = _plan_reads(self.plan)
        needed = set(reads[stages])
        for i in reversed(range(stages)):
            if i in needed:
                needed.update(reads[i])
        self.subnets = nn.ModuleList([m if i in needed else nn.Identity() for i, m in enumerate(self.subnets[:stages])])
        self.b = self.a[stages][:stages]
        self.plan = self.plan[:stages - 1] + [[op for op in self.plan[stages - 1] if op.kind == _INPUT]]
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
