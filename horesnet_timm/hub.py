"""Publish weights on the Hugging Face Hub in exactly the layout timm's `hf-hub:` loader reads.

    weights  -> loading.load_model: the model the checkpoint was trained as, every key and shape checked
    stage    -> timm's own `save_for_hf` (model.safetensors + config.json, no pickle), our card as
                README.md, model.onnx when given; then `check_folder` loads the folder back through
                timm's `local-dir:` path (the same config parsing as `hf-hub:`) and compares outputs
    push     -> `create_repo` + one `upload_folder` commit, the calls timm's `push_to_hf_hub` makes
    shipped  -> each folder of horesnet_timm/weights/ (the pretrained tags that ship in the package) checked
                as its tag (`horesnet hub publish-shipped` then pushes each unchanged, one commit per folder)

We do not call `push_to_hf_hub` itself: it re-serialises the model into a folder of its own (with a
pickle file by default) and keeps an existing README, so what it uploads is not what we checked.
"""
import json
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import timm
import torch
from timm.data import resolve_data_config
from timm.models import save_for_hf

from . import __version__
from .cards import render_card
from .checkpoint import CheckpointError, read_state_dict
from .errors import HoresnetError, UsageError
from .fileio import atomic_output, regular_file, umask
from .loading import explain_hub_error
from .measure import model_stats
from .models import cifar
from .onnx_export import ExportError, compare, onnx_session, synthetic_images, verify, within_tolerance
from .predict import REQUIRED_KEYS

__all__ = ['HubError', 'stage', 'check_folder', 'push', 'load_from_hub', 'shipped_folders', 'check_shipped']

WEIGHTS, CONFIG, CARD, ONNX = 'model.safetensors', 'config.json', 'README.md', 'model.onnx'
EVAL = 'eval.json'  # the evaluation record beside a shipped folder's card
NO_TOKEN = ('no Hugging Face token: run `hf auth login`, or set HF_TOKEN to a token with write access '
            '(https://huggingface.co/settings/tokens).')


class HubError(HoresnetError):
    """Something that stops a push or a download, with what to do about it."""


