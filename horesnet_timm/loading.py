"""One way from a source to a model: the architecture the weights were trained as, the weights, the
data config they expect, and where they came from. Every command that takes a model goes through here.

    source                              weights                    architecture and data config from
    registered name (e.g. horesnet58_rk4)  random: untrained       the registry, plus the overrides
    registered name --pretrained        its published tag          the registry's pretrained_cfg
    hf-hub:org/name, local-dir:/path    the repository's           its config.json
    weights.safetensors (+ a name)      the file                   config.json beside it, else the name
    train.py checkpoint                 the file (EMA if present)  the arch and arguments train.py recorded

Overrides use timm train.py's names (--model-kwargs, --num-classes, --in-chans, --gp; --input-size,
--mean, ...). Where the weights' architecture is recorded, an override may not contradict it: the
recorded and the requested model are both built on the meta device and compared module by module
and tensor by tensor, so a default train.py never recorded (horesnet10_rk4's scheme, rk4) is
compared too, while settings that only act in training (drop rates) may change.
"""
import dataclasses
import difflib
import importlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import timm
from timm.data import resolve_input_data_config

from .checkpoint import architecture_of, check_finite, checkpoint_meta, load_weights, readable_file
from .errors import HoresnetError, UsageError
from .models.cifar import CIFAR10_LABELS

__all__ = ['Loaded', 'LoadError', 'load_model', 'rgb_equivalent', 'architecture_of', 'refuse_conflicts', 'explain_hub_error',
           'dataset_label_names']

HUB_PREFIXES = ('hf-hub:', 'local-dir:')
# the eval transform's choices (timm.data.create_transform)
CROP_MODES = ('center', 'squash', 'border')
INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest', 'lanczos', 'box', 'hamming')
# pretrained_cfg fields that say where the registry's weights live: wrong once other weights are loaded
_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'tag', 'custom_load')


class LoadError(HoresnetError):
    """A source, weights or overrides that do not make the model asked for."""


@dataclass
class Loaded:
    """A model in eval mode with what is known about its weights.

    `model.pretrained_cfg` is updated to describe these weights (input size, mean, std, crop,
    interpolation, label names), so timm's own `resolve_data_config(model=...)` and `save_for_hf`
    see the truth.
    """
    model: Any
    architecture: str  # the registered name (or hf-hub:/local-dir: source) it was built from
    source: str  # what the user named
    model_args: Dict[str, Any]  # create_model keywords beyond the registered defaults
    data_config: Dict[str, Any]  # resolved: input_size, interpolation, mean, std, crop_pct, crop_mode
    trained: bool  # False: random initialisation
    provenance: str  # one sentence: where the weights come from
    record: Dict[str, Any] = field(default_factory=dict)  # what the checkpoint recorded (checkpoint_meta)

    @property
    def label_names(self) -> Optional[List[str]]:
        return self.model.pretrained_cfg.get('label_names')


def _is_hub(source: str) -> bool:
    return source.startswith(HUB_PREFIXES)


def _check_name(name: str) -> None:
    if name.startswith('local-dir:'):
        folder = name.partition(':')[2]
        if not os.path.isfile(os.path.join(folder, 'config.json')):
            raise LoadError(f"{name}: '{folder}' holds no config.json; a local-dir: source is a folder staged by "
                            f"`horesnet hub push --dry-run --output-dir` (or timm's save_for_hf)")
        return
    if _is_hub(name):
        return
    if timm.is_model(name):
        arch, _, tag = name.partition('.')
        tags = timm.list_pretrained(arch + '*')
        if tag and name not in tags:
            raise LoadError(f"{arch} has no tag '{tag}'" + (f"; tagged weights: {', '.join(tags)}" if tags else ''))
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.75)
    raise LoadError(f"unknown model '{name}'" + (f"; did you mean {', '.join(close)}?" if close else '')
                    + " Give a name from timm.list_models('horesnet*'), hf-hub:org/name, local-dir:/path, a "
                      "timm train.py checkpoint, or a .safetensors file with the model it belongs to")


