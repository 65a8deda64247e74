"""Read weights, and what was recorded about them, from safetensors files and timm train.py checkpoints.

timm's `load_state_dict` reads train.py checkpoints (`torch.load(weights_only=True)`, so no pickled
code runs; it picks `state_dict_ema` / `state_dict` and strips `module.` / `_orig_mod.`). What we
add: errors that name the real cause (a folder, a permission, a pickle that would need to run code,
a truncated file), a key-by-key and shape-by-shape comparison with the architecture before anything
is loaded, a refusal of non-finite weights, and the record train.py (or timm's `save_for_hf`, as a
config.json beside a safetensors file) keeps of the model the weights were trained as.
"""
import argparse
import contextlib
import json
import os
import pickle
import pickletools
import re
import warnings
from typing import Any, Dict, List

import timm
import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors
from timm.layers import DropPath
from timm.models import load_state_dict

from .errors import HoresnetError
from .fileio import regular_file

__all__ = ['CheckpointError', 'readable_file', 'read_state_dict', 'checkpoint_meta', 'architecture_of',
           'check_state_dict', 'check_finite', 'load_weights']


class CheckpointError(HoresnetError, ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def readable_file(path: str) -> str:
    """`path` if it is a readable weights file, else an error that says what it is instead."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a folder, not a file (for a Hub folder use local-dir:{path})")
    if not os.path.lexists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist (give a .safetensors file or a timm train.py "
                              f"checkpoint such as output/train/<run>/model_best.pth.tar)")
    return regular_file(path, 'checkpoint', CheckpointError)


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    with open(path, 'rb') as f:  # read through Python: any path the OS accepts, UTF-8 or not
        data = f.read()
    try:
        return load_safetensors(data)
    except Exception as e:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"cannot read safetensors file '{path}': {e}. The file is truncated or corrupt; "
                              f"download or save it again.") from e


@contextlib.contextmanager
def _no_protocol_note():
    """Without torch's warning on a plain pickle's protocol: the error that follows it says more."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Detected pickle protocol')
        yield


def _pickled_globals(path: str) -> List[str]:
    """The Python objects a plain pickle (not torch.save's zip format) names, read by pickletools, which runs
    nothing; [] for a file that is no pickle. torch's unpickler stops at such a file's framing before naming them."""
    names, strings = [], []
    try:
        with open(path, 'rb') as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
                    strings.append(arg)
                elif op.name == 'GLOBAL':
                    names.append(arg.replace(' ', '.'))
                elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    names.append('.'.join(strings[-2:]))
    except Exception:  # not a pickle, or a damaged one: what was read so far
        pass
    return names


def read_state_dict(path: str, use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a train.py checkpoint (EMA weights when present and `use_ema`)."""
    path = readable_file(path)
    if path.endswith('.safetensors'):
        state_dict = _read_safetensors(path)
    else:
        try:
            with _no_protocol_note():
                state_dict = load_state_dict(path, use_ema=use_ema, device='cpu', weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as e:
            # timm re-raises torch's refusal of pickled code as a RuntimeError about weights_only
            blocked = re.search(r'GLOBAL ([\w.]+)', f'{e} {e.__cause__ or ""}')
            named = [blocked.group(1)] if blocked else _pickled_globals(path)
            if not named:  # not code the loader refused to run: a damaged or foreign file
                raise CheckpointError(f"cannot read checkpoint '{path}': it is truncated, corrupt, or not a torch "
                                      f"checkpoint or safetensors file") from e
            raise CheckpointError(
                f"checkpoint '{path}' holds pickled Python objects ({', '.join(named[:3])}), not only tensors; "
                f"horesnet-timm never runs code from a weights file. Save the weights alone, e.g. "
                f"torch.save(model.state_dict(), 'weights.pth') or safetensors' save_file") from e
        except Exception as e:  # whatever else the unpickler trips on in a damaged file (EOF, struct, index, ...)
            raise CheckpointError(f"cannot read checkpoint '{path}': {type(e).__name__}: {e}. The file is truncated, "
                                  f"corrupt, or not a safetensors / torch checkpoint.") from e
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)] if isinstance(state_dict, dict) else []
    if not isinstance(state_dict, dict) or bad:
        raise CheckpointError(f"checkpoint '{path}' does not hold a state dict of tensors"
                              + (f" (non-tensor entries: {bad[:5]})" if bad else ''))
    return state_dict


def _derived_in_chans(args: Dict[str, Any]) -> int:
    """The in_chans train.py passes to create_model: --in-chans, else --input-size's C, else 3."""
    if args.get('in_chans') is not None:
        return args['in_chans']
    if args.get('input_size') is not None:
        return args['input_size'][0]
    return 3


# train.py argument -> create_model keyword, for the arguments that shape the model
_TRAIN_PY_MODEL_ARGS = {'num_classes': 'num_classes', 'gp': 'global_pool', 'bn_momentum': 'bn_momentum',
                        'bn_eps': 'bn_eps'}
# train.py arguments that describe the input data (timm.data.resolve_data_config reads them)
DATA_KEYS = ('input_size', 'img_size', 'in_chans', 'mean', 'std', 'crop_pct', 'crop_mode', 'interpolation')


def _train_py_record(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    meta = {k: checkpoint[k] for k in ('arch', 'epoch') if checkpoint.get(k) is not None}
    meta['ema'] = any(checkpoint.get(k) for k in ('state_dict_ema', 'model_ema'))  # what timm's loader prefers
    args = vars(checkpoint['args']) if isinstance(checkpoint.get('args'), argparse.Namespace) else {}
    if args:
        model_args = dict(args.get('model_kwargs') or {})
        model_args.update({kw: args[k] for k, kw in _TRAIN_PY_MODEL_ARGS.items() if args.get(k) is not None})
        model_args['in_chans'] = _derived_in_chans(args)
        meta['model_args'] = model_args
        meta['data_args'] = {k: args[k] for k in DATA_KEYS if args.get(k) not in (None, '')}
        meta['dataset'] = args.get('dataset') or ''
        meta['train_args'] = {k: args[k] for k in ('dataset', 'epochs', 'seed', 'lr', 'batch_size')
                              if args.get(k) not in (None, '')}
    return meta


def _hub_config_record(path: str) -> Dict[str, Any]:
    """The config.json timm's save_for_hf writes beside model.safetensors, when there is one."""
    config = os.path.join(os.path.dirname(os.path.abspath(path)), 'config.json')
    if not os.path.lexists(config):
        return {}  # a bare safetensors file: the caller names the model
    damaged = f"the config.json beside '{path}' cannot describe its weights"
    way_out = 'stage the folder again, or move it away and name the model (MODEL --checkpoint FILE)'
    try:
        with open(config, encoding='utf-8') as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{damaged} ({type(e).__name__}: {e}); {way_out}") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get('architecture'), str):
        raise CheckpointError(f"{damaged} (it names no architecture); {way_out}")
    pretrained_cfg = cfg.get('pretrained_cfg') or {}
    model_args = dict(cfg.get('model_args') or {})
    if cfg.get('num_classes') is not None:
        model_args.setdefault('num_classes', cfg['num_classes'])
    return dict(arch=cfg['architecture'], model_args=model_args, config=config,
                data_args={k: pretrained_cfg[k] for k in DATA_KEYS if pretrained_cfg.get(k) is not None},
                label_names=pretrained_cfg.get('label_names') or cfg.get('label_names'))


def checkpoint_meta(path: str) -> Dict[str, Any]:
    """What was recorded about the weights in `path`: empty when nothing was.

    Keys, when recorded: 'arch' (model name), 'model_args' (create_model keywords: train.py's
    `--model-kwargs`, num_classes, global_pool and in_chans as train.py derives it), 'data_args'
    (input size, mean, std, ... as given to train.py), and for train.py checkpoints 'epoch', 'ema',
    'dataset' and 'train_args' (provenance for a card). A safetensors file is described by the
    config.json beside it ('config' names that file), as in a folder staged for the Hub.
    """
    path = readable_file(path)
    if path.endswith('.safetensors'):
        return _hub_config_record(path)
    try:
        # train.py pickles its argparse.Namespace as 'args'; allow that one class and nothing else
        allow = getattr(torch.serialization, 'safe_globals', None)  # torch >= 2.5
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            with _no_protocol_note():
                checkpoint = torch.load(path, map_location='meta', weights_only=True)
    except Exception:
        read_state_dict(path)  # raises the CheckpointError that says why the file cannot be read
        return {}  # the weights read, their record did not: nothing is known about them
    return _train_py_record(checkpoint) if isinstance(checkpoint, dict) else {}


def check_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str = 'checkpoint') -> None:
    """Raise CheckpointError naming every missing, unexpected and wrongly shaped tensor."""
    expected = model.state_dict()
    # a block's wiring record (blocks.RecordsWiring) is optional, and load_state_dict compares it by content
    record = lambda k: k.endswith('_extra_state')
    missing = [k for k in expected if k not in state_dict and not record(k)]
    unexpected = sorted(k for k in state_dict if k not in expected and not record(k))  # a file's order may be random
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}'
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape and not record(k)]
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


