"""`horesnet hub push` and `horesnet hub publish-shipped`: stage, check and upload weights (hub.py does each
step), with what the user sees of them."""
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import get_token
from huggingface_hub.utils import validate_repo_id

from .. import __version__
from ..cards import load_eval_record, published_record
from ..errors import UsageError
from ..hub import CARD, CONFIG, NO_TOKEN, WEIGHTS, HubError, check_shipped, push, shipped_folders, stage
from ..loading import explain_hub_error, rgb_equivalent
from .arguments import add_model_arguments, load_from_args

__all__ = ['add_arguments', 'run', 'publish_shipped']


def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest='hub_command', metavar='ACTION', required=True)
    p = commands.add_parser('push', help='stage, check and upload weights as one Hub commit',
                            description='Convert weights to model.safetensors + config.json + README.md '
                                        '(+ model.onnx), load the folder back through timm and compare outputs, '
                                        'then upload it as one commit. The token comes from HF_TOKEN or '
                                        '`hf auth login`.')
    add_model_arguments(p)
    group = p.add_argument_group('push')
    group.add_argument('--repo-id', required=True, help='Hub repository, ORG/NAME, e.g. ORG/horesnet58_rk4.cifar10')
    group.add_argument('--onnx', help='an exported model.onnx for these weights, published beside them')
    group.add_argument('--eval-json', help='evaluation record for the card (JSON: dataset, split, top1, epochs, seed, '
                                           'command); without one the card reports no metric')
    group.add_argument('--dataset', action='append', default=[],
                       help='Hub dataset id of the training data (card front matter)')
    group.add_argument('--private', action='store_true', help='create the repository as private')
    group.add_argument('--revision', help='branch to commit to (created if missing; default: main)')
    group.add_argument('--commit-message', help='commit message')
    group.add_argument('--keep-grey', action='store_true',
                       help='publish 1-channel weights as they are; by default they are published for RGB images '
                            '(each channel reads a third of the grey weights: identical outputs on grey pictures), '
                            'since clients such as the transformers pipeline convert every image to RGB')
    group.add_argument('--dry-run', action='store_true', help='stage and check only; no network')
    group.add_argument('--output-dir', help='with --dry-run: write the staged folder here (default: a temporary '
                                            'folder, removed afterwards)')
    p = commands.add_parser('publish-shipped', help='upload every pretrained folder that ships in the package, '
                                                    'one commit per Hub repository',
                            description='Check each folder of horesnet_timm/weights/ (it must load through timm\'s '
                                        '`local-dir:` as the registered tag, with the same weights and outputs, and '
                                        'its card must show its eval.json top-1), then upload its files unchanged '
                                        'as one commit to NAMESPACE/<arch>.<tag>. The token comes from HF_TOKEN or '
                                        '`hf auth login`.')
    p.add_argument('--namespace', help='Hub user or organisation to publish under (default: the one in each '
                                       "folder's config.json hf_hub_id, horesnet-timm)")
    p.add_argument('--only', nargs='+', action='extend', metavar='NAME', default=[],
                   help='publish only these folders (ARCH.TAG, e.g. horesnet58w16_euler.fmnist)')
    p.add_argument('--dry-run', action='store_true',
                   help='check and list what would be uploaded (repository, files, sizes, sha256); no network')


def _size(n: int) -> str:
    return f'{n / 1e6:.1f} MB' if n >= 1e5 else f'{n / 1e3:.1f} kB'