def _create(name: str, pretrained: bool = False, **kwargs):
    """timm.create_model with a message naming the model and arguments when they cannot build it."""
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except HoresnetError:
        raise
    except (TypeError, ValueError, AssertionError) as e:
        shown = ', '.join(f'{k}={v!r}' for k, v in kwargs.items() if k not in ('device', 'dtype'))
        raise LoadError(f"cannot build {name}" + (f" with {shown}" if shown else '') + f": {e}") from e
    except RuntimeError as e:
        if pretrained and 'pretrained' in str(e).lower():
            tags = timm.list_pretrained(name.split('.')[0] + '.*')
            if tags:  # the untagged name is the paper's CIFAR default, which has no weights; a tag has
                raise LoadError(f"{name} has no default weights; its published weights are the tag"
                                f"{'s' if len(tags) > 1 else ''} {', '.join(tags)}: name one") from e
            raise LoadError(f"{name} has no published weights; timm.list_pretrained('horesnet*') lists those that "
                            f"have") from e
        raise
    except Exception as e:  # hf-hub: or published weights: a repository that cannot be reached or found
        weights = name.partition(':')[2] if name.startswith('hf-hub:') else str(kwargs.get('base', name))
        message = explain_hub_error(e, weights, uploading=False) if name.startswith('hf-hub:') or pretrained else None
        if message is None:
            raise
        raise LoadError(message) from e


def refuse_conflicts(name: str, trained_as: Dict[str, Any], overrides: Dict[str, Any], what: str) -> None:
    """Refuse overrides under which `name` would be another architecture than the weights' one."""
    build = lambda kw: architecture_of(_create(name, device='meta', **kw))
    base = _create(name, device='meta', **trained_as)
    trained = architecture_of(base)
    if build({**trained_as, **overrides}) == trained:
        return
    culprits = [k for k in overrides if build({**trained_as, k: overrides[k]}) != trained] or list(overrides)

    def trained_value(key):
        value = trained_as.get(key, getattr(base, key, None))
        return f'{value!r}' if value is not None else 'its default'
    raise LoadError(f"{what} {name} with " + ', '.join(f'{k}={trained_value(k)}' for k in culprits) + "; "
                    + ', '.join(f'{k}={overrides[k]!r}' for k in culprits)
                    + " would build another architecture and load the weights into it. Drop the override "
                      "(to change the architecture, fine-tune with train.py --initial-checkpoint)")


def dataset_label_names(dataset: str, num_classes: int) -> Optional[List[str]]:
    """Class names of a torchvision dataset named as train.py names it (torch/fashion_mnist), if known."""
    known = {'torch/cifar10': lambda: CIFAR10_LABELS}
    for name, cls in (('fashion_mnist', 'FashionMNIST'), ('mnist', 'MNIST'), ('kmnist', 'KMNIST')):
        known[f'torch/{name}'] = lambda cls=cls: getattr(importlib.import_module('torchvision.datasets'), cls).classes
    names = known.get((dataset or '').lower(), lambda: None)()
    return list(names) if names is not None and len(names) == num_classes else None


def _provenance(source: str, checkpoint: Optional[str], meta: Dict[str, Any], pretrained: bool, use_ema: bool,
                model) -> str:
    if checkpoint is None:
        if _is_hub(source):
            return f'weights from {source}'
        if pretrained:
            cfg = model.pretrained_cfg
            where = cfg.get('hf_hub_id') or cfg.get('url') or cfg.get('file') or 'the registry'
            return f"the published weights of {cfg.get('architecture', source)}.{cfg.get('tag', '')} ({where})"
        return 'untrained: random initialisation'
    text = f'converted from `{os.path.basename(os.fspath(checkpoint))}`'
    if meta.get('config'):
        text += f" with the config.json beside it (`{meta['arch']}`)"
    elif meta.get('arch'):
        text += f", a timm train.py checkpoint of `{meta['arch']}`"
        text += f", epoch {meta['epoch']}" if 'epoch' in meta else ''
        text += ', EMA weights' if use_ema and meta.get('ema') else ''
    if meta.get('train_args'):
        text += ' (train.py arguments: ' + ', '.join(f'{k} {v}' for k, v in meta['train_args'].items()) + ')'
    return text


def _pool_size(model, input_size) -> Optional[Tuple[int, ...]]:
    """The unpooled feature map's size at `input_size` (timm's cfg field, which its model tests check), from
    the model's last feature reduction (stride-2 stages round up); None where the model does not say it."""
    try:
        reduction = model.feature_info[-1]['reduction']
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return tuple(math.ceil(size / reduction) for size in input_size[1:])


def _describe(data_config: Dict[str, Any], labels, model) -> Dict[str, Any]:
    """model.pretrained_cfg rewritten to describe the loaded weights."""
    cfg = dict(model.pretrained_cfg)
    if cfg.get('pool_size') and tuple(cfg.get('input_size', ())) != tuple(data_config['input_size']):
        cfg['pool_size'] = _pool_size(model, data_config['input_size'])
    cfg.update(data_config, num_classes=model.num_classes)
    cfg.pop('label_descriptions', None)
    if labels:
        cfg['label_names'] = list(labels)
    else:
        cfg.pop('label_names', None)
    return cfg


