"""Stage the best seed of each scheme as a pretrained tag that ships in the package.

    python experiments/fashion_mnist/ship.py --work CKPTS [--schemes rk4 lm]

For each scheme with a finished grid run in runs/, the seed with the highest validation top-1 (the
5,000 held-out training images; never the test split) is staged by `horesnet hub push --dry-run` into
horesnet_timm/weights/horesnet58w16_<scheme>.fmnist/, from the checkpoint of its selected epoch (in
CKPTS, run_queue.py's --work) and with an evaluation record made of its test.json and run.json. A
folder staged from another run is replaced; one staged from the same run keeps its weights, and its
record learns the seeds that finished since (it refuses if the run's scores changed). Then declare a
new tag in horesnet_timm/models/cifar.py (SHIPPED) and record its top-1 on the test subset that ships
with the tests: `python tests/conftest.py horesnet58w16_<scheme>.fmnist`.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import read_grid  # noqa: E402
from run_queue import SCHEMES  # noqa: E402

from horesnet_timm.fileio import atomic_output  # noqa: E402

WEIGHTS = HERE.parents[1] / 'horesnet_timm' / 'weights'
DATASET = 'zalando-datasets/fashion_mnist'


def portable(command) -> str:
    """A command as run_queue.py records it (this machine's folders as placeholders), as a user types it."""
    words = []
    for word in command:
        if word.rsplit('/', 1)[-1] in ('python', 'horesnet', 'train.py', 'validate.py'):
            word = word.rsplit('/', 1)[-1]
        words.append(word.removeprefix('SRC/'))
    if '--results-file' in words:  # where the queue kept the record, not part of the evaluation
        i = words.index('--results-file')
        del words[i:i + 2]
    return ' '.join(words)


def eval_record(folder: Path, seed: int, run: dict, seeds: list) -> dict:
    record = json.loads((folder / 'run.json').read_text())
    test = json.loads((folder / 'test.json').read_text())
    command = record['invocations'][0]['command']
    return {
        'dataset': DATASET, 'split': 'test (10,000 images; validate.py)', 'top1': test['top1'], 'top5': test['top5'],
        'epochs': record['epochs'], 'seed': seed,
        'command': ' && '.join(['python experiments/fashion_mnist/split.py DATA', portable(command),
                                portable(record['validate_command'])]),
        'validation': {'images': 5000, 'top1': run['val_top1'], 'epoch': run['selected_epoch']},
        'selected': {'run': folder.name, 'by': 'validation top-1', 'of_seeds': seeds},
    }


def stage(tag: str, checkpoint: Path, record: dict) -> None:
    """Stage into a temporary sibling, then swap it in: the folder is the old one or the new one, never half."""
    target = WEIGHTS / tag
    with tempfile.TemporaryDirectory(dir=WEIGHTS, prefix=f'.{tag}.') as tmp:
        (Path(tmp) / 'eval.json').write_text(json.dumps(record, indent=1) + '\n')
        staged = Path(tmp) / tag
        subprocess.run([sys.executable, '-m', 'horesnet_timm', 'hub', 'push', str(checkpoint),
                        '--repo-id', f'horesnet-timm/{tag}', '--eval-json', str(Path(tmp) / 'eval.json'),
                        '--dataset', DATASET, '--dry-run', '--output-dir', str(staged)], check=True)
        shutil.copy(Path(tmp) / 'eval.json', staged / 'eval.json')
        if target.exists():
            target.rename(Path(tmp) / 'replaced')
        staged.rename(target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work', type=Path, required=True, help="run_queue.py's --work: the checkpoints")
    parser.add_argument('--runs', type=Path, default=HERE / 'runs')
    parser.add_argument('--schemes', nargs='+', choices=SCHEMES, default=SCHEMES)
    args = parser.parse_args(argv)
    grid = read_grid(args.runs)
    for scheme in args.schemes:
        if scheme not in grid:
            print(f'{scheme}: no finished run yet')
            continue
        seeds = sorted(grid[scheme])
        seed = max(seeds, key=lambda s: (grid[scheme][s]['val_top1'], -s))
        run = grid[scheme][seed]
        folder = args.runs / f'horesnet58w16_{scheme}-s{seed}'
        tag = f'horesnet58w16_{scheme}.fmnist'
        record = eval_record(folder, seed, run, seeds)
        shipped = WEIGHTS / tag / 'eval.json'
        staged = json.loads(shipped.read_text()) if shipped.is_file() else {}
        if staged.get('selected', {}).get('run') == folder.name:
            changed = [k for k in ('top1', 'top5', 'seed', 'validation') if staged.get(k) != record[k]]
            if changed:  # the run's outputs are not those the weights were staged from
                sys.exit(f'{tag}: staged from {folder.name}, but its {", ".join(changed)} changed since; '
                         f'remove {WEIGHTS / tag} and run ship.py again')
            if staged['selected'] != record['selected']:  # more seeds finished; the same one is still best
                staged['selected'] = record['selected']
                with atomic_output(shipped) as tmp:
                    tmp.write_text(json.dumps(staged, indent=1) + '\n')
            print(f'{tag}: already staged from {folder.name} (chosen from seeds {seeds})')
            continue
        checkpoint = args.work / folder.name / f'checkpoint-{run["selected_epoch"]}.pth.tar'
        if not checkpoint.is_file():
            sys.exit(f'{tag}: the selected checkpoint {checkpoint} is missing; give the queue\'s --work folder')
        stage(tag, checkpoint, record)
        print(f'{tag}: staged from {folder.name} (validation {run["val_top1"]:.2f}, test {record["top1"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
