"""`horesnet demo`: the whole product on real data, on a laptop CPU, with nothing downloaded.

1. Trains an HO-ResNet and its Euler twin (same depth, width, parameter count and initial weights:
   only the stacking differs) on scikit-learn's 8x8 handwritten digits, which ship inside its
   wheel, split train / validation / test with a fixed seed (or on Fashion-MNIST from Debian's
   `dataset-fashion-mnist` with `--data fashion-mnist`). Both are built by `timm.create_model` with
   the data's channels, size, mean and std, and trained with timm's optimizer and scheduler
   factories; the same seed gives the same numbers.
2. Plots both models' validation accuracy and loss per epoch (curves.png).
3. Exports the HO model to ONNX through `horesnet export`'s code, runs onnxruntime on the test
   images (PNG files, decoded as `horesnet predict` decodes them) and compares with PyTorch.
4. Stages a Hub-ready folder through `horesnet hub push`'s code, with a card whose metrics come
   from this run's evaluation record, and loads it back with timm's `local-dir:` to score it again.
5. Prints where everything went and the commands to try next.

Everything is written into a new run folder that appears complete or not at all; a second run
makes another folder (`--output` names one, `--overwrite` replaces it).
"""
import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm import tqdm

from .. import __version__
from ..errors import HoresnetError, UsageError
from ..fileio import atomic_output, output_directory
from ..hub import stage
from ..loading import Loaded
from ..models.cifar import FASHION_MNIST_LABELS
from ..onnx_export import export_onnx
from ..predict import Predictor
from ..schemes import list_schemes
from .arguments import non_negative_int, positive_float, positive_int

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'  # Debian's dataset-fashion-mnist
DEFAULT_ROOT = 'horesnet-demo'


class Data:
    """uint8 images (N, H, W) and labels per split, with the class names and the train-set statistics."""

    def __init__(self, name: str, splits: Dict[str, Tuple[np.ndarray, np.ndarray]], classes: List[str], source: str):
        self.name, self.splits, self.classes, self.source = name, splits, list(classes), source
        train = splits['train'][0].astype(np.float64) / 255
        self.mean, self.std = float(train.mean()), float(train.std())
        self.size = splits['train'][0].shape[1:]

    def tensors(self, split: str):
        """Normalised (N, 1, H, W) float images and labels: timm's eval transform of the PNG files."""
        images, labels = self.splits[split]
        x = (images.astype(np.float32) / 255 - np.float32(self.mean)) / np.float32(self.std)
        return torch.from_numpy(x[:, None]), torch.from_numpy(labels.astype(np.int64))


def _split(images, labels, seed: int, fractions=(0.7, 0.1)) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(len(images))
    a, b = int(fractions[0] * len(images)), int((fractions[0] + fractions[1]) * len(images))
    parts = dict(train=order[:a], validation=order[a:b], test=order[b:])
    return {k: (images[v], labels[v]) for k, v in parts.items()}