def load_model(
        source: Optional[str] = None,
        checkpoint: Optional[str] = None,
        model_args: Optional[Dict[str, Any]] = None,
        data_args: Optional[Dict[str, Any]] = None,
        pretrained: bool = False,
        use_ema: bool = True,
) -> Loaded:
    """The model `source` names, with `checkpoint` loaded into it; see the module docstring.

    model_args: create_model keywords (scheme=, num_classes=, in_chans=, ...).
    data_args: train.py's data arguments (input_size, img_size, mean, std, crop_pct, crop_mode, interpolation).
    """
    model_args, data_args = dict(model_args or {}), {k: v for k, v in (data_args or {}).items() if v is not None}
    _check_eval_transform(data_args)
    if source and not _is_hub(source) and os.path.lexists(source):  # a weights file named as the model
        if checkpoint is not None:
            raise UsageError(f"'{source}' is a file and --checkpoint names '{checkpoint}': give the weights once")
        source, checkpoint = None, source
    if checkpoint is not None:
        readable_file(checkpoint)
        if pretrained or (source and _is_hub(source)):
            raise UsageError(f"--checkpoint '{checkpoint}' and {'--pretrained' if pretrained else source} both "
                             f"name weights: give one")
    meta = checkpoint_meta(checkpoint) if checkpoint else {}
    arch = meta.get('arch')
    if source is None:
        if not arch:
            raise LoadError(f"'{checkpoint}' does not say which model it holds (a safetensors file without a "
                            f"config.json beside it, or a bare state dict): name the model too, e.g. "
                            f"`horesnet export horesnet58_rk4 --checkpoint {checkpoint}`")
        source = arch
        if not _is_hub(arch) and not timm.is_model(arch):  # saved without train.py's args: the class name
            raise LoadError(f"'{checkpoint}' records its model as '{arch}', which is not a registered model "
                            f"name: name the model, e.g. `horesnet export horesnet58_rk4 --checkpoint {checkpoint}`")
    _check_name(source)
    if arch and arch != source:
        raise LoadError(f"'{checkpoint}' holds weights of {arch}, not {source}: name {arch} (or drop the name)")

    # the keywords the weights were built with; None where nothing is recorded
    if 'model_args' in meta:
        trained_as = meta['model_args']
    elif _is_hub(source) or pretrained and timm.is_model_pretrained(source):
        trained_as = {}  # timm applies the repository's config.json or the registry's cfg itself
    else:
        trained_as = None
    if trained_as is not None and model_args:
        what = f"'{checkpoint}' was trained as" if checkpoint else f"the weights of {source} are"
        refuse_conflicts(source, trained_as, model_args, what)
    build_args = {**(trained_as or {}), **model_args}
    model = _create(source, pretrained=pretrained or _is_hub(source), **build_args).eval()
    if checkpoint is not None:
        load_weights(model, checkpoint, use_ema=use_ema)
    else:
        check_finite(model.state_dict(), f'the weights of {source}')

    # the data config: what the weights were trained with, then the requested changes
    recorded = meta.get('data_args', {})
    requested = {**recorded, **data_args}
    for key in ('img_size', 'input_size'):  # a size asked for replaces the recorded one, in either form
        if key not in data_args and {'img_size', 'input_size'} & set(data_args):
            requested.pop(key, None)
    try:
        trained_cfg = resolve_input_data_config(model, args=recorded)
        data_config = resolve_input_data_config(model, args=requested)
    except ValueError as e:
        raise LoadError(f"data config for {source}: {e}") from e
    channels = data_config['input_size'][0]
    known = 'data_args' in meta or (checkpoint is None and (pretrained or _is_hub(source)))
    for key in ('mean', 'std'):
        values = [float(v) for v in data_config[key]]
        if not all(math.isfinite(v) for v in values) or (key == 'std' and min(values) <= 0) or len(values) != channels:
            raise LoadError(f"{key} {values}: the data config needs {channels} finite number(s), one per input "
                            f"channel{', each above 0' if key == 'std' else ''}")
        if known and key in data_args and tuple(data_config[key]) != tuple(trained_cfg[key]):
            raise LoadError(f"the weights were trained with {key} {list(trained_cfg[key])}; --{key} "
                            f"{list(data_config[key])} would feed them other inputs. Drop --{key}")
    if checkpoint is None:
        labels = model.pretrained_cfg.get('label_names')
        labels = labels if labels and len(labels) == model.num_classes else None
    else:
        labels = meta.get('label_names') or dataset_label_names(meta.get('dataset', ''), model.num_classes)
    cfg = _describe(data_config, labels, model)
    if checkpoint is not None:
        cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    model.pretrained_cfg = model.default_cfg = cfg
    return Loaded(
        model=model, architecture=source, source=checkpoint or source,
        model_args={k: v for k, v in build_args.items() if k not in ('device', 'dtype')},
        data_config=data_config, trained=checkpoint is not None or pretrained or _is_hub(source),
        provenance=_provenance(source, checkpoint, meta, pretrained, use_ema, model), record=meta)


