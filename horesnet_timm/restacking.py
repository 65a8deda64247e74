"""Restack a timm model: its runs of residual blocks combined as Runge-Kutta (or LM) steps.

A residual block with an identity skip computes `block(x) = x + F(x)` (whatever else it does, e.g.
a ReLU after the add), so `F(x) = block(x) - x` is the residual function it stands for, with the
block's own weights. `restack(model, 'rk4')` finds the runs of consecutive such blocks that keep
their input's shape (a ResNet stage after its downsampling block, a ConvNeXt stage, the blocks of
a ViT, ...) and groups each run, in order, into `blocks.SchemeBlock`s of the scheme's stage count
whose sub-networks are `Increment(block_i)`. A run whose length is not a multiple of the stage
count keeps its last blocks as they are (plain residual, i.e. Euler, steps); `model.restack_plan`
says which. With `lm` each run becomes one chain of `blocks.MultistepBlock`s. Nothing else in the
model changes, so it keeps its class, its stem, its head and its timm API, and the weights of the
base model (pretrained ones included) are the weights of the restacked one.

Where the blocks are and how to tell that a block's skip is the identity is data (`FAMILIES`, one
entry per timm model class); which blocks keep their shape, run one after the other and leave
their input alone is found by running the model once on the meta device with forward hooks (no
weights are touched). A model class that is not in the table is refused, never guessed at.

A one-stage tableau with b = (1,) and a fixed step is `x + (block(x) - x)`: the block itself, so
such a group keeps the block unwrapped. That is what makes `scheme='euler'` the base model bit for
bit, and what the remainders are.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import get_device_dtype

from .blocks import MultistepBlock, SchemeBlock
from .errors import HoresnetError
from .measure import count, run_on_meta
from .schemes import Scheme, get_scheme, list_schemes
from .stages import MultistepStage

__all__ = ['RestackError', 'Increment', 'Family', 'FAMILIES', 'REFUSED', 'Run', 'RestackPlan', 'plan_restack',
           'restack', 'measure_cost', 'compare_cost']

ALWAYS = 'always'  # every block of the class adds its input unchanged


class RestackError(HoresnetError, ValueError):
    """A model, or a scheme for it, that restack cannot (or will not) group; the message says why."""


@dataclass(frozen=True)
class Family:
    """Where a timm model class keeps its residual blocks.

    containers: regular expressions, matched in full against module names, of the modules whose
        children are blocks that the container's forward applies one after another.
    skips: block class name -> how to tell that its skip is the identity: (attribute, value) with
        value None (the attribute is None), a class (isinstance), True (the attribute is True), or
        ALWAYS. Blocks of other classes are left as they are.
    extra_args: keyword arguments the model can pass to its blocks (a ViT's attention mask). A
        restacked block takes one tensor, so these are refused by name when given (by a forward
        pre-hook, which TorchScript cannot compile: only families that need it get it).
    """
    containers: Tuple[str, ...]
    skips: Mapping[str, Any]
    extra_args: Tuple[str, ...] = ()


_RESNET_SKIP = ('downsample', None)  # no projection: the shortcut is the input itself
_EFFICIENTNET = Family((r'blocks\.\d+',), {cls: ('has_skip', True) for cls in (
    'ConvBnAct', 'DepthwiseSeparableConv', 'InvertedResidual', 'UniversalInvertedResidual', 'CondConvResidual',
    'EdgeResidual')})
_VIT = Family(('blocks',), {cls: ALWAYS for cls in ('Block', 'ResPostBlock', 'ParallelScalingBlock',
                                                    'ParallelThingsBlock')}, extra_args=('attn_mask', 'is_causal'))

# timm model class -> its family; a subclass (e.g. DeiT's VisionTransformerDistilled) finds its base's entry
FAMILIES: Dict[str, Family] = {
    'ResNet': Family((r'layer\d+',), {'BasicBlock': _RESNET_SKIP, 'Bottleneck': _RESNET_SKIP}),
    'ResNetV2': Family((r'stages\.\d+\.blocks',), {
        'PreActBasic': _RESNET_SKIP, 'PreActBottleneck': _RESNET_SKIP, 'Bottleneck': _RESNET_SKIP}),
    # RegNet's `downsample` is the shortcut: None means no skip at all, nn.Identity the identity
    'RegNet': Family((r's\d+',), {'Bottleneck': ('downsample', nn.Identity),
                                  'PreBottleneck': ('downsample', nn.Identity)}),
    'ConvNeXt': Family((r'stages\.\d+\.blocks',), {'ConvNeXtBlock': ('shortcut', nn.Identity)}),
    'VisionTransformer': _VIT,
    'EfficientNet': _EFFICIENTNET,
    'MobileNetV3': _EFFICIENTNET,
    'MlpMixer': Family(('blocks',), {cls: ALWAYS for cls in ('MixerBlock', 'ResBlock', 'SpatialGatingBlock')}),
}

# model classes refused with a reason of their own (any other unknown class gets the generic one)
REFUSED: Dict[str, str] = {
    'VGG': "VGG's layers have no skip connection: block(x) is not x + F(x), so there is no residual step to "
           "restack",
    'DenseNet': "DenseNet's layers concatenate their input to their output instead of adding it: there is no "
                "x + F(x) step to restack",
    'HoResNet': 'it is already stacked by a scheme: choose one with its own scheme= argument, e.g. '
                "timm.create_model('horesnet58_euler', scheme='rk4')",
    'SwinTransformer': "Swin's stages hand their input size to each block (set_input_size, for its attention "
                       "windows and masks), which a restacked block does not pass on",
    **{cls: 'it is a features_only wrapper: restack the classifier model (features_only is not supported)'
       for cls in ('FeatureListNet', 'FeatureDictNet', 'FeatureHookNet', 'FeatureGetterNet', 'FeatureGraphNet')},
}


class Increment(nn.Module):
    """F(x) = block(x) - x: the residual function of a block whose skip is the identity, with its weights."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) - x


@dataclass(frozen=True)
class Run:
    """Consecutive blocks of one container that keep their shape, and how they were grouped."""
    container: str  # module name, e.g. 'layer3'
    blocks: Tuple[str, ...]  # child names, in order
    block_type: str
    shape: Tuple[int, ...]  # per sample, e.g. (1024, 14, 14), or (197, 192) for tokens
    groups: Tuple[Tuple[str, ...], ...]  # blocks combined into one restacked block each
    remainder: Tuple[str, ...]  # blocks left as they are (plain residual steps)


@dataclass
class RestackPlan:
    """What `restack` did to a model: its runs, their groups and remainders, and the renames."""
    base: str  # the base model's registered name, or its class name
    family: str
    scheme: str
    stages: int
    multistep: bool
    learn_step_size: bool
    input_size: Tuple[int, ...]
    runs: List[Run]
    left_out: List[str]  # blocks of the containers that are in no run, each with the reason
    renames: Dict[str, str] = field(default_factory=dict)  # base module name -> restacked module name

    @property
    def unchanged(self) -> bool:
        """True when every group is a single block left as it is (Euler with a fixed step)."""
        return not self.renames

    def rename(self, key: str) -> str:
        """The restacked name of a base model's parameter, buffer or module name (others unchanged)."""
        if key.endswith('._extra_state'):
            return key  # a restacked block's wiring record (blocks.RecordsWiring): base models have none
        for old, new in self.renames.items():
            if key == new or key.startswith(new + '.'):
                return key  # already a restacked name
        for old, new in self.renames.items():
            if key == old or key.startswith(old + '.'):
                return new + key[len(old):]
        return key

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor], model: Optional[nn.Module] = None
                           ) -> Dict[str, torch.Tensor]:
        """A state dict of the base model (or of the restacked one) with restacked names.

        Its signature is timm's `pretrained_filter_fn` (state_dict, model)."""
        return {self.rename(k): v for k, v in state_dict.items()}

    def format(self) -> str:
        """The plan as text: each run, its length and shape, what was grouped and what stays Euler."""
        s = self.stages
        kind = ('LM-ResNet multistep, one learnable k_n per block but the first of a run' if self.multistep else
                f'{s} stage{"s" if s > 1 else ""}' + (', a learnable step size per block' if self.learn_step_size
                                                      else ''))
        lines = [f"restack {self.base} ({self.family}) by {self.scheme} ({kind}); shapes probed at "
                 f"{'x'.join(map(str, self.input_size))}"]
        rows = [('run', 'blocks', 'shape', 'type', 'grouped', 'remainder (plain residual: Euler, h = 1)')]
        for r in self.runs:
            grouped = ', '.join(_span(r.container, g) for g in r.groups) or '-'
            if self.unchanged:
                grouped = '- (a 1-stage, h = 1 block is the block itself)'
            rest = _span(r.container, r.remainder) if r.remainder else '-'
            rows.append((_span(r.container, r.blocks), str(len(r.blocks)), 'x'.join(map(str, r.shape)),
                         r.block_type, grouped, rest))
        width = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ['  '.join(v.ljust(w) for v, w in zip(row, width)).rstrip() for row in rows]
        total = sum(len(r.blocks) for r in self.runs)
        runs = f'{total} block{"s" * (total != 1)} in {len(self.runs)} run{"s" * (len(self.runs) != 1)}'
        if self.unchanged:
            lines.append(f'{runs}; every block stays as it is')
        else:
            grouped = sum(len(g) for r in self.runs for g in r.groups)
            count = sum(len(r.groups) for r in self.runs)
            made = (f'{count} LM chain{"s" * (count != 1)} (one per run)' if self.multistep else
                    f'{count} {self.scheme} block{"s" * (count != 1)}')
            lines.append(f'{runs}; {grouped} of them in {made}, {total - grouped} left as plain residual blocks')
        if self.left_out:
            lines.append('not in any run (left as they are):')
            lines += [f'  {reason}' for reason in self.left_out]
        return '\n'.join(lines)