def load_digits(seed: int, limit: int = 0) -> Data:
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    images = np.round(digits.images / 16 * 255).astype(np.uint8)  # 17 grey levels, exact in a PNG
    return Data('digits', _split(images, digits.target, seed), [str(c) for c in digits.target_names],
                "scikit-learn's 8x8 handwritten digits (sklearn.datasets.load_digits, 1797 images)")


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, 'rb') as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(seed: int, limit: int) -> Data:
    files = {k: os.path.join(FASHION_MNIST_DIR, f'{k}-ubyte.gz') for k in
             ('train-images-idx3', 'train-labels-idx1', 't10k-images-idx3', 't10k-labels-idx1')}
    missing = [f for f in files.values() if not os.path.isfile(f)]
    if missing:
        raise HoresnetError(f"Fashion-MNIST is not installed ({missing[0]} is missing): `sudo apt-get install "
                            f"dataset-fashion-mnist`, or use the default --data digits")
    rng = np.random.default_rng(seed)
    train_x, train_y = _read_idx(files['train-images-idx3']), _read_idx(files['train-labels-idx1'])
    test_x, test_y = _read_idx(files['t10k-images-idx3']), _read_idx(files['t10k-labels-idx1'])
    train = rng.permutation(len(train_x))[:limit + limit // 7]  # a train subset and a validation seventh of it
    test = rng.permutation(len(test_x))[:max(limit // 3, 1)]
    splits = dict(train=(train_x[train[:limit]], train_y[train[:limit]]),
                  validation=(train_x[train[limit:]], train_y[train[limit:]]), test=(test_x[test], test_y[test]))
    return Data('fashion-mnist', splits, FASHION_MNIST_LABELS,
                f'Fashion-MNIST ({limit} training images of 60000, from {FASHION_MNIST_DIR})')


DATASETS = {'digits': load_digits, 'fashion-mnist': load_fashion_mnist}


def create(name: str, data: Data, seed: int, **kwargs):
    """`timm.create_model` for the data: its channels, size, mean, std and class names."""
    torch.manual_seed(seed)  # the same initial weights for both models: only the stacking differs
    cfg = dict(input_size=(1, *data.size), pool_size=None, mean=(data.mean,), std=(data.std,), crop_pct=1.0,
               interpolation='bilinear', num_classes=len(data.classes), label_names=data.classes)
    return timm.create_model(name, num_classes=len(data.classes), in_chans=1, pretrained_cfg_overlay=cfg, **kwargs)


def evaluate(model, x, y, batch_size: int = 256) -> tuple:
    """Loss, top-1 accuracy (%) and logits of `model` in eval mode."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return F.cross_entropy(logits, y).item(), 100 * (logits.argmax(1) == y).float().mean().item(), logits


def train(model, data: Data, epochs: int, batch_size: int, lr: float, seed: int, label: str) -> List[Dict]:
    """timm's optimizer and scheduler factories, a progress bar per epoch; the validation curve."""
    x, y = data.tensors('train')
    val_x, val_y = data.tensors('validation')
    optimizer = create_optimizer_v2(model, opt='momentum', lr=lr, momentum=0.9, weight_decay=5e-4)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=epochs, warmup_epochs=1,
                                       warmup_lr=lr / 10, min_lr=lr / 100)
    order = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        model.train()
        batches = torch.randperm(len(x), generator=order).split(batch_size)
        desc = f'{label:<28} epoch {epoch + 1:>2}/{epochs}'
        # a bar on a terminal; in a log (not a terminal) one line per epoch instead of a line per redraw
        bar = tqdm(batches, desc=desc, leave=True, file=sys.stdout, disable=not sys.stdout.isatty(),
                   bar_format='{desc} {bar:20} {n_fmt}/{total_fmt}{postfix}')
        seen = correct = total_loss = 0
        for index in bar:
            logits = model(x[index])
            loss = F.cross_entropy(logits, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(index)
            total_loss += loss.item() * len(index)
            correct += (logits.argmax(1) == y[index]).sum().item()
            bar.set_postfix_str(f'loss {total_loss / seen:.3f} acc {100 * correct / seen:5.1f}%')
        val_loss, val_acc, _ = evaluate(model, val_x, val_y)
        history.append(dict(epoch=epoch + 1, train_loss=total_loss / seen, train_acc=100 * correct / seen,
                            val_loss=val_loss, val_acc=val_acc))
        summary = (f'loss {total_loss / seen:.3f} acc {100 * correct / seen:5.1f}% | val loss {val_loss:.3f} '
                   f'acc {val_acc:5.1f}%')
        bar.set_postfix_str(summary)
        bar.close()
        if bar.disable:
            print(f'{desc}  {summary}', flush=True)
        scheduler.step(epoch + 1)
    return history


def plot(histories: Dict[str, List[Dict]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for label, history in histories.items():
        epochs = [h['epoch'] for h in history]
        acc_ax.plot(epochs, [h['val_acc'] for h in history], marker='o', label=label)
        loss_ax.plot(epochs, [h['val_loss'] for h in history], marker='o', label=label)
    losses = [h['val_loss'] for history in histories.values() for h in history]
    last = max(h['epoch'] for history in histories.values() for h in history)
    acc_ax.set(xlabel='epoch', ylabel='validation top-1 (%)', title='validation accuracy')
    # a log axis only where the loss spans a decade: over one epoch or a narrow range it shows no tick labels
    loss_ax.set(xlabel='epoch', ylabel='validation cross-entropy', title='validation loss',
                yscale='log' if min(losses) > 0 and max(losses) > 10 * min(losses) else 'linear')
    if loss_ax.get_yscale() == 'linear':
        loss_ax.set_ylim(0, 1.15 * max(losses))
    for ax in (acc_ax, loss_ax):
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs, also for a one-epoch run
        ax.margins(y=0.15)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ascii_digit(image: np.ndarray) -> List[str]:
    """An image as text, two characters a pixel, so the terminal shows what the models saw."""
    shades = ' .:-=+*#%@'
    return [''.join(shades[int(v) * (len(shades) - 1) // 255] * 2 for v in row) for row in image]


def _run_folder(args) -> Tuple[Path, bool]:
    if args.output:
        target = Path(args.output)
        if target.exists() and not args.overwrite:
            raise UsageError(f"'{target}' already exists: choose another --output, or add --overwrite to replace it")
        if target.exists() and not target.is_dir():
            raise UsageError(f"--output '{target}' is a file; the demo writes a folder: give a folder name")
        output_directory(target)  # its parent exists and is writable: checked before the work
        return target, target.exists()
    root = Path(DEFAULT_ROOT)  # made when the run is written, so an interrupted run leaves no empty folder
    taken = [int(p.name[4:]) for p in root.glob('run-*') if p.name[4:].isdigit()] if root.is_dir() else []
    return root / f'run-{max(taken, default=0) + 1}', False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--data', choices=sorted(DATASETS), default='digits',
                        help="scikit-learn's 8x8 digits (default, inside its wheel) or Fashion-MNIST (needs Debian's "
                             "dataset-fashion-mnist)")
    parser.add_argument('--model', default='horesnet10_rk4', help='the higher-order model (default horesnet10_rk4)')
    parser.add_argument('--scheme', help="the model's stacking scheme (default: its own, e.g. rk4)")
    parser.add_argument('--twin-scheme', default='euler',
                        help='the scheme of the twin: the same network stacked another way (default euler)')
    parser.add_argument('--epochs', type=positive_int, default=12, help='training epochs (default 12)')
    parser.add_argument('--batch-size', type=positive_int, default=64, help='batch size (default 64)')
    parser.add_argument('--lr', type=positive_float, default=0.05, help='peak learning rate of the cosine schedule (0.05)')
    parser.add_argument('--train-size', type=positive_int, default=3000,
                        help='Fashion-MNIST training images used (default 3000; digits use all 1257)')
    parser.add_argument('--seed', type=non_negative_int, default=0, help='split, initial weights and batch order (default 0)')
    parser.add_argument('--output', help=f'run folder (default: a new {DEFAULT_ROOT}/run-N)')
    parser.add_argument('--overwrite', action='store_true', help='replace --output if it exists')


def _check_choices(args) -> None:
    """The model and schemes, named before any work: a typo is a usage error, not a failure after training."""
    models = [m for m in timm.list_models('horesnet*') if timm.get_pretrained_cfg(m).input_size[-1] != 224]
    if args.model not in models:
        raise UsageError(f"--model {args.model}: the demo trains a CIFAR-layout horesnet model twice, stacked two "
                         f"ways; choose one of {', '.join(models)}")
    for flag, scheme in (('--scheme', args.scheme), ('--twin-scheme', args.twin_scheme)):
        if scheme is not None and scheme not in list_schemes():
            raise UsageError(f"{flag} {scheme}: not a scheme; choose one of {', '.join(list_schemes())}")
    if args.data == 'fashion-mnist' and args.train_size < 7:
        raise UsageError(f'--train-size {args.train_size}: give at least 7, so that the validation split (a seventh '
                         f'of the training images) holds an image')


def run(args) -> int:
    from PIL import Image

    started = time.perf_counter()
    _check_choices(args)
    target, replace = _run_folder(args)
    data = DATASETS[args.data](args.seed, args.train_size)
    sizes = {k: len(v[1]) for k, v in data.splits.items()}
    print(f'horesnet-timm {__version__} | timm {timm.__version__} | torch {torch.__version__} | '
          f'{platform.machine()}, {torch.get_num_threads()} threads')
    print(f'data: {data.source}; {sizes["train"]} train / {sizes["validation"]} validation / {sizes["test"]} test '
          f'images of {data.size[0]}x{data.size[1]}, split with seed {args.seed}\n')

    ho_kwargs = {'scheme': args.scheme} if args.scheme else {}
    models = {args.model + (f' scheme={args.scheme}' if args.scheme else ''): create(args.model, data, args.seed,
                                                                                    **ho_kwargs),
              f'{args.model} scheme={args.twin_scheme}': create(args.model, data, args.seed, scheme=args.twin_scheme)}
    (ho_label, ho), (twin_label, twin) = models.items()
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print(f'{ho_label}: scheme {ho.scheme}, depth {ho.depth}, {params[ho_label]:,} parameters; '
          f'{twin_label}: scheme {twin.scheme}, depth {twin.depth}, {params[twin_label]:,} parameters')

    histories, seconds, results = {}, {}, {}
    test_x, test_y = data.tensors('test')
    for label, model in models.items():
        start = time.perf_counter()
        histories[label] = train(model, data, args.epochs, args.batch_size, args.lr, args.seed, label)
        seconds[label] = time.perf_counter() - start
        loss, acc, logits = evaluate(model, test_x, test_y)
        results[label] = dict(scheme=model.scheme, depth=model.depth, params=params[label], test_loss=loss,
                              test_top1=acc, train_seconds=seconds[label], predictions=logits.argmax(1))
    print(f"\n{'model':<28} {'scheme':<9} {'depth':>5} {'params':>9} {'test top-1':>10} {'test loss':>9} "
          f"{'train s':>7}")
    for label, r in results.items():
        print(f"{label:<28} {r['scheme']:<9} {r['depth']:>5} {r['params']:>9,} {r['test_top1']:>9.2f}% "
              f"{r['test_loss']:>9.4f} {r['train_seconds']:>7.1f}")

    staging = target.with_name(target.name + '.new') if replace else target  # the old run stays until the new is whole
    if not args.output:
        target.parent.mkdir(exist_ok=True)
    with atomic_output(staging, directory=True) as work:
        plot(histories, work / 'curves.png', f'{data.name}: {ho_label} vs {twin_label} (seed {args.seed})')
        image_dir = work / 'test_images'
        image_dir.mkdir()
        images, labels = data.splits['test']
        paths = []
        for i, (image, label) in enumerate(zip(images, labels)):
            paths.append(str(image_dir / f'{i:04d}_{data.classes[label].replace("/", "-")}.png'))
            Image.fromarray(image, 'L').save(paths[-1])

        # 3. ONNX through the export command's code, then onnxruntime on the PNG files
        provenance = (f'trained by `horesnet demo` on {data.source}, {sizes["train"]} training images, '
                      f'{args.epochs} epochs, seed {args.seed}')
        onnx_path = work / f'{args.model}.onnx'
        export = export_onnx(ho, str(onnx_path), source=f'horesnet demo ({args.model})', images=paths[:16],
                             batch_size=8, trained=True, provenance=provenance)
        worst = max(r['max_abs'] for r in export['checks'])
        onnx_top = [r['top'][0]['index'] for r in Predictor(str(onnx_path)).predict(paths, topk=1, batch_size=128)]
        onnx_top = torch.tensor(onnx_top)
        agreement = 100 * (onnx_top == results[ho_label]['predictions']).float().mean().item()
        onnx_acc = 100 * (onnx_top == test_y).float().mean().item()

        # 4. a Hub folder through the push code, with this run's evaluation as the card's metric
        command = ' '.join(['horesnet', *getattr(args, 'argv', ['demo'])])
        record = dict(dataset=data.name, split=f'test ({sizes["test"]} images, seed-{args.seed} split)',
                      top1=round(results[ho_label]['test_top1'], 2), epochs=args.epochs, seed=args.seed,
                      command=command)
        model_args = dict(num_classes=len(data.classes), in_chans=1, **ho_kwargs)
        loaded = Loaded(ho, args.model, 'horesnet demo', model_args, resolve_data_config(model=ho), True, provenance)
        hub_dir = stage(loaded, work / 'hub', repo_id=f'ORG/{args.model}.{data.name}', eval_record=record)
        reloaded = timm.create_model(f'local-dir:{hub_dir}', pretrained=True)
        _, hub_acc, hub_logits = evaluate(reloaded, test_x, test_y)
        _, _, ho_logits = evaluate(ho, test_x, test_y)
        hub_same = torch.equal(hub_logits, ho_logits)

        summary = dict(data=data.name, sizes=sizes, seed=args.seed, epochs=args.epochs, lr=args.lr,
                       batch_size=args.batch_size, mean=data.mean, std=data.std,
                       models={k: {kk: vv for kk, vv in r.items() if kk != 'predictions'} for k, r in results.items()},
                       histories=histories, onnx=dict(max_abs_error=worst, top1_agreement=agreement, top1=onnx_acc),
                       hub=dict(top1=hub_acc, identical_logits=hub_same), versions=dict(
                           horesnet_timm=__version__, timm=timm.__version__, torch=torch.__version__))
        (work / 'results.json').write_text(json.dumps(summary, indent=1) + '\n', encoding='utf-8')
    if replace:
        shutil.rmtree(target)
        os.replace(staging, target)

    print(f'\nONNX ({onnx_path.name}, onnxruntime on the {sizes["test"]} test PNGs): top-1 {onnx_acc:.2f}%, '
          f'{agreement:.2f}% agreement with PyTorch, max |logit error| {worst:.2g}')
    print(f'Hub folder reloaded with timm.create_model(\'local-dir:...\', pretrained=True): top-1 {hub_acc:.2f}%, '
          f'logits {"identical" if hub_same else "DIFFERENT"} to the trained model')
    shown = [0, 1, 2]
    print('\nthree test images as the models saw them, with the ONNX prediction:')
    rows = [ascii_digit(images[i]) for i in shown] if data.size[0] <= 8 else []
    for line in zip(*rows):
        print('   '.join(f'|{r}|' for r in line))
    for i in shown:
        print(f'  {os.path.basename(paths[i])}: predicted {data.classes[int(onnx_top[i])]}')
    elapsed = time.perf_counter() - started
    print(f'\nwrote {target}/ in {elapsed:.0f} s:\n'
          f'  curves.png            validation accuracy and loss per epoch, both models\n'
          f'  {onnx_path.name:<21} the exported {args.model}, preprocessing and labels in its metadata\n'
          f'  hub/                  model.safetensors, config.json, README.md (the model card)\n'
          f'  test_images/          the {sizes["test"]} test images as PNG files\n'
          f'  results.json          every number above')
    print('\nnext:\n'
          f'  horesnet predict {target}/{onnx_path.name} {target}/test_images --topk 3\n'
          f'  horesnet export {target}/hub/model.safetensors -o model.onnx --precision int8\n'
          f'  horesnet hub push {target}/hub/model.safetensors --repo-id YOUR_ORG/{args.model}.{data.name}\n'
          f'  python train.py -c configs/fashion_mnist/{args.model}.yaml --data-dir ~/data   '
          f'# timm\'s train.py, see README')
    return 0
