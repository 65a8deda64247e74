"""Publish weights on the Hugging Face Hub in exactly the layout timm's `hf-hub:` loader reads.

    weights  -> load_source: a registered model + a checkpoint, every key and shape checked
    stage    -> timm's own `save_for_hf` (model.safetensors + config.json, no pickle), our card as
                README.md, model.onnx when given; then `check_folder` loads the folder back through
                timm's `local-dir:` path (the same config parsing as `hf-hub:`) and compares outputs
    push     -> `create_repo` + one `upload_folder` commit, the calls timm's `push_to_hf_hub` makes

We do not call `push_to_hf_hub` itself: it re-serialises the model into a folder of its own (with a
pickle file by default) and keeps an existing README, so what it uploads is not what we checked.
"""
import ast
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

# torch, timm and huggingface_hub are imported where used, so `horesnet --help` stays fast

__all__ = ['HubError', 'Source', 'parse_model_kwargs', 'load_source', 'stage', 'check_folder',
           'push', 'load_from_hub', 'explain_hub_error']

WEIGHTS, CONFIG, CARD, ONNX = 'model.safetensors', 'config.json', 'README.md', 'model.onnx'


class HubError(RuntimeError):
    """Something that stops a push or a download, with what to do about it."""


@dataclass
class Source:
    """A model with its weights and what is known about where they came from."""
    model: Any  # a torch.nn.Module made by timm.create_model
    provenance: Optional[str] = None  # one sentence for the card; None: untrained
    model_args: Dict[str, Any] = field(default_factory=dict)
    data_config: Dict[str, Any] = field(default_factory=dict)


def parse_model_kwargs(items: Sequence[str]) -> Dict[str, Any]:
    """['scheme=gill4', 'layers=(8,)'] -> {'scheme': 'gill4', 'layers': (8,)} (Python literals, else strings)."""
    kwargs = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f"model argument {item!r} is not KEY=VALUE (e.g. scheme=gill4)")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def load_source(name: str, checkpoint: Optional[str] = None, model_args: Optional[Dict[str, Any]] = None,
                use_ema: bool = True) -> Source:
    """Create `name` and load `checkpoint` into it (eval mode).

    A train.py checkpoint records the model it was trained as and its `--model-kwargs`: those are
    used, and a different name or a conflicting argument is refused, because schemes of equal
    stage count share every key and shape (rk4 and gill4 weights load into each other silently).
    """
    import timm
    from .checkpoint import CheckpointError, checkpoint_meta, load_weights
    model_args = dict(model_args or {})
    meta = checkpoint_meta(checkpoint) if checkpoint else {}
    if meta.get('arch') and meta['arch'] != name:
        raise CheckpointError(f"checkpoint '{checkpoint}' was trained as '{meta['arch']}', not '{name}'; "
                              f"publish it as {meta['arch']}")
    recorded = meta.get('model_args', {})
    conflicts = [f'{k}={model_args[k]!r} (checkpoint: {v!r})' for k, v in recorded.items()
                 if k in model_args and model_args[k] != v]
    if conflicts:
        raise CheckpointError(f"checkpoint '{checkpoint}' was trained with other model arguments: "
                              + ', '.join(conflicts) + '; drop them or give the matching values')
    model_args = {**recorded, **model_args}
    model = timm.create_model(name, **model_args)
    if checkpoint is None:
        return Source(model.eval(), None, model_args)
    load_weights(model, checkpoint, use_ema=use_ema)
    text = f'converted from `{os.path.basename(os.fspath(checkpoint))}`'
    if meta.get('arch'):
        text += f", a timm train.py checkpoint of `{meta['arch']}`"
        text += f", epoch {meta['epoch']}" if 'epoch' in meta else ''
        text += ', EMA weights' if use_ema and meta.get('ema') else ''
    if meta.get('train_args'):
        text += ' (train.py arguments: ' + ', '.join(f'{k} {v}' for k, v in meta['train_args'].items()) + ')'
    return Source(model.eval(), text + '.', model_args, meta.get('data_config', {}))


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