def _span(container: str, names: Sequence[str]) -> str:
    if len(names) == 1:
        return f'{container}.{names[0]}'
    return f'{container}.{names[0]}-{names[-1]}'


def _family(model: nn.Module) -> Tuple[str, Family]:
    for cls in type(model).__mro__:
        if cls.__name__ in REFUSED:
            raise RestackError(f'cannot restack {type(model).__name__}: {REFUSED[cls.__name__]}')
        if cls.__name__ in FAMILIES:
            return cls.__name__, FAMILIES[cls.__name__]
    raise RestackError(
        f'cannot restack {type(model).__name__} ({type(model).__module__}): restack reads where a model keeps '
        f'its residual blocks and how to tell that their skip is the identity from horesnet_timm.restacking.FAMILIES, '
        f'which knows {", ".join(FAMILIES)}; add an entry there if its blocks are residual')


def _identity_skip(block: nn.Module, rule) -> Tuple[bool, str]:
    if rule == ALWAYS:
        return True, ''
    attribute, value = rule
    found = getattr(block, attribute, '<missing>')
    if value is None:
        ok = found is None
    elif isinstance(value, type):
        ok = isinstance(found, value)
    else:
        ok = found is value or found == value
    shown = type(found).__name__ if isinstance(found, nn.Module) else repr(found)
    return ok, f'its skip is not the identity ({attribute} is {shown})'


