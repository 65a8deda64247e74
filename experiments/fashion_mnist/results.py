"""The table and the plot of RESULTS.md, from the raw outputs of cpu.sh / gpu.sh (nothing typed by hand).

    python experiments/fashion_mnist/results.py experiments/fashion_mnist/runs-cpu [--plot val_top1.png]

A run is a train.py output folder `<model>-...-s<seed>` (its summary.csv: one row per epoch) with
`<model>.validate.csv` or `<run>.validate.csv` beside it (validate.py on the 10k test split) and, where
recorded, its training seconds in times.txt. Runs of one model are its seeds: mean +- sample std.
"""
import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path

THRESHOLDS = (90.0, 92.0)


def _rows(path: Path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def read_runs(folder: Path):
    """[(model, run name, per-epoch rows, test top-1 or None, train seconds or None)]"""
    seconds = {}
    if (folder / 'times.txt').exists():
        for line in (folder / 'times.txt').read_text().split('\n'):
            parts = line.split()
            if len(parts) == 3 and parts[1] == 'train_seconds':
                seconds[parts[0]] = int(parts[2])
    runs = []
    for summary in sorted(folder.glob('*/summary.csv')):
        run = summary.parent.name
        model = re.sub(r'-.*$', '', run)
        test = next((folder / f'{n}.validate.csv' for n in (run, model) if (folder / f'{n}.validate.csv').exists()), None)
        top1 = float(_rows(test)[0]['top1']) if test else None
        runs.append((model, run, _rows(summary), top1, seconds.get(run, seconds.get(model))))
    return runs


def _spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}'


def _epochs_to(rows, threshold):
    """1-based epoch count at which the per-epoch evaluation first reached `threshold`, or None."""
    return next((i + 1 for i, r in enumerate(rows) if float(r['eval_top1']) >= threshold), None)


def table(runs) -> str:
    by_model = defaultdict(list)
    for run in runs:
        by_model[run[0]].append(run)
    lines = ['| model | runs | epochs | test top-1 (validate.py) | best per-epoch eval top-1 | '
             + ' | '.join(f'epochs to {t:g}%' for t in THRESHOLDS) + ' | train time |',
             '|---|---|---|---|---|' + '---|' * len(THRESHOLDS) + '---|']
    for model, group in by_model.items():
        reached = []
        for t in THRESHOLDS:
            hits = [_epochs_to(rows, t) for _, _, rows, _, _ in group]
            reached.append(', '.join('not reached' if h is None else str(h) for h in hits))
        times = [s for *_, s in group if s is not None]
        lines.append(f'| {model} | {len(group)} | {", ".join(str(len(rows)) for _, _, rows, _, _ in group)} | '
                     f'{_spread([top1 for *_, top1, _ in group])} | '
                     f'{_spread([max(float(r["eval_top1"]) for r in rows) for _, _, rows, _, _ in group])} | '
                     + ' | '.join(reached) + ' | '
                     + (', '.join(f'{s / 60:.0f} min' for s in times) or '-') + ' |')
    return '\n'.join(lines)


def plot(runs, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for model, run, rows, _, _ in runs:
        epochs = [int(r['epoch']) + 1 for r in rows]
        ax.plot(epochs, [float(r['eval_top1']) for r in rows], marker='o', label=run)
    for t in THRESHOLDS:
        ax.axhline(t, color='grey', linewidth=0.6, linestyle=':')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel('epoch')
    ax.set_ylabel('top-1 after the epoch (%, 10k test split)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder', type=Path)
    parser.add_argument('--plot', type=Path, help='write the per-epoch top-1 of every run as a PNG')
    parser.add_argument('--title', default='Fashion-MNIST, timm train.py, configs/fashion_mnist')
    args = parser.parse_args()
    runs = read_runs(args.folder)
    if not runs:
        raise SystemExit(f'results.py: no <run>/summary.csv under {args.folder}')
    print(table(runs))
    if args.plot:
        plot(runs, args.plot, args.title)
        print(f'\nwrote {args.plot}')


if __name__ == '__main__':
    main()