def _check_eval_transform(data_args: Dict[str, Any]) -> None:
    """Refuse an eval-transform setting timm would replace by its default or fail on later (crop_pct 0 is falsy)."""
    crop_pct = data_args.get('crop_pct')
    if crop_pct is not None and not (isinstance(crop_pct, (int, float)) and not isinstance(crop_pct, bool)
                                     and math.isfinite(crop_pct) and crop_pct > 0):
        raise LoadError(f'crop_pct {crop_pct!r}: give a number above 0 (the fraction of the resized image kept)')
    for key, choices in (('crop_mode', CROP_MODES), ('interpolation', INTERPOLATIONS)):
        if key in data_args and data_args[key] not in choices:
            raise LoadError(f"{key} {data_args[key]!r}: choose one of {', '.join(choices)}")


def rgb_equivalent(loaded: Loaded) -> Loaded:
    """A grey (1-channel) model made to take RGB images: its first convolution reads the three channels with
    a third of the grey weights each, and mean/std repeat, so an RGB picture of a grey image (R = G = B)
    gives the grey model's outputs, and a colour image is read as the mean of its channels."""
    model = loaded.model
    cfg = model.pretrained_cfg
    if model.in_chans != 1:
        return loaded
    first_conv = cfg.get('first_conv')
    state = model.state_dict()
    if not isinstance(first_conv, str) or first_conv + '.weight' not in state:
        raise LoadError(f"{loaded.architecture} names no first convolution (pretrained_cfg first_conv "
                        f"{first_conv!r}): cannot make its grey weights read RGB images")
    model_args = {**loaded.model_args, 'in_chans': 3}
    rgb = timm.create_model(cfg['architecture'], **model_args).eval()
    state[first_conv + '.weight'] = state[first_conv + '.weight'].repeat(1, 3, 1, 1) / 3
    rgb.load_state_dict(state)
    data_config = dict(loaded.data_config, input_size=(3, *loaded.data_config['input_size'][1:]),
                       mean=tuple(loaded.data_config['mean']) * 3, std=tuple(loaded.data_config['std']) * 3)
    rgb.pretrained_cfg = rgb.default_cfg = dict(cfg, **data_config)
    return dataclasses.replace(
        loaded, model=rgb, model_args=model_args, data_config=data_config,
        provenance=loaded.provenance + '; trained on grey images, its first convolution made to read RGB ones '
                                       '(R = G = B gives the grey model\'s outputs)')


def explain_hub_error(e: BaseException, repo_id: str, uploading: bool = True) -> Optional[str]:
    """A one-paragraph reason and remedy for a Hub or network failure, or None if `e` is neither."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
    endpoint = constants.ENDPOINT
    if isinstance(e, LocalEntryNotFoundError):  # offline, and not in the local cache either
        return (f"cannot reach the Hub at {endpoint}, and '{repo_id}' is not in the local cache. Check the network, "
                f"a proxy, HF_ENDPOINT or HF_HUB_OFFLINE")
    if isinstance(e, RevisionNotFoundError):
        return f"revision not found in '{repo_id}' at {endpoint}: {str(e).splitlines()[0]}"
    if isinstance(e, RepositoryNotFoundError):
        return (f"repository '{repo_id}' not found at {endpoint}, or your token may not access it. Check the "
                f"id (ORG/NAME[@revision]) and your token (HF_TOKEN or `hf auth login`).")
    if isinstance(e, EntryNotFoundError):
        return f"a file is missing from '{repo_id}' at {endpoint}: {str(e).splitlines()[0]}"
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, 'response', None), 'status_code', None)
        hint = {401: 'the token was rejected: log in again with `hf auth login` or set HF_TOKEN',
                403: 'the token may not write to this namespace: use a write token, or an ORG you belong to'}
        return (f"the Hub at {endpoint} refused the request for '{repo_id}' (HTTP {status}): "
                f"{hint.get(status, str(e).splitlines()[0])}")
    # connection refused, DNS failure, timeout: httpx, httpx2 (huggingface_hub >= 1.0) or requests (< 1.0)
    if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__module__.split('.')[0] in (
            'httpx', 'httpx2', 'requests', 'urllib3'):
        return (f"cannot reach the Hub at {endpoint} ({type(e).__name__}: {e}). Check the network, a proxy, "
                f"or HF_ENDPOINT" + ('; no commit was made' if uploading else ''))
    return None