def _input_size(model: nn.Module) -> Tuple[int, ...]:
    try:
        from timm.models._input import get_model_input_config
        return tuple(get_model_input_config(model)['input_size'])
    except Exception:  # an older timm, or a model without a pretrained_cfg
        return tuple(getattr(model, 'pretrained_cfg', {}).get('input_size', (3, 224, 224)))


@dataclass
class _Call:
    input: Optional[torch.Tensor] = None
    output: Any = None
    calls: int = 0
    extra_args: bool = False
    version: int = 0
    modified_input: bool = False


def _probe(model: nn.Module, blocks: Sequence[nn.Module], input_size: Tuple[int, ...]) -> Dict[nn.Module, _Call]:
    calls = {b: _Call() for b in blocks}

    def before(module, args, kwargs):
        call = calls[module]
        call.calls += 1
        call.extra_args = len(args) != 1 or bool(kwargs) or not isinstance(args[0], torch.Tensor)
        if args and isinstance(args[0], torch.Tensor):
            call.input, call.version = args[0], args[0]._version

    def after(module, args, output):
        call = calls[module]
        call.output = output
        call.modified_input = call.input is not None and call.input._version != call.version

    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(before, with_kwargs=True),
                                         b.register_forward_hook(after))]
    try:
        run_on_meta(model, torch.zeros(2, *input_size, device='meta'))
    except Exception as e:
        raise RestackError(f'cannot find the shapes of {type(model).__name__} blocks: a forward pass on the meta '
                           f'device at input size {"x".join(map(str, input_size))} failed ({type(e).__name__}: '
                           f'{e}); give the input size the model takes (input_size=, `--input-size C H W`)') from e
    finally:
        for h in hooks:
            h.remove()
    return calls


