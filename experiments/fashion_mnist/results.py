"""RESULTS.md's tables and plots, from the outputs run_queue.py commits in runs/ (nothing typed by hand).

    python experiments/fashion_mnist/results.py            # print the tables
    python experiments/fashion_mnist/results.py --write    # also rewrite RESULTS.md's generated part, results.json, the plots

A grid run is `runs/horesnet58w16_<scheme>-s<seed>/`: train.py's summary.csv (one row per epoch,
evaluated on the 5,000-image validation split), its timestamped train.log, run.json (the epoch
selected on validation) and test.json (validate.py on the 10,000 test images, once). A robustness
run is `runs/<model>-lr<m>x-s0/` with one epoch and no test evaluation.
"""
import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_queue import LR_MULTIPLIERS, ROBUSTNESS_MODELS, SCHEMES, SEEDS, summary_rows  # noqa: E402

from horesnet_timm.fileio import atomic_output  # noqa: E402

THRESHOLDS = (90.0, 92.0)
# Student's t, two-sided 95%, by degrees of freedom (pairs - 1): the paired difference's confidence interval
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
BEGIN, END = '<!-- results.py: begin -->', '<!-- results.py: end -->'
GRID_RUN = re.compile(r'^horesnet58(?:w16)?_(\w+)-s(\d+)$')  # width 16 (CPU) or the paper's 64 (GPU)
SWEEP_RUN = re.compile(r'^(horesnet\d+)(?:w16)?_(\w+)-lr(\d+)x-s0$')


def epoch_seconds(log: Path):
    """Wall-clock seconds of each epoch, from its first training line to its last validation line, within
    one train.py invocation (the log's first field is the time the line was written)."""
    spans = {}
    epoch = None
    for line in log.read_text(encoding='utf-8').splitlines():
        stamp, _, text = line.partition(' ')
        if text.startswith('$ '):
            epoch = None  # a new invocation: an epoch stopped by an interruption is not timed
            continue
        match = re.match(r'Train: (\d+) \[', text)
        if match:
            if int(match.group(1)) != epoch:
                epoch = int(match.group(1))
                spans[epoch] = [float(stamp), None]
        elif text.startswith('Test:') and epoch is not None:
            spans[epoch][1] = float(stamp)
    return {e: end - start for e, (start, end) in spans.items() if end is not None}


def read_grid(runs: Path):
    """{scheme: {seed: run}} for the finished grid runs."""
    grid = defaultdict(dict)
    for folder in sorted(runs.iterdir()):
        match = GRID_RUN.match(folder.name)
        record = folder / 'run.json'
        if not match or not record.is_file() or not json.loads(record.read_text()).get('finished'):
            continue
        rows = summary_rows(folder / 'summary.csv')
        selected = json.loads(record.read_text())['selected_epoch']
        val = [float(r['eval_top1']) for r in rows]
        seconds = list(epoch_seconds(folder / 'train.log').values())
        grid[match.group(1)][int(match.group(2))] = {
            'test_top1': json.loads((folder / 'test.json').read_text())['top1'],
            'val_top1': val[selected], 'selected_epoch': selected, 'val_curve': val,
            'epochs_to': {t: next((i + 1 for i, v in enumerate(val) if v >= t), None) for t in THRESHOLDS},
            'train_loss_end': float(rows[-1]['train_loss']),
            'seconds_per_epoch': statistics.median(seconds) if seconds else None,
        }
    return grid


def read_sweep(runs: Path):
    """{(model, multiplier): run} for the finished learning-rate runs."""
    sweep = {}
    for folder in sorted(runs.iterdir()):
        match = SWEEP_RUN.match(folder.name)
        record = folder / 'run.json'
        if not match or not record.is_file() or not json.loads(record.read_text()).get('finished'):
            continue
        row = summary_rows(folder / 'summary.csv')[-1]
        loss, val = float(row['train_loss']), float(row['eval_top1'])
        sweep[(f'{match.group(1)}_{match.group(2)}', int(match.group(3)))] = {
            'train_loss': loss, 'eval_loss': float(row['eval_loss']), 'val_top1': val,
            'outcome': sweep_outcome(loss, val),
        }
    return sweep


def sweep_outcome(train_loss: float, val_top1: float) -> str:
    """'diverged' when the epoch's mean loss is not finite or exploded past twice chance's loss (2 ln 10),
    'did not learn' when validation top-1 stays under twice chance (20%), else 'trained'."""
    if not math.isfinite(train_loss) or train_loss > 2 * math.log(10):
        return 'diverged'
    return 'did not learn' if val_top1 < 20.0 else 'trained'


