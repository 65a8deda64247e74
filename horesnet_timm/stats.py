"""Model statistics measured, never typed in: parameters, multiply-accumulates and activations.

Counted on the meta device (shapes only, no weights allocated or touched), so measuring a model costs
milliseconds and needs no weights. Time and memory are measure.py's.
"""
from itertools import chain
from typing import Dict, Optional, Sequence

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['run_on_meta', 'count', 'measure']


def run_on_meta(model: torch.nn.Module, x: torch.Tensor):
    """model(x) in eval mode (BatchNorm accepts a 1x1 map at batch 1) with every parameter and buffer replaced by
    a meta tensor: shapes only, whatever device the weights are on; each module's mode is restored afterwards."""
    tensors = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    state = {name: torch.empty_like(t, device='meta') for name, t in tensors}
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(model, state, (x,), tie_weights=False, strict=False)
    finally:
        for m, mode in modes:
            m.training = mode


def count(model: torch.nn.Module, input_size: Sequence[int], activations: bool = False) -> Dict[str, int]:
    """Parameters and multiply-accumulates (conv, linear, attention: torch.utils.flop_counter) of `model` for
    one image of `input_size`. `activations` adds the output elements of every conv and linear layer, the
    quantity timm's model cards report as "Activations (M)"."""
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel())) for m in model.modules()
             if activations and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with FlopCounterMode(display=False) as counter:
            run_on_meta(model, torch.empty(1, *input_size, device='meta'))
    finally:
        for hook in hooks:
            hook.remove()
    counts = dict(params=sum(p.numel() for p in model.parameters()), macs=counter.get_total_flops() // 2)
    if activations:
        counts['activations'] = sum(outputs)
    return counts


def measure(name: str, input_size: Optional[Sequence[int]] = None, activations: bool = False, **kwargs) -> Dict:
    """`count` of `timm.create_model(name, **kwargs)` at `input_size` (default: the model's configured size),
    in the units of timm's model cards (millions of parameters, GMACs, millions of activations)."""
    model = timm.create_model(name, device='meta', **kwargs)
    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    counts = count(model, input_size, activations)
    row = dict(
        model=name, scheme=getattr(model, 'scheme', ''), depth=getattr(model, 'depth', None),
        params_m=counts['params'] / 1e6, gmacs=counts['macs'] / 1e9, input_size='x'.join(map(str, input_size[1:])),
    )
    if activations:
        row['activations_m'] = counts['activations'] / 1e6
    return row