def plan_restack(model: nn.Module, scheme: Union[str, Scheme] = 'rk4', learn_step_size: bool = False,
                 input_size: Optional[Sequence[int]] = None) -> RestackPlan:
    """What `restack` would do to `model` (which is not changed); a RestackError if it cannot."""
    scheme = _scheme(scheme, learn_step_size)
    family_name, family = _family(model)
    if getattr(model, 'restack_plan', None) is not None:
        raise RestackError(f'this {family_name} is already restacked (by {model.restack_plan.scheme}); restack the '
                           f'base model')
    input_size = tuple(input_size or _input_size(model))
    patterns = [re.compile(p) for p in family.containers]
    containers = [(name, m) for name, m in model.named_modules() if any(p.fullmatch(name) for p in patterns)]
    if not containers:
        raise RestackError(f'cannot restack this {family_name}: none of its modules is named like a block container '
                           f'({", ".join(family.containers)})')
    children = [(cname, name, child) for cname, c in containers for name, child in c.named_children()]
    calls = _probe(model, [child for _, _, child in children], input_size)

    runs: List[Run] = []
    left_out: List[str] = []
    for cname, container in containers:
        current: List[Tuple[str, nn.Module]] = []
        previous: Optional[_Call] = None

        def close():
            if current:
                runs.append(_group(cname, current, calls[current[0][1]], scheme))
                current.clear()

        for name, block in container.named_children():
            call = calls[block]
            reason = _why_not(block, call, family)
            if reason:
                close()
                left_out.append(f'{cname}.{name} ({type(block).__name__}): {reason}')
            else:
                chained = previous is not None and call.input is previous.output
                if current and (not chained or type(block).__name__ != type(current[0][1]).__name__):
                    close()
                current.append((name, block))
            previous = call
        close()
    if not runs:
        raise RestackError(f'cannot restack this {family_name}: none of its blocks is a residual block that keeps its '
                           f'shape (' + '; '.join(left_out[:4]) + (' ...' if len(left_out) > 4 else '') + ')')
    base = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
    plan = RestackPlan(base, family_name, scheme.name, scheme.stages, scheme.multistep, learn_step_size,
                       input_size, runs, left_out)
    plan.renames = _renames(plan)
    if not _trivial(scheme, learn_step_size) and not any(r.groups for r in runs):
        longest = max(len(r.blocks) for r in runs)
        fits = [n for n in list_schemes() if 1 < get_scheme(n).stages <= longest] + ['lm'] if longest > 1 else []
        need = (f'{scheme.name} chains runs of at least 2 blocks' if scheme.multistep else
                f'{scheme.name} has {scheme.stages} stages')
        raise RestackError(
            f'{need}, but the longest run of residual blocks that keep their shape in this {family_name} has '
            f'{longest} (' + ', '.join(f'{_span(r.container, r.blocks)}: {len(r.blocks)}' for r in runs)
            + '), so nothing would change. ' + (f'Schemes that fit: {", ".join(fits)}' if fits else
                                                'No scheme groups single blocks: a deeper variant has longer runs'))
    return plan


def _scheme(scheme, learn_step_size) -> Scheme:
    try:
        scheme = get_scheme(scheme)
    except ValueError as e:
        raise RestackError(str(e)) from None
    if not isinstance(learn_step_size, bool):
        raise RestackError(f'learn_step_size must be True or False, got {learn_step_size!r}')
    if learn_step_size and scheme.multistep:
        raise RestackError("learn_step_size applies to Runge-Kutta schemes; 'lm' learns its k_n instead")
    return scheme


def _trivial(scheme: Scheme, learn_step_size: bool) -> bool:
    """A one-stage step y = x + 1 * F(x) with a fixed h: the block itself."""
    return scheme.stages == 1 and not scheme.multistep and not learn_step_size and scheme.b[0] == 1