def _finite_or_null(value):
    """`value` with every NaN or infinite float (a diverged run's loss) as None: results.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _mean_std(values):
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}'


def grid_tables(grid) -> str:
    lines = ['| scheme | seeds | test top-1 (mean +- std) | test top-1 per seed | validation top-1 (selected epoch) | '
             'epochs to 90% / 92% val | train loss, last epoch | s / epoch |',
             '|---|---|---|---|---|---|---|---|']
    for scheme in SCHEMES:
        runs = grid.get(scheme, {})
        if not runs:
            lines.append(f'| {scheme} | 0 | not run yet | | | | | |')
            continue
        seeds = sorted(runs)
        per_seed = ', '.join(f's{s}: {runs[s]["test_top1"]:.2f}' for s in seeds)
        val = ', '.join(f'{runs[s]["val_top1"]:.2f} ({runs[s]["selected_epoch"] + 1})' for s in seeds)
        reach = ', '.join('/'.join(str(runs[s]['epochs_to'][t] or '-') for t in THRESHOLDS) for s in seeds)
        loss = _mean_std([runs[s]['train_loss_end'] for s in seeds])
        secs = [runs[s]['seconds_per_epoch'] for s in seeds if runs[s]['seconds_per_epoch']]
        lines.append(f'| {scheme} | {len(seeds)} | {_mean_std([runs[s]["test_top1"] for s in seeds])} | {per_seed} | '
                     f'{val} | {reach} | {loss} | {statistics.median(secs):.0f} |')
    lines += ['', '| scheme - euler (same seed) | pairs | per seed | mean +- std | larger than the seed spread? | '
                  '95% interval of the mean (paired t) |',
              '|---|---|---|---|---|---|']
    euler = grid.get('euler', {})
    for scheme in SCHEMES[1:]:
        runs = grid.get(scheme, {})
        pairs = sorted(set(runs) & set(euler))
        if not pairs:
            lines.append(f'| {scheme} | 0 | | | | |')
            continue
        diffs = [runs[s]['test_top1'] - euler[s]['test_top1'] for s in pairs]
        mean_diff = statistics.mean(diffs)
        verdict = '-'
        if len(runs) > 1 and len(euler) > 1:
            # the seed-to-seed spread: the larger test top-1 std over seeds of the two schemes
            spread = max(statistics.stdev([r['test_top1'] for r in group.values()]) for group in (runs, euler))
            verdict = (f'{"yes" if abs(mean_diff) > spread else "no"} '
                       f'(|mean| {abs(mean_diff):.2f} vs seed std {spread:.2f})')
        interval = '-'
        if len(diffs) - 1 in T_975:
            half = T_975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
            low, high = mean_diff - half, mean_diff + half
            interval = f'{low:+.2f} to {high:+.2f} ({"excludes" if low > 0 or high < 0 else "includes"} 0)'
        per_seed = ', '.join(f's{s}: {d:+.2f}' for s, d in zip(pairs, diffs))
        lines.append(f'| {scheme} | {len(pairs)} | {per_seed} | {_mean_std(diffs)} | {verdict} | {interval} |')
    return '\n'.join(lines)


def sweep_table(sweep) -> str:
    lines = ['| model | ' + ' | '.join(f'lr x{m} ({0.1 * m:g})' for m in LR_MULTIPLIERS) + ' |',
             '|---|' + '---|' * len(LR_MULTIPLIERS)]
    for model in ROBUSTNESS_MODELS:
        cells = []
        for m in LR_MULTIPLIERS:
            run = sweep.get((model, m))
            if run is None:
                cells.append('not run yet')
            else:
                state = '' if run['outcome'] == 'trained' else f'{run["outcome"]}, '
                cells.append(f'{state}val {run["val_top1"]:.2f}%, train loss {run["train_loss"]:.3g}')
        lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def cost_table(pilot: Path) -> str:
    """Each scheme's training-step rate in the runs' setting, from the latest pilot.py invocation that
    measured all of them (one invocation: the same machine state for every scheme)."""
    rows = [json.loads(line) for line in pilot.read_text().splitlines() if line.strip()] if pilot.is_file() else []
    measured = defaultdict(dict)
    for row in rows:
        if row.get('invocation') and row['channels_last'] and not row['compile']:
            measured[row['invocation']][row['model']] = row
    names = [f'horesnet58w16_{s}' for s in SCHEMES]
    complete = sorted(stamp for stamp, models in measured.items() if all(n in models for n in names))
    if not complete:
        return 'Cost: not measured yet (pilot.py, every scheme in one invocation, --settings channels_last).'
    models = measured[complete[-1]]
    first = models[names[0]]
    busy = [models[n].get('other_cores_busy') for n in names]
    others = 'not recorded' if None in busy else f'{max(busy)} cores'
    lines = [f'Cost, measured in one invocation ({complete[-1]}, {first["threads"]} threads, torch {first["torch"]}, '
             f'{first["cpu"]}; other processes kept busy meanwhile: {others}): one training step at batch 128, '
             f'1x28x28, eager channels_last (the runs\' setting), median of {first["steps"]} steps; the model only, '
             'no data loading.', '',
             '| scheme | images / s | seconds per 55,000 images | time relative to euler |', '|---|---|---|---|']
    for scheme, name in zip(SCHEMES, names):
        rate = models[name]['images_per_s']
        lines.append(f'| {scheme} | {rate:.0f} | {55000 / rate:.0f} | {first["images_per_s"] / rate:.2f} |')
    return '\n'.join(lines)


def plot_curves(grid, path: Path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for scheme in SCHEMES:
        curves = [r['val_curve'] for r in grid.get(scheme, {}).values()]
        if not curves:
            continue
        epochs = list(range(1, min(map(len, curves)) + 1))
        columns = list(zip(*(c[:len(epochs)] for c in curves)))
        mean = [statistics.mean(c) for c in columns]
        label = f'{scheme} ({len(curves)} seed{"s" if len(curves) > 1 else ""})'
        for ax, first in zip(axes, (0, len(epochs) // 2)):  # every epoch; the second half, zoomed
            line, = ax.plot(epochs[first:], mean[first:], marker='o', ms=3, label=label)
            if len(curves) > 1:
                ax.fill_between(epochs[first:], [min(c) for c in columns[first:]], [max(c) for c in columns[first:]],
                                color=line.get_color(), alpha=0.2)
    for ax, title in zip(axes, ('every epoch', 'the second half, zoomed')):
        ax.set_xlabel('epoch')
        ax.set_ylabel('validation top-1 (%), 5,000 held-out images')
        ax.set_title(f'Fashion-MNIST, depth 58: {title}\n(mean over seeds, band = min..max)', fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[1].legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, format='png')  # the path may be a temporary name without .png
    plt.close(fig)


def plot_sweep(sweep, path: Path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for model in ROBUSTNESS_MODELS:
        points = [(m, sweep[(model, m)]) for m in LR_MULTIPLIERS if (model, m) in sweep]
        if not points:
            continue
        line, = ax.plot([m for m, _ in points], [r['val_top1'] for _, r in points], marker='o', label=model)
        failed = [(m, r['val_top1']) for m, r in points if r['outcome'] != 'trained']
        if failed:
            ax.scatter(*zip(*failed), marker='x', s=80, color=line.get_color(), zorder=3)
    ax.set_xscale('log', base=2)
    ax.set_xlim(0.7, 11)
    ax.set_ylim(0, 100)  # chance is 10%
    ax.set_xticks(LR_MULTIPLIERS, [f'x{m}\n({0.1 * m:g})' for m in LR_MULTIPLIERS])
    ax.set_xlabel('learning rate (multiple of the recipe\'s 0.1)')
    ax.set_ylabel('validation top-1 (%) after 1 epoch')
    ax.axhline(20, color='grey', linestyle=':', linewidth=1)  # twice chance: below it the run did not learn
    ax.set_title('1 epoch at a constant learning rate; x = diverged or did not learn (under 20%)', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format='png')  # the path may be a temporary name without .png
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=Path, default=HERE / 'runs')
    parser.add_argument('--write', action='store_true', help="rewrite RESULTS.md's generated part, results.json, plots")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        sys.exit(f"results.py: '{args.runs}' is not a folder; give --runs the runs/ folder run_queue.py commits to")
    grid, sweep = read_grid(args.runs), read_sweep(args.runs)
    missing = [f'horesnet58w16_{s}-s{seed}' for seed in SEEDS for s in SCHEMES if seed not in grid.get(s, {})]
    text = '\n\n'.join([
        grid_tables(grid),
        sweep_table(sweep),
        cost_table(HERE / 'pilot.jsonl'),
        f'Finished: {sum(map(len, grid.values()))} of {len(SEEDS) * len(SCHEMES)} grid runs, '
        f'{len(sweep)} of {len(ROBUSTNESS_MODELS) * len(LR_MULTIPLIERS)} learning-rate runs'
        + (f'; still to run: {", ".join(missing)}' if missing else '') + '.',
    ])
    if args.write:
        results = HERE / 'RESULTS.md'
        page = results.read_text(encoding='utf-8')
        if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
            # without both markers the rewrite would drop the hand-written reading after them
            sys.exit(f"results.py: {results} must hold '{BEGIN}' once, then '{END}' once; restore them "
                     f"(git checkout {results.name}) and run again")
        head, _, rest = page.partition(BEGIN)
        _, _, tail = rest.partition(END)
        record = {'grid': {s: {str(k): v for k, v in runs.items()} for s, runs in grid.items()},
                  'sweep': {f'{m}@x{k}': v for (m, k), v in sweep.items()}}
        with atomic_output(results) as tmp:
            tmp.write_text(f'{head}{BEGIN}\n{text}\n{END}{tail}', encoding='utf-8')
        with atomic_output(HERE / 'results.json') as tmp:
            tmp.write_text(json.dumps(_finite_or_null(record), indent=1, allow_nan=False) + '\n', encoding='utf-8')
        if grid:
            with atomic_output(HERE / 'val_top1.png') as tmp:
                plot_curves(grid, tmp)
        if sweep:
            with atomic_output(HERE / 'lr_sweep.png') as tmp:
                plot_sweep(sweep, tmp)
    print(text)  # after writing: a reader that closes the pipe early must not stop the write
    return 0


if __name__ == '__main__':
    sys.exit(main())
