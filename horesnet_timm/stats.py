"""Model statistics measured, never typed in: parameters, multiply-accumulates and activations.

Counted on the meta device (shapes only, no weights allocated), so measuring a model costs
milliseconds and needs no weights.
"""
from typing import Dict, Optional, Sequence

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['measure']


def measure(name: str, input_size: Optional[Sequence[int]] = None, activations: bool = False, **kwargs) -> Dict:
    """Parameters, and multiply-accumulates of conv and linear layers at `input_size` (default: the
    model's configured size) of `timm.create_model(name, **kwargs)`.

    `activations` adds 'activations_m': the output elements of every conv and linear layer, in
    millions, the quantity timm's model cards report as "Activations (M)".
    """
    model = timm.create_model(name, device='meta', **kwargs).eval()  # eval: BatchNorm accepts a 1x1 map at batch 1
    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    x = torch.empty(1, *input_size, device='meta')
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel())) for m in model.modules()
             if activations and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with FlopCounterMode(display=False) as counter:
        model(x)
    for hook in hooks:
        hook.remove()
    row = dict(
        model=name, scheme=getattr(model, 'scheme', ''), depth=getattr(model, 'depth', None),
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        gmacs=counter.get_total_flops() / 2e9,
        input_size='x'.join(map(str, input_size[1:])),
    )
    if activations:
        row['activations_m'] = sum(outputs) / 1e6
    return row