def check_finite(tensors: Dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity: every output computed from them would be meaningless."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source} holds NaN or infinite values in {len(bad)} tensors (e.g. {', '.join(bad[:3])}); "
                              f"the training diverged or the file is damaged: use an earlier checkpoint")


def architecture_of(model) -> List[str]:
    """What fixes the function a model computes from its weights: every module with its settings and
    every parameter and buffer with its shape. Dropout and drop-path are left out: they act only in
    training, so changing their rates does not contradict the weights."""
    skip = (DropPath, nn.Dropout, nn.Identity)
    lines = [f'{name}: {type(m).__name__}({m.extra_repr()})' + (f" scheme={m.scheme}" if isinstance(
        getattr(m, 'scheme', None), str) else '') for name, m in model.named_modules() if not isinstance(m, skip)]
    lines += [f'{name}: {tuple(t.shape)}' for name, t in list(model.named_parameters()) + list(model.named_buffers())]
    return lines


def check_recorded_architecture(model: torch.nn.Module, meta: Dict[str, Any], path: str) -> None:
    """Refuse a model built otherwise than the checkpoint's record says its weights were trained:
    schemes with equal stage counts share every key and shape, so only the wiring tells them apart."""
    if not meta.get('arch') or 'model_args' not in meta or not timm.is_model(meta['arch']):
        return
    recorded = architecture_of(timm.create_model(meta['arch'], device='meta', **meta['model_args']))
    given = architecture_of(model)
    if recorded != given:
        first = next((f'{a} vs {b}' for a, b in zip(recorded, given) if a != b), 'a different number of modules')
        args = ', '.join(f'{k}={v!r}' for k, v in meta['model_args'].items())
        raise CheckpointError(f"checkpoint '{path}' was trained as {meta['arch']}({args}), and the model given is "
                              f"another architecture (first difference: {first}); build it as recorded, or load it "
                              f"with horesnet_timm.loading.load_model('{path}')")


def load_weights(model: torch.nn.Module, path: str, use_ema: bool = True) -> torch.nn.Module:
    """Load a checkpoint into `model` after checking the architecture it records, every key, shape and
    value; returns the model."""
    state_dict = read_state_dict(path, use_ema=use_ema)
    source = f"checkpoint '{os.fspath(path)}'"
    meta = checkpoint_meta(path)
    if meta.get('arch'):
        source += f" (trained as '{meta['arch']}')"
    check_state_dict(model, state_dict, source)
    check_recorded_architecture(model, meta, os.fspath(path))
    check_finite(state_dict, source)
    model.load_state_dict(state_dict)
    return model