def run(args) -> int:
    if args.hub_command == 'publish-shipped':
        return publish_shipped(args)
    try:
        validate_repo_id(args.repo_id)
    except ValueError as e:
        raise UsageError(f'--repo-id {args.repo_id!r} is not a Hub repository id (ORG/NAME): {e}') from None
    if args.output_dir and not args.dry_run:
        raise UsageError('--output-dir goes with --dry-run (a push stages into a temporary folder)')
    if args.output_dir and Path(args.output_dir).exists():
        raise HubError(f"output folder '{args.output_dir}' already exists; remove it or choose another")
    if not args.dry_run and not get_token():
        raise HubError(NO_TOKEN + ' Use --dry-run to stage and check without one.')
    record = load_eval_record(args.eval_json) if args.eval_json else None
    loaded = load_from_args(args)
    if not loaded.trained:
        raise HubError(f'{loaded.architecture} has random weights: publish trained ones (--checkpoint FILE, or a '
                       f'train.py checkpoint as MODEL)')
    record = record or published_record(loaded)
    if loaded.model.in_chans == 1 and not args.keep_grey:
        if args.onnx:
            raise UsageError('--onnx with grey weights: they are published for RGB images, which an ONNX file '
                             'exported for 1 channel does not take; export it from the staged folder, or pass '
                             '--keep-grey')
        loaded = rgb_equivalent(loaded)
        print('grey weights published for RGB images (identical outputs on grey pictures; --keep-grey to publish '
              'them for 1 channel)')
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.output_dir) if args.output_dir else Path(tmp) / args.repo_id.split('/')[-1]
        stage(loaded, folder, args.repo_id, record, args.dataset, args.onnx)
        files = ', '.join(f'{p.name} ({_size(p.stat().st_size)})' for p in sorted(folder.iterdir()))
        print(f'staged {files}\nloaded back through timm (local-dir:): weights and outputs identical')
        if args.dry_run:
            print('dry run: nothing uploaded' + (f'; folder at {folder}' if args.output_dir else ''))
            return 0
        try:
            commit = push(folder, args.repo_id, args.private, args.revision, args.commit_message)
        except Exception as e:  # a Hub or network failure: some are also ValueErrors
            message = explain_hub_error(e, args.repo_id)
            if message is None:
                raise
            raise HubError(message) from e
    print(f'pushed {getattr(commit, "commit_url", commit)}\n'
          f"load with: import horesnet_timm, timm; timm.create_model('hf-hub:{args.repo_id}', pretrained=True)")
    return 0


def publish_shipped(args) -> int:
    """`horesnet hub publish-shipped`: check every shipped folder first, then upload each as one commit."""
    if args.namespace is not None:
        try:
            validate_repo_id(f'{args.namespace}/x')
        except ValueError as e:
            raise UsageError(f'--namespace {args.namespace!r} is not a Hub user or organisation: {e}') from None
    if not args.dry_run and not get_token():
        raise HubError(NO_TOKEN + ' Use --dry-run to check and list the folders without one.')
    plan = []
    for folder in shipped_folders(args.only):
        info = check_shipped(folder)
        namespace, name = info['hf_hub_id'].split('/')
        repo_id = f'{args.namespace or namespace}/{name}'
        plan.append((folder, repo_id, info))
        width = max(len(f) for f, _ in info['files'])
        digits = max(len(str(n)) for _, n in info['files'])
        print(f'{repo_id} <- {folder}')
        for file, size in info['files']:
            sha = f"  sha256 {info['sha256']}" if file == WEIGHTS else ''
            print(f'  {file:<{width}}  {size:>{digits}} bytes{sha}')
        print(f'  checked: loads through timm (local-dir:) as {name}, weights and outputs identical')
        if repo_id != info['hf_hub_id']:
            print(f"  note: its {CONFIG} and {CARD} name {info['hf_hub_id']}; they are uploaded unchanged")
    if args.dry_run:
        print(f"dry run: nothing uploaded ({len(plan)} {'repository' if len(plan) == 1 else 'repositories'}, "
              f"one commit each)")
        return 0
    done = []
    for folder, repo_id, info in plan:
        with tempfile.TemporaryDirectory() as tmp:  # exactly the files listed and checked above
            staged = Path(tmp) / folder.name
            staged.mkdir()
            for file, _ in info['files']:
                shutil.copyfile(folder / file, staged / file)
            try:
                commit = push(staged, repo_id, commit_message=f'Add {folder.name} weights, as shipped in '
                                                              f'horesnet-timm {__version__}')
            except Exception as e:  # a Hub or network failure: some are also ValueErrors
                message = explain_hub_error(e, repo_id)
                if message is None:
                    raise
                if done:
                    message += f" (already published: {', '.join(done)})"
                raise HubError(message) from e
        done.append(repo_id)
        print(f'pushed {getattr(commit, "commit_url", commit)}')
    print(f"load with: import horesnet_timm, timm; timm.create_model('hf-hub:{done[0]}', pretrained=True)")
    return 0