def _check_onnx(path: Path, model, x, source: str) -> None:
    """The ONNX file must compute what the weights compute, within the exporter's fp32 bound."""
    try:
        from .onnx_export import compare, onnx_session, within_tolerance
    except ImportError as e:
        raise HubError("checking an ONNX file needs onnxruntime: pip install 'horesnet-timm[onnx]'") from e
    session = onnx_session(str(path))
    try:
        row = compare(model, session, {'random': x[:1].numpy()})[0]  # an export may fix the batch size at 1
    except ValueError:  # numpy cannot subtract outputs of different shapes
        row = None
    if row is None or not within_tolerance(row):
        detail = f"max |diff| {row['max_abs']:.3g}" if row else 'outputs of another shape'
        raise HubError(f"ONNX file '{source}' does not compute what these weights compute ({detail}); export it "
                       f"from the same checkpoint")


def check_folder(folder: Path, model, onnx_source: Optional[str] = None) -> float:
    """Load `folder` back the way `hf-hub:` will and compare with `model`; returns the max |diff| of outputs.

    `local-dir:` reads config.json (architecture, model_args, pretrained_cfg) through the same
    parser as `hf-hub:`, so a missing `scheme=` or a wrong class count shows up here, before upload.
    """
    import timm
    import torch
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
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
        _check_onnx(folder / ONNX, model, x, onnx_source or str(folder / ONNX))
    return diff


