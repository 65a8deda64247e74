"""Read weights from safetensors files and timm train.py checkpoints, with errors that say what is wrong.

timm's `load_state_dict` does the reading (safetensors, or `torch.load(weights_only=True)`, so no
pickle code runs; it picks `state_dict_ema` / `state_dict` and strips `module.` / `_orig_mod.`).
What we add: a readable error for a missing, truncated or corrupt file, and a key-by-key and
shape-by-shape comparison with the architecture before anything is loaded.
"""
import argparse
import contextlib
import os
import pickle
from typing import Any, Dict, Optional

import torch
from timm.models import load_state_dict

__all__ = ['CheckpointError', 'read_state_dict', 'checkpoint_meta', 'checkpoint_arch', 'check_state_dict',
           'load_weights']


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def _readable_file(path: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist (give a .safetensors file or a timm "
                                f"train.py checkpoint such as output/train/<run>/model_best.pth.tar)")
    return path


def read_state_dict(path: str, use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a train.py checkpoint (EMA weights when present and `use_ema`)."""
    path = _readable_file(path)
    try:
        state_dict = load_state_dict(path, use_ema=use_ema, device='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        # safetensors raises SafetensorError (an Exception subclass), handled below
        raise CheckpointError(f"cannot read checkpoint '{path}': {type(e).__name__}: {e}. The file is "
                              f"truncated, corrupt, or not a safetensors / torch checkpoint.") from e
    except Exception as e:
        if type(e).__name__ != 'SafetensorError':
            raise
        raise CheckpointError(f"cannot read safetensors file '{path}': {e}. The file is truncated or "
                              f"corrupt; download or save it again.") from e
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not isinstance(state_dict, dict) or bad:
        raise CheckpointError(f"checkpoint '{path}' does not hold a state dict of tensors "
                              f"(non-tensor entries: {bad[:5]})")
    return state_dict


# train.py's arguments that rebuild the model, and those that describe its input data
_MODEL_ARGS = ('num_classes', 'in_chans')
_DATA_ARGS = ('input_size', 'img_size', 'mean', 'std', 'crop_pct', 'crop_mode', 'interpolation')


def checkpoint_meta(path: str) -> Dict[str, Any]:
    """What timm's train.py stored beside the weights; empty for safetensors files and bare state dicts.

    Keys, when recorded: 'arch' (model name), 'epoch', 'ema' (EMA weights present), 'model_args'
    (`--model-kwargs` plus num_classes / in_chans, as passed to `create_model`), 'data_config'
    (input size, mean, std, ...), 'train_args' (dataset, epochs, seed, ...: provenance for a card).
    """
    path = _readable_file(path)
    if path.endswith('.safetensors'):
        return {}
    try:
        # train.py pickles its argparse.Namespace as 'args'; allow that one class and nothing else
        allow = getattr(torch.serialization, 'safe_globals', None)  # torch >= 2.5
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            checkpoint = torch.load(path, map_location='meta', weights_only=True)
    except Exception:
        return {}  # read_state_dict reports unreadable files
    if not isinstance(checkpoint, dict):
        return {}
    meta = {k: checkpoint[k] for k in ('arch', 'epoch') if checkpoint.get(k) is not None}
    meta['ema'] = any(checkpoint.get(k) for k in ('state_dict_ema', 'model_ema'))  # what timm's loader prefers
    args = vars(checkpoint['args']) if isinstance(checkpoint.get('args'), argparse.Namespace) else {}
    if args:
        model_args = dict(args.get('model_kwargs') or {})
        model_args.update({k: args[k] for k in _MODEL_ARGS if args.get(k) is not None})
        meta['model_args'] = model_args
        meta['data_config'] = {k: args[k] for k in _DATA_ARGS if args.get(k) is not None}
        meta['train_args'] = {k: args[k] for k in ('dataset', 'epochs', 'seed', 'lr', 'batch_size')
                              if args.get(k) not in (None, '')}
    return meta


def checkpoint_arch(path: str) -> Optional[str]:
    """The model name timm's train.py stored in its checkpoint ('arch'), or None (e.g. safetensors)."""
    return checkpoint_meta(path).get('arch')


def check_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str = 'checkpoint') -> None:
    """Raise CheckpointError naming every missing, unexpected and wrongly shaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}'
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    name = getattr(model, 'pretrained_cfg', {}).get('architecture', type(model).__name__)
    lines = [f"{source} does not fit {name}: {len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(shapes)} wrongly shaped tensors"]
    for title, items in (('missing', missing), ('unexpected', unexpected), ('shape', shapes)):
        lines += [f'  {title}: {item}' for item in items[:20]]
        if len(items) > 20:
            lines.append(f'  ... and {len(items) - 20} more {title}')
    lines.append('  Create the model the weights were trained as (same name, scheme=, layers=, num_classes=).')
    raise CheckpointError('\n'.join(lines))


def load_weights(model: torch.nn.Module, path: str, use_ema: bool = True) -> torch.nn.Module:
    """Load a checkpoint into `model` after checking every key and shape; returns the model."""
    state_dict = read_state_dict(path, use_ema=use_ema)
    source = f"checkpoint '{os.fspath(path)}'"
    arch = checkpoint_arch(path)
    if arch:
        source += f" (trained as '{arch}')"
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict)
    return model