def _add_onnx(onnx_path: str, folder: Path) -> str:
    """Copy an exported ONNX model into `folder` as one self-contained model.onnx.

    torch's exporter may keep the weights in a side file (`<name>.onnx.data`) that the graph names;
    loading and saving without external data bundles them, so the Hub file works on its own.
    """
    try:
        import onnx
    except ImportError as e:
        raise HubError("publishing an ONNX file needs the onnx package: pip install 'horesnet-timm[onnx]'") from e
    try:
        model = onnx.load(onnx_path)  # resolves external data relative to the file
        onnx.checker.check_model(model)
    except Exception as e:
        raise HubError(f"ONNX file '{onnx_path}' cannot be read or is invalid ({type(e).__name__}: {e}); "
                       f"export it again") from e
    onnx.save_model(model, str(folder / ONNX), save_as_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return f"`{model.graph.input[0].name}`, shape ({', '.join(d.dim_param or str(d.dim_value) for d in dims)})"


PREPROCESSING = ('input_size', 'mean', 'std', 'crop_pct', 'crop_mode', 'interpolation')
JSON_PROPS = ('input_size', 'mean', 'std', 'crop_pct')  # as `horesnet export` writes them


def _plain(value):
    """A config value as JSON reads it back (tuples as lists)."""
    return json.loads(json.dumps(value))


def _check_onnx(path: Path, model, source: str) -> None:
    """The ONNX file must compute what the weights compute, checked as `horesnet export` checks its own file:
    at its precision (fp32 within the exporter's bound, fp16 / int8 by top-1 agreement on images) and batch."""
    try:
        import onnx
    except ImportError as e:
        raise HubError("checking an ONNX file needs onnxruntime: pip install 'horesnet-timm[onnx]'") from e
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    cfg = {'crop_mode': 'center', **resolve_data_config(model=model)}  # what `horesnet export` records
    # config.json and model.onnx both tell a client how to preprocess: they must say the same
    try:
        recorded = {k: json.loads(props[k]) if k in JSON_PROPS else props[k] for k in PREPROCESSING if k in props}
    except ValueError as e:
        raise HubError(f"ONNX file '{source}' holds preprocessing metadata that is not JSON ({e}); export it again "
                       f"with `horesnet export`") from e
    differ = [f'{k} {v!r} vs {_plain(cfg.get(k))!r}' for k, v in recorded.items() if v != _plain(cfg.get(k))]
    if differ:
        raise HubError(f"ONNX file '{source}' preprocesses images otherwise than the weights' config "
                       f"({'; '.join(differ)}): clients reading model.onnx and config.json would feed the model "
                       f"different inputs. Export it with the weights' settings, or publish without --onnx")
    session = onnx_session(str(path))
    batch = session.get_inputs()[0].shape[0]
    dynamic = not isinstance(batch, int)
    try:
        if all(k in props for k in REQUIRED_KEYS + ('precision',)):
            with tempfile.TemporaryDirectory(prefix='horesnet-onnx-check-') as work:
                verify(model.eval(), str(path), props, synthetic_images(work), 2 if dynamic else batch, dynamic,
                       False, props['precision'])
        else:  # not written by `horesnet export`: random inputs at the file's batch, the fp32 bound
            x = torch.randn(1 if dynamic else batch, *model.pretrained_cfg['input_size'],
                            generator=torch.Generator().manual_seed(0)).numpy()
            row = compare(model.eval(), session, {'random': x})[0]
            if not within_tolerance(row):
                raise ExportError(f"max |diff| {row['max_abs']:.3g} on random inputs")
    except ExportError as e:
        raise HubError(f"ONNX file '{source}' does not compute what these weights compute ({e}); export it "
                       f"from the same checkpoint") from e
    except ValueError as e:  # outputs of another shape: another model
        raise HubError(f"ONNX file '{source}' does not compute what these weights compute (its outputs have "
                       f"another shape: {e}); export it from the same checkpoint") from e


def check_folder(folder: Path, model, onnx_source: Optional[str] = None) -> float:
    """Load `folder` back the way `hf-hub:` will and compare with `model`; returns the max |diff| of outputs.

    `local-dir:` reads config.json (architecture, model_args, pretrained_cfg) through the same
    parser as `hf-hub:`, so a missing `scheme=` or a wrong class count shows up here, before upload.
    """
    try:
        loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    except (ValueError, RuntimeError) as e:  # the wiring record or timm's strict load: config.json builds another model
        detail = ' '.join(str(e).split())  # one line: timm's load errors span several
        detail = detail if len(detail) <= 300 else detail[:300] + ' ...'
        raise HubError(f"staged folder '{folder}' does not load back as the model it holds ({detail}); "
                       f"not publishing") from e
    want, got = model.state_dict(), loaded.state_dict()
    differ = [k for k in want if k not in got or not torch.equal(want[k], got[k])]
    if differ or got.keys() != want.keys():
        raise HubError(f"staged folder '{folder}' reloads with other weights ({len(differ)} tensors differ, "
                       f"e.g. {differ[:3]}); not publishing")
    x = torch.randn(2, *loaded.pretrained_cfg['input_size'], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model.eval()(x), loaded(x)
    diff = (a - b).abs().max().item() if a.shape == b.shape else float('inf')
    if not diff <= 1e-6 * max(1.0, a.abs().max().item()):
        raise HubError(f"staged folder '{folder}' reloads as a different model: outputs {tuple(b.shape)} vs "
                       f"{tuple(a.shape)}, max |diff| {diff:.3g} (architecture "
                       f"{loaded.pretrained_cfg['architecture']}, scheme {getattr(loaded, 'scheme', '?')} vs "
                       f"{getattr(model, 'scheme', '?')}); not publishing")
    if (folder / ONNX).exists():
        _check_onnx(folder / ONNX, model, onnx_source or str(folder / ONNX))
    return diff


def _tidy_config(config: Path):
    """config.json as every client reads it. transformers builds a timm model with model_args plus its own
    num_classes, so a num_classes in both is a TypeError there (timm and our loader read the top-level one);
    a registry tag's name and notes describe the registry entry, not the folder."""
    cfg = json.loads(config.read_text(encoding='utf-8'))
    if cfg.get('model_args', {}).pop('num_classes', cfg['num_classes']) != cfg['num_classes']:
        raise HubError(f"{CONFIG} records two class counts; not publishing")
    for key in ('tag', 'notes'):
        cfg['pretrained_cfg'].pop(key, None)
    config.write_text(json.dumps(cfg, indent=2), encoding='utf-8')


def stage(loaded, folder: str, repo_id: Optional[str] = None, eval_record: Optional[Dict] = None,
          datasets: Sequence[str] = (), onnx: Optional[str] = None) -> Path:
    """Write and check the Hub folder for `loaded` (a loading.Loaded). It appears at `folder` complete, or
    not at all."""
    if onnx is not None:
        regular_file(onnx, 'ONNX file', HubError)
    model = loaded.model
    stats = model_stats(loaded.architecture, input_size=model.pretrained_cfg['input_size'], activations=True,
                    **loaded.model_args)
    model_config = {'pretrained_cfg': {'hf_hub_id': repo_id}} if repo_id else {}
    if model.pretrained_cfg.get('label_names'):
        model_config['label_names'] = list(model.pretrained_cfg['label_names'])  # where transformers reads them
    with atomic_output(folder, directory=True) as work:
        save_for_hf(model, work, safe_serialization=True, model_args=loaded.model_args,
                    data_config=loaded.data_config or None, model_config=model_config or None)
        _tidy_config(work / CONFIG)
        onnx_input = _add_onnx(onnx, work) if onnx is not None else None
        card = render_card(model, stats, repo_id, loaded.provenance, eval_record, list(datasets), onnx_input)
        (work / CARD).write_text(card, encoding='utf-8')
        for path in work.iterdir():  # safetensors writes its file private (0600); the folder is for sharing
            path.chmod(0o666 & ~umask())
        check_folder(work, model, onnx)
    return Path(folder)


def push(folder: Path, repo_id: str, private: bool = False, revision: Optional[str] = None,
         commit_message: Optional[str] = None, token: Optional[str] = None):
    """Upload a staged folder as one commit (so a failed push leaves the repository unchanged)."""
    from huggingface_hub import HfApi
    api = HfApi(token=token, library_name='horesnet-timm', library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    # upload_folder shows a progress bar per large file unless HF_HUB_DISABLE_PROGRESS_BARS is set
    message = commit_message or f'Add {folder.name} weights (horesnet-timm {__version__})'
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision, commit_message=message)


def load_from_hub(repo_id: str, **kwargs):
    """`timm.create_model('hf-hub:<repo_id>', pretrained=True, **kwargs)`, with errors that name the file.

    The repository's file list is read first, so a missing config.json or model.safetensors is
    named (timm would report a 404 for pytorch_model.bin, its fallback); the weights are then
    fetched into the cache timm reads from and checked, so a truncated file is named too.
    """
    from huggingface_hub import HfApi, hf_hub_download
    repo, _, revision = repo_id.partition('@')
    try:
        info = HfApi().model_info(repo, revision=revision or 'main')
        files = sorted(s.rfilename for s in info.siblings or ())
        missing = [f for f in (CONFIG, WEIGHTS) if f not in files]
        if missing:
            raise HubError(f"hf-hub:{repo_id} has no {' and no '.join(missing)} (it holds {files or 'no files'}); "
                           f"a horesnet-timm repository holds {CONFIG} and {WEIGHTS}: push one with "
                           f"`horesnet hub push`")
        weights = hf_hub_download(repo, WEIGHTS, revision=info.sha, library_name='timm')
    except HubError:
        raise
    except Exception as e:
        message = explain_hub_error(e, repo_id, uploading=False)
        if message is None:
            raise
        raise HubError(message) from e
    try:
        read_state_dict(weights)
    except CheckpointError as e:
        raise HubError(f"{WEIGHTS} in hf-hub:{repo_id} cannot be read: {e}") from e
    try:
        return timm.create_model(f'hf-hub:{repo_id}', pretrained=True, **kwargs)
    except RuntimeError as e:  # timm's strict load: keys or shapes that do not fit config.json's architecture
        raise HubError(f"{WEIGHTS} in hf-hub:{repo_id} does not fit the architecture in its {CONFIG}: {e}") from e


# --- the folders that ship in the package (horesnet_timm/weights/<arch>.<tag>/, registered by models/cifar.py) ---


def shipped_folders(only: Sequence[str] = ()) -> List[Path]:
    """The shipped Hub folders, sorted by name; with `only`, those named (each must exist)."""
    folders = {p.parent.name: p.parent for p in cifar.WEIGHTS.glob(f'*/{CONFIG}')}
    unknown = [n for n in only if n not in folders]
    if unknown:
        raise UsageError(f"--only {' '.join(unknown)}: not a shipped folder; the package ships "
                         f"{', '.join(sorted(folders)) or 'none'}")
    if not folders:
        raise HubError(f"no pretrained folders ship in '{cifar.WEIGHTS}'")
    return [folders[n] for n in sorted(set(only) or folders)]


def check_shipped(folder: Path) -> Dict:
    """Check that a shipped folder is what its tag loads, and say what publishing it uploads.

    Its config.json must name hf_hub_id `<namespace>/<folder name>`; the folder must load through timm's
    `local-dir:` (the `hf-hub:` parser) with the weights and outputs of `timm.create_model(<folder name>,
    pretrained=True)`; its card must show the top-1 of its eval.json. Returns {'hf_hub_id', 'files': [(name,
    size)], 'sha256'} (sha256 of model.safetensors); every regular file of the folder is uploaded.
    """
    name = folder.name
    missing = [f for f in (CONFIG, WEIGHTS, CARD, EVAL) if not (folder / f).is_file()]
    if missing:
        raise HubError(f"shipped folder '{folder}' has no {' and no '.join(missing)}; stage it again with "
                       f"`horesnet hub push --dry-run --output-dir`")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding='utf-8'))
        record = json.loads((folder / EVAL).read_text(encoding='utf-8'))
        hub_id = config['pretrained_cfg']['hf_hub_id']
    except (ValueError, KeyError, TypeError) as e:
        raise HubError(f"shipped folder '{folder}': {CONFIG} or {EVAL} is not what `horesnet hub push` stages "
                       f"({type(e).__name__}: {e})") from e
    if not isinstance(hub_id, str) or hub_id.count('/') != 1 or hub_id.split('/')[1] != name:
        raise HubError(f"shipped folder '{folder}': its {CONFIG} names hf_hub_id {hub_id!r}, not "
                       f"'<namespace>/{name}'; a folder is published under its own name")
    if name not in timm.list_pretrained(name):
        raise HubError(f"shipped folder '{folder}' is not a registered pretrained tag; reinstall the package")
    if f"| {record.get('top1')} |" not in (folder / CARD).read_text(encoding='utf-8'):
        raise HubError(f"the card of shipped folder '{folder}' does not show the top-1 of its {EVAL} "
                       f"({record.get('top1')}); render it again")
    try:
        check_folder(folder, timm.create_model(name, pretrained=True))
    except (RuntimeError, ValueError, KeyError, TypeError) as e:  # timm's strict load, a config it cannot parse
        detail = ' '.join(str(e).split())
        detail = detail if len(detail) <= 300 else detail[:300] + ' ...'
        raise HubError(f"shipped folder '{folder}' does not load through timm as {name} ({type(e).__name__}: "
                       f"{detail}); stage it again with `horesnet hub push --dry-run --output-dir`") from e
    files = [(p.name, p.stat().st_size) for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith('.')]
    from huggingface_hub.utils.sha import sha_fileobj
    with open(folder / WEIGHTS, 'rb') as f:
        digest = sha_fileobj(f).hex()  # what the Hub computes for an LFS file
    return {'hf_hub_id': hub_id, 'files': files, 'sha256': digest}