def stage(source: Source, folder: str, repo_id: Optional[str] = None, eval_record: Optional[Dict] = None,
          datasets: Sequence[str] = (), onnx: Optional[str] = None) -> Path:
    """Write and check the Hub folder. It appears at `folder` complete, or not at all."""
    from timm.models import save_for_hf
    from .cards import render_card
    folder = Path(folder)
    if folder.exists():
        raise HubError(f"output folder '{folder}' already exists; remove it or choose another")
    if onnx is not None and not Path(onnx).is_file():
        raise HubError(f"ONNX file '{onnx}' does not exist")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f'.{folder.name}.', dir=folder.parent))  # same filesystem: rename is atomic
    try:
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        save_for_hf(source.model, work, safe_serialization=True, model_args=source.model_args,
                    data_config=source.data_config or None,
                    model_config={'pretrained_cfg': {'hf_hub_id': repo_id}} if repo_id else None)
        onnx_input = _add_onnx(onnx, work) if onnx is not None else None
        card = render_card(source.model, repo_id, source.provenance, eval_record, list(datasets), onnx_input)
        (work / CARD).write_text(card, encoding='utf-8')
        check_folder(work, source.model, onnx)
        os.rename(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder


def explain_hub_error(e: BaseException, repo_id: str) -> Optional[str]:
    """A one-paragraph reason and remedy for a Hub or network failure, or None if `e` is neither."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError)
    endpoint = constants.ENDPOINT
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
                f"or HF_ENDPOINT; no commit was made")
    return None


def push(folder: Path, repo_id: str, private: bool = False, revision: Optional[str] = None,
         commit_message: Optional[str] = None, token: Optional[str] = None):
    """Upload a staged folder as one commit (so a failed push leaves the repository unchanged)."""
    from huggingface_hub import HfApi
    from . import __version__
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
    import timm
    from huggingface_hub import HfApi, hf_hub_download
    from .checkpoint import CheckpointError, read_state_dict
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
        message = explain_hub_error(e, repo_id)
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


def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest='hub_command', metavar='ACTION', required=True)
    p = commands.add_parser('push', help='stage, check and upload weights as one Hub commit',
                            description='Convert a checkpoint to model.safetensors + config.json + README.md '
                                        '(+ model.onnx), load the folder back through timm and compare outputs, '
                                        'then upload it as one commit. The token comes from HF_TOKEN or '
                                        '`hf auth login`.')
    p.add_argument('model', help='registered model name the weights were trained as, e.g. horesnet58_rk4')
    p.add_argument('--checkpoint', required=True,
                   help='.safetensors file or timm train.py checkpoint (e.g. output/train/<run>/model_best.pth.tar)')
    p.add_argument('--repo-id', required=True, help='Hub repository, ORG/NAME, e.g. ORG/horesnet58_rk4.cifar10')
    p.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                   help='create_model arguments the weights need, e.g. scheme=gill4 num_classes=100 '
                        '(a train.py checkpoint supplies its own)')
    p.add_argument('--no-ema', dest='use_ema', action='store_false', help="use 'state_dict', not the EMA weights")
    p.add_argument('--onnx', help='an exported model.onnx for these weights, published beside them')
    p.add_argument('--eval-json', help='evaluation record for the card (JSON: dataset, split, top1, epochs, seed, '
                                       'command); without one the card reports no metric')
    p.add_argument('--dataset', action='append', default=[],
                   help='Hub dataset id of the training data (card front matter)')
    p.add_argument('--private', action='store_true', help='create the repository as private')
    p.add_argument('--revision', help='branch to commit to (created if missing; default: main)')
    p.add_argument('--commit-message', help='commit message')
    p.add_argument('--dry-run', action='store_true', help='stage and check only; no network')
    p.add_argument('--output-dir', help='with --dry-run: write the staged folder here (default: a temporary '
                                        'folder, removed afterwards)')


def _size(n: int) -> str:
    return f'{n / 1e6:.1f} MB' if n >= 1e5 else f'{n / 1e3:.1f} kB'


def _fail(message: str) -> int:
    print(f'horesnet hub push: {message}', file=sys.stderr, flush=True)
    return 1


def run(args) -> int:
    from huggingface_hub import get_token
    from huggingface_hub.utils import validate_repo_id
    from .cards import load_eval_record
    from .checkpoint import CheckpointError
    try:
        validate_repo_id(args.repo_id)
    except ValueError as e:
        return _fail(f'--repo-id {args.repo_id!r} is not a Hub repository id (ORG/NAME): {e}')
    if args.output_dir and not args.dry_run:
        return _fail('--output-dir goes with --dry-run (a push stages into a temporary folder)')
    if not args.dry_run and not get_token():
        return _fail('no Hugging Face token: run `hf auth login`, or set HF_TOKEN to a token with write access '
                     '(https://huggingface.co/settings/tokens). Use --dry-run to stage and check without one.')
    try:
        record = load_eval_record(args.eval_json) if args.eval_json else None
        source = load_source(args.model, args.checkpoint, parse_model_kwargs(args.model_kwargs), args.use_ema)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.output_dir) if args.output_dir else Path(tmp) / args.repo_id.split('/')[-1]
            stage(source, folder, args.repo_id, record, args.dataset, args.onnx)
            files = ', '.join(f'{p.name} ({_size(p.stat().st_size)})' for p in sorted(folder.iterdir()))
            print(f'staged {files}\nloaded back through timm (local-dir:): weights and outputs identical')
            if args.dry_run:
                print('dry run: nothing uploaded' + (f'; folder at {folder}' if args.output_dir else ''))
                return 0
            commit = push(folder, args.repo_id, args.private, args.revision, args.commit_message)
    except Exception as e:  # a Hub or network failure first: some are also ValueErrors
        message = explain_hub_error(e, args.repo_id)
        if message is None and not isinstance(e, (HubError, CheckpointError, FileNotFoundError, ValueError)):
            raise
        return _fail(message or str(e))
    print(f'pushed {getattr(commit, "commit_url", commit)}\n'
          f"load with: import horesnet_timm, timm; timm.create_model('hf-hub:{args.repo_id}', pretrained=True)")
    return 0
