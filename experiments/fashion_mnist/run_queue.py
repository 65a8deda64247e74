"""The evidence runs as a resumable queue: timm's train.py on the held-out split, validate.py on the test split.

    python experiments/fashion_mnist/split.py DATA
    nice -n 19 python experiments/fashion_mnist/run_queue.py --data DATA --work CKPTS --train-py <timm>/train.py \
        [--python VENV/bin/python] [--deadline 08:25] [--commit]

Order: seed 0 of every scheme, then seed 1, then seed 2 (so that whatever has finished is a complete
comparison), then the learning-rate robustness sweep. A run whose small outputs are in runs/ is
skipped; a run with a checkpoint in CKPTS is resumed from it with train.py's `--resume`; checkpoints
stay in CKPTS (outside the repository). `--python` is the interpreter of an installed copy of the
package, so that editing the work tree cannot change a run. With `--deadline`, a run that would not
finish by then (estimated from the measured epoch times) is left for later and a shorter one is tried.
With `--commit`, each finished run's outputs are committed as they arrive. On a GPU, gpu.sh runs the
same queue at the paper's width: `--device cuda --width 64 --parallel N` (N runs at once, bf16).

Each run's folder in runs/ holds train.py's summary.csv and args.yaml, its log with the wall-clock
seconds at the start of each line, the test-split result of validate.py (grid runs), and run.json:
the command lines, the package version, how often the run was resumed and the epoch selected on the
validation split. A finished run's files name this machine's folders by the placeholders above (DATA,
CKPTS, VENV; TIMM for train.py's folder, SRC for the installed copy's, RUNS for runs/): the repository
keeps no path of the machine that ran it.
"""
import argparse
import concurrent.futures
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = HERE / 'runs'

EPOCHS = 8
SCHEMES = ('euler', 'midpoint', 'rk4', 'rk8', 'lm')
SEEDS = (0, 1, 2)
# The Fig. 9 analogue: depth 86 (RK4 at 82, as the paper), width 16, one epoch at a constant learning
# rate (no warm-up, which would hide a divergence) of 1, 2, 4 and 8 times the recipe's 0.1.
ROBUSTNESS_MODELS = ('horesnet86_euler', 'horesnet82_rk4', 'horesnet86_rk8')
LR_MULTIPLIERS = (1, 2, 4, 8)
RECIPE_LR = 0.1
# measured pilot: a depth-58 width-16 epoch of 55k images on an idle 2-core machine (for --deadline only)
SECONDS_PER_EPOCH = {58: 330, 82: 470, 86: 490}


# train.py's flags per device: the same recipe; eager channels_last on CPU (the pilot), bf16 on a GPU
DEVICE_FLAGS = {
    'cpu': ['--device', 'cpu', '--workers', '0', '--no-prefetcher', '--channels-last'],
    'cuda': ['--device', 'cuda', '--workers', '3', '--pin-mem', '--amp', '--amp-dtype', 'bfloat16', '--channels-last'],
}


def plan(width: int = 16):
    """Every run in queue order: (name, model, depth, epochs, extra train.py args, evaluate on test). Width 16
    is the CPU protocol (the horesnet58w16_* names); 64 is the paper's (the horesnet58_* names)."""
    narrow = width == 16
    runs = []
    for seed in SEEDS:
        for scheme in SCHEMES:
            model = f'horesnet58w16_{scheme}' if narrow else f'horesnet58_{scheme}'
            runs.append((f'{model}-s{seed}', model, 58, EPOCHS, ['--seed', str(seed)], True))
    for model in ROBUSTNESS_MODELS:
        depth = int(model[len('horesnet'):].split('_')[0])
        for mult in LR_MULTIPLIERS:
            name = f'{model.replace("_", "w16_", 1) if narrow else model}-lr{mult}x-s0'
            runs.append((name, model, depth, 1, [
                '--seed', '0', '--lr', repr(RECIPE_LR * mult), '--warmup-epochs', '0',
                *(['--model-kwargs', 'stem_width=16', 'channels=(16,)'] if narrow else [])], False))
    return runs


def log_lines(cmd, log_path: Path, env) -> int:
    """Run `cmd`, appending its output to log_path with the wall-clock seconds at the start of each line."""
    with open(log_path, 'a', encoding='utf-8') as log:
        log.write(f'{time.time():.1f} $ {" ".join(cmd)}\n')
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            log.write(f'{time.time():.1f} {line}')
            log.flush()
        return proc.wait()