def _why_not(block: nn.Module, call: _Call, family: Family) -> str:
    rule = family.skips.get(type(block).__name__)
    if rule is None:
        return 'not a residual block class of this family'
    if call.calls == 1 and isinstance(call.output, torch.Tensor) and call.input is not None \
            and call.output.shape != call.input.shape:
        return (f'it changes the shape {"x".join(map(str, call.input.shape[1:]))} -> '
                f'{"x".join(map(str, call.output.shape[1:]))}')
    ok, reason = _identity_skip(block, rule)
    if not ok:
        return reason
    if call.calls != 1:
        return f'the forward pass ran it {call.calls} times, not once'
    if call.extra_args:
        return 'it is called with more than one tensor'
    if not isinstance(call.output, torch.Tensor):
        return f'it returns a {type(call.output).__name__}, not a tensor'
    if call.modified_input:
        return 'it modifies its input in place, which the other stages still read'
    return ''


def _group(container: str, blocks: List[Tuple[str, nn.Module]], first: _Call, scheme: Scheme) -> Run:
    names = tuple(name for name, _ in blocks)
    if scheme.multistep:  # one chain per run; a single block stays as it is (the chain's first step is Euler)
        groups, remainder = ((names,), ()) if len(names) > 1 else ((), names)
    else:
        whole = len(names) - len(names) % scheme.stages
        groups = tuple(names[i:i + scheme.stages] for i in range(0, whole, scheme.stages))
        remainder = names[whole:]
    return Run(container, names, type(blocks[0][1]).__name__, tuple(first.input.shape[1:]), groups, remainder)


def _renames(plan: RestackPlan) -> Dict[str, str]:
    """Base module name -> restacked module name of every block that moves into a restacked block.

    A restacked block takes the name of the first block it holds; its sub-network j is the group's
    block j, in `subnets` (Runge-Kutta) or in `blocks.j.subnets.0` (LM, one chain per run)."""
    renames = {}
    trivial = _trivial(get_scheme(plan.scheme), plan.learn_step_size)
    for r in plan.runs:
        for group in r.groups:
            if trivial:
                continue
            for j, name in enumerate(group):
                inner = f'blocks.{j}.subnets.0' if plan.multistep else f'subnets.{j}'
                renames[f'{r.container}.{name}'] = f'{r.container}.{group[0]}.{inner}.block'
    return renames


def _build(scheme: Scheme, group: List[nn.Module], learn_step_size: bool, family: Family) -> nn.Module:
    if _trivial(scheme, learn_step_size):
        return group[0]
    dd = get_device_dtype(group[0])
    if scheme.multistep:
        chain_ = [MultistepBlock(Increment(b), first=j == 0, act_layer=None, **dd) for j, b in enumerate(group)]
        block = MultistepStage(None, chain_)
    else:
        block = SchemeBlock(scheme, [Increment(b) for b in group], learn_step_size=learn_step_size, act_layer=None,
                            **dd)
    if family.extra_args:
        block.register_forward_pre_hook(_one_tensor, with_kwargs=True)
    return block


def _one_tensor(module: nn.Module, args, kwargs):
    """Forward pre-hook of a restacked block: it takes one tensor, so extra arguments are refused by name."""
    if kwargs or len(args) != 1:
        given = ', '.join(list(kwargs)) if kwargs else f'{len(args)} positional arguments'
        raise RestackError(f"a restacked block takes one tensor, got {given}: the base blocks' extra arguments (a "
                           f"ViT's attn_mask, is_causal) are not passed to its sub-networks, so a restacked model "
                           f"runs without them")