def summary_rows(path: Path):
    """train.py's summary.csv, the last row per epoch. A resumed train.py writes the header again, and one
    stopped between writing its summary and its checkpoint redoes that epoch."""
    if not path.is_file():
        return []
    rows = {}
    with open(path, newline='') as f:
        for row in csv.DictReader(f):
            if row['epoch'] != 'epoch':
                rows[int(row['epoch'])] = row
    return [rows[e] for e in sorted(rows)]


def best_epoch(rows) -> int:
    """The first epoch with the highest validation top-1 (train.py's own model_best, which a resumed
    train.py forgets: its saver starts again from no best)."""
    return max(rows, key=lambda r: (float(r['eval_top1']), -int(r['epoch'])))['epoch']


def estimated_seconds(depth, epochs, done_epochs):
    return SECONDS_PER_EPOCH[depth] * (epochs - done_epochs) + 120


def commit(repo: Path, paths, message):
    for attempt in range(10):  # another git command in the same repository holds the index lock: wait
        add = subprocess.run(['git', '-C', str(repo), 'add', '--', *map(str, paths)], capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(
            ['git', '-C', str(repo), 'commit', '-q', '-m', message, '--', *map(str, paths)],
            capture_output=True, text=True).returncode == 0
        if done:
            return
        time.sleep(5 + 5 * attempt)
    print(f'warning: could not commit {paths}; commit them by hand', file=sys.stderr)


def placeholders(args):
    """(folder, placeholder) for this machine's folders in a run's outputs, the longest folder first."""
    folders = {args.data: 'DATA', args.work: 'CKPTS', Path(args.python).parent.parent: 'VENV',
               args.train_py.parent: 'TIMM', ROOT: 'SRC', args.runs: 'RUNS'}
    pairs = {str(Path(os.path.abspath(folder))): name for folder, name in folders.items()}
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def redact(folder: Path, pairs) -> bool:
    """Replace this machine's folders by their placeholders in a run's text files; True if any changed."""
    changed = False
    for path in sorted(folder.iterdir()):
        text = path.read_text(encoding='utf-8')
        redacted = text
        for machine_folder, name in pairs:
            redacted = redacted.replace(machine_folder, name)
        if redacted != text:
            path.write_text(redacted, encoding='utf-8')
            changed = True
    return changed


def run_one(args, name, model, depth, epochs, extra, evaluate, env) -> bool:
    work = args.work / name
    out = args.runs / name
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / 'run.json'
    record = json.loads(record_path.read_text()) if record_path.is_file() else {
        'name': name, 'model': model, 'epochs': epochs, 'invocations': []}
    done = len(summary_rows(work / 'summary.csv'))
    last = work / 'last.pth.tar'
    cmd = [args.python, str(args.train_py), '-c', str(ROOT / 'configs' / 'fashion_mnist' / f'{model}.yaml'),
           '--data-dir', str(args.data / 'trainval'), *DEVICE_FLAGS[args.device], '--epochs', str(epochs),
           '--checkpoint-hist', str(epochs),
           '--output', str(args.work), '--experiment', name, '--log-interval', '100', *extra]
    if last.is_file() and done < epochs:
        cmd += ['--resume', str(last)]
    if done < epochs:
        print(f'{name}: training epochs {done}..{epochs - 1}' + (' (resumed)' if '--resume' in cmd else ''), flush=True)
        start = time.time()
        invocation = {'command': cmd, 'started': datetime.datetime.fromtimestamp(start).isoformat(timespec='seconds'),
                      'package': args.package, 'threads': args.threads, 'seconds': None, 'exit': None}  # None: stopped
        record['invocations'].append(invocation)
        record_path.write_text(json.dumps(record, indent=1) + '\n')
        rc = log_lines(cmd, out / 'train.log', env)
        invocation.update(seconds=round(time.time() - start, 1), exit=rc)
        record_path.write_text(json.dumps(record, indent=1) + '\n')
        if rc != 0:
            print(f'{name}: train.py exited {rc}; see {out / "train.log"}', file=sys.stderr)
            return False
    rows = summary_rows(work / 'summary.csv')
    if len(rows) < epochs:
        print(f'{name}: train.py finished with {len(rows)} of {epochs} epochs in its summary', file=sys.stderr)
        return False
    for f in ('summary.csv', 'args.yaml'):
        shutil.copyfile(work / f, out / f)
    record['selected_epoch'] = int(best_epoch(rows))
    record['selected_on'] = 'validation split (5,000 held-out training images), eval_top1 in summary.csv'
    if evaluate:
        checkpoint = work / f'checkpoint-{record["selected_epoch"]}.pth.tar'
        horesnet = str(Path(args.python).parent / 'horesnet')
        cmd = [horesnet, 'run', str(args.train_py.parent / 'validate.py'), '--checkpoint', str(checkpoint),
               '--data-dir', str(args.data / 'test'), '--dataset', 'torch/fashion_mnist', '--split', 'test',
               '--device', args.device, '--workers', '0', '--results-file', str(out / 'test.json'),
               '--results-format', 'json']
        rc = log_lines(cmd, out / 'validate.log', env)
        record['validate_command'] = cmd
        if rc != 0:
            record_path.write_text(json.dumps(record, indent=1) + '\n')
            print(f'{name}: validate.py exited {rc}; see {out / "validate.log"}', file=sys.stderr)
            return False
    record['finished'] = True
    record_path.write_text(json.dumps(record, indent=1) + '\n')
    redact(out, placeholders(args))
    if args.commit:
        commit(args.runs, [out.resolve()], f'evidence: {name} ({epochs} epoch{"s" if epochs > 1 else ""}, Fashion-MNIST, CPU)')
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, required=True, help='the folder split.py wrote')
    parser.add_argument('--work', type=Path, required=True, help='checkpoints and train.py outputs (outside the repo)')
    parser.add_argument('--train-py', type=Path, required=True, help="timm's train.py (validate.py beside it)")
    parser.add_argument('--python', default=sys.executable, help='interpreter with an installed horesnet-timm')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads (default: the cores)')
    parser.add_argument('--deadline', help='HH:MM today: start no run that would not finish by then')
    parser.add_argument('--commit', action='store_true', help="commit each finished run's outputs")
    parser.add_argument('--only', nargs='*', help='run only these names')
    parser.add_argument('--source-commit', default='', help='the commit the installed copy was built from (recorded)')
    parser.add_argument('--runs', type=Path, default=RUNS, help='where the small outputs go (default: runs/ here)')
    parser.add_argument('--device', choices=sorted(DEVICE_FLAGS), default='cpu')
    parser.add_argument('--width', type=int, choices=(16, 64), default=16,
                        help="16: the CPU protocol's horesnet58w16_* names; 64: the paper's width")
    parser.add_argument('--parallel', type=int, default=1, help='runs at once (a GPU); --deadline applies to 1 only')
    args = parser.parse_args(argv)
    args.package = subprocess.run([args.python, '-c', 'import horesnet_timm, timm, torch; print(horesnet_timm.__version__, '
                                   '"timm", timm.__version__, "torch", torch.__version__)'],
                                  capture_output=True, text=True, check=True).stdout.strip()
    if args.source_commit:
        args.package += f' (commit {args.source_commit})'
    deadline = None
    if args.deadline:
        hour, minute = map(int, args.deadline.split(':'))
        deadline = datetime.datetime.now().replace(hour=hour, minute=minute, second=0).timestamp()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED='1')
    finished = lambda run: (args.runs / run[0] / 'run.json').is_file() and json.loads(
        (args.runs / run[0] / 'run.json').read_text()).get('finished')
    pending = [r for r in plan(args.width) if (not args.only or r[0] in args.only) and not finished(r)]
    for run in plan(args.width):  # finished by an earlier version of this queue, which kept the paths
        if finished(run) and redact(args.runs / run[0], placeholders(args)) and args.commit:
            commit(args.runs, [(args.runs / run[0]).resolve()], f'evidence: {run[0]} names no folder of its machine')
    try:
        if args.parallel > 1:  # several runs at once (one GPU): the queue order is the start order
            with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
                return 0 if all(pool.map(lambda run: run_one(args, *run, env=env), pending)) else 1
        for run in pending:
            name, model, depth, epochs = run[:4]
            done = len(summary_rows(args.work / name / 'summary.csv'))
            if deadline is not None and time.time() + estimated_seconds(depth, epochs, done) > deadline:
                print(f'{name}: left for later (would not finish by {args.deadline})', flush=True)
                continue
            if not run_one(args, *run, env=env):
                return 1
    except KeyboardInterrupt:
        print('stopped: run the same command again to resume', file=sys.stderr)
        return 130
    print('queue finished', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