def restack(model: nn.Module, scheme: Union[str, Scheme] = 'rk4', learn_step_size: bool = False,
            input_size: Optional[Sequence[int]] = None) -> nn.Module:
    """Group `model`'s runs of residual blocks by `scheme`, in place; returns `model`.

    Each run of consecutive blocks with an identity skip that keep their input's shape becomes
    blocks of the scheme's stage count, k_i = F_i(x + h sum_j a_ij k_j), y = x + h sum_i b_i k_i, with
    F_i(x) = block_i(x) - x; a remainder shorter than the stage count stays as it is. `lm` makes each
    run one LM-ResNet chain. `learn_step_size` adds one learnable h (initialised to 1) per restacked
    block. `input_size` (C, H, W) is where the shapes are probed (default: the model's own).

    The model gets `restack_plan` (a RestackPlan: runs, groups, remainders, renames) and `scheme`;
    its pretrained_cfg names the `restacked` builder and its recorded model arguments gain `base`,
    `scheme` and `learn_step_size`, so timm's save_for_hf writes a config.json that rebuilds it.
    Raises RestackError (with the reason) for a model or scheme it cannot group.
    """
    plan = plan_restack(model, scheme, learn_step_size, input_size)
    scheme = get_scheme(scheme)
    modules = dict(model.named_modules())
    for r in plan.runs:
        container = modules[r.container]
        grouped = {g[0]: g for g in r.groups}
        members = {name for g in r.groups for name in g}
        new = []
        for name, child in list(container.named_children()):
            if name in grouped:
                new.append((name, _build(scheme, [getattr(container, n) for n in grouped[name]], learn_step_size,
                                         FAMILIES[plan.family])))
            elif name not in members:
                new.append((name, child))
        for name in list(container._modules):
            del container._modules[name]
        for name, child in new:
            container.add_module(name, child)
    model.restack_plan = plan
    model.scheme = plan.scheme
    cfg = getattr(model, 'pretrained_cfg', None)
    if isinstance(cfg, dict):
        model.pretrained_cfg = model.default_cfg = dict(cfg, architecture='restacked')
    model._model_args = dict(getattr(model, '_model_args', {}), base=plan.base, scheme=plan.scheme,
                             learn_step_size=learn_step_size)
    return model


# --- cost: parameters, multiply-accumulates, and the work of the stage combinations ---

class _ElementOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts output elements of arithmetic ops run inside restacked blocks but outside the base blocks."""
    ARITHMETIC = {'add', 'add_', 'sub', 'sub_', 'mul', 'mul_', 'div', 'div_', 'rsub', 'addcmul', 'addcmul_',
                  'lerp', 'lerp_'}

    def __init__(self):
        super().__init__()
        self.inside, self.base, self.count = 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.inside and not self.base and func.overloadpacket.__name__ in self.ARITHMETIC:
            self.count += out.numel()
        return out


def measure_cost(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> Dict[str, int]:
    """stats.count (parameters, conv/linear/attention MACs) and the element-wise ops of the stage combinations
    (one per output element of each add, sub, mul run by a restacked block outside its base blocks), for one
    image at `input_size`; on the meta device, so no weights are touched."""
    input_size = tuple(input_size or _input_size(model))
    counter = _ElementOps()
    hooks = []
    for m in model.modules():
        if isinstance(m, (SchemeBlock, MultistepBlock)):
            field_ = 'inside'
        elif isinstance(m, Increment):
            m, field_ = m.block, 'base'
        else:
            continue
        hooks.append(m.register_forward_pre_hook(lambda *_, f=field_: setattr(counter, f, getattr(counter, f) + 1)))
        hooks.append(m.register_forward_hook(lambda *_, f=field_: setattr(counter, f, getattr(counter, f) - 1)))
    try:
        with counter:
            run_on_meta(model, torch.zeros(1, *input_size, device='meta'))
    finally:
        for h in hooks:
            h.remove()
    return dict(count(model, input_size), combination_ops=counter.count)


def compare_cost(base: nn.Module, restacked: nn.Module, input_size: Optional[Sequence[int]] = None) -> str:
    """Parameters, MACs and stage-combination work of `restacked` against `base`, as text."""
    input_size = tuple(input_size or _input_size(base))
    a, b = measure_cost(base, input_size), measure_cost(restacked, input_size)
    extra = b['params'] - a['params']
    lines = [f"{'per image at ' + 'x'.join(map(str, input_size)):<34} {'base':>15} {'restacked':>15} {'ratio':>7}"]
    for key, label in (('params', 'parameters'), ('macs', 'MACs (conv, linear, attention)')):
        lines.append(f'{label:<34} {a[key]:>15,} {b[key]:>15,} {b[key] / a[key]:>7.4f}')
    share = b['combination_ops'] / b['macs'] if b['macs'] else 0.
    lines.append(f"{'stage combinations, element ops':<34} {'':>15} {b['combination_ops']:>15,} "
                 f"({share:.3%} of the MACs)")
    if extra:
        lines.append(f'extra parameters: {extra} (' + ('a step size h per restacked block' if restacked.restack_plan
                                                     .learn_step_size else 'k_n per LM block but the first of a run')
                     + ')')
    return '\n'.join(lines)
