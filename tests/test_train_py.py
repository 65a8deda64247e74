"""timm's own train.py on our configs: one epoch on an ImageFolder fixture, a checkpoint, a resumed
second epoch, validate.py through `horesnet run`, and the Fashion-MNIST path end to end exactly as
README's "Fashion-MNIST end to end" section gives it (train, validate, export, predict, hub push
--dry-run, load back through `local-dir:`).

train.py is not in timm's wheel. Point TIMM_TRAIN_PY at a copy from a pytorch-image-models checkout
(validate.py is taken from the same folder). The scripts are copied into a temporary folder and run
from there, so they import the installed timm, not a `timm/` folder that sits next to them.
One config per dataset runs by default; `-m slow` runs every config.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, make_fashion_mnist, make_image_folder

TRAIN_PY = os.environ.get('TIMM_TRAIN_PY')
pytestmark = pytest.mark.skipif(not TRAIN_PY, reason='set TIMM_TRAIN_PY=<pytorch-image-models>/train.py')

CPU = ['--device', 'cpu', '--workers', '0', '--no-prefetcher']
REPRESENTATIVES = ['cifar10/horesnet58_rk4', 'cifar100/horesnet30_rk8_adaptive', 'fashion_mnist/horesnet58_lm',
                   'imagenet/horesnet32i_midpoint']
ALL_CONFIGS = sorted(f'{p.parent.name}/{p.stem}' for p in CONFIGS.glob('*/*.yaml'))


@pytest.fixture(scope='module')
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp('timm_scripts')
    for name in ('train.py', 'validate.py', 'inference.py', 'benchmark.py'):
        shutil.copy(Path(TRAIN_PY).with_name(name), folder / name)
    return folder


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return {'rgb': make_image_folder(root / 'rgb', size=32), 'grey': make_image_folder(root / 'grey', 28, 'L')}


def _run(args, cwd):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def _train(scripts, data, config, tmp_path, epochs, *extra):
    """train.py with the config, on the fixture instead of the config's dataset (`--dataset ''` is ImageFolder)."""
    path = CONFIGS / f'{config}.yaml'
    folder = data['grey' if config.startswith('fashion_mnist') else 'rgb']
    log = _run([scripts / 'train.py', '-c', path, '--data-dir', folder, '--dataset', '', *CPU,
                '-b', '4', '--epochs', epochs, '--output', tmp_path, '--experiment', 'run', '--log-interval', '1',
                *extra], cwd=tmp_path)
    return log, tmp_path / 'run'


def _summary_epochs(run):
    with open(run / 'summary.csv') as f:  # a resumed run writes the header again
        return [int(row['epoch']) for row in csv.DictReader(f) if row['epoch'] != 'epoch']


def _one_epoch(scripts, data, config, tmp_path):
    log, run = _train(scripts, data, config, tmp_path, 1)
    model = yaml.safe_load((CONFIGS / f'{config}.yaml').read_text())['model']
    assert f'Model {model} created' in log
    assert (run / 'last.pth.tar').is_file() and _summary_epochs(run) == [0]
    return run


@pytest.mark.parametrize('config', REPRESENTATIVES)
def test_train_py_one_epoch_then_resume(config, scripts, data, tmp_path):
    run = _one_epoch(scripts, data, config, tmp_path)
    log, _ = _train(scripts, data, config, tmp_path, 2, '--resume', run / 'last.pth.tar')
    assert 'Scheduled epochs: 2' in log and _summary_epochs(run) == [0, 1]


def test_validate_py_through_launcher(scripts, data, tmp_path):
    run = _one_epoch(scripts, data, 'cifar10/horesnet10_rk4', tmp_path)
    log = _run(['-m', 'horesnet_timm', 'run', scripts / 'validate.py', '--data-dir', data['rgb'], '--split',
                'validation', '--model', 'horesnet10_rk4', '--checkpoint', run / 'last.pth.tar', '-b', '4',
                '--device', 'cpu', '--workers', '0', '--results-file', tmp_path / 'results.csv'], cwd=tmp_path)
    assert 'Test: [' in log and (tmp_path / 'results.csv').is_file()


def test_train_py_and_benchmark_py_through_launcher(scripts, data, tmp_path):
    """`horesnet run` covers timm's four scripts: train.py (whose own --device-modules is the other way in)
    and benchmark.py, which without the plugin reports 'Unknown model' and still exits 0."""
    config = CONFIGS / 'fashion_mnist' / 'horesnet10_euler.yaml'
    log = _run(['-m', 'horesnet_timm', 'run', scripts / 'train.py', '-c', config, '--data-dir', data['grey'],
                '--dataset', '', *CPU, '-b', '4', '--epochs', '1', '--output', tmp_path, '--experiment', 'run'],
               cwd=tmp_path)
    assert 'Model horesnet10_euler created' in log and (tmp_path / 'run' / 'last.pth.tar').is_file()
    bench = ['--model', 'horesnet10_euler', '--bench', 'inference', '--num-bench-iter', '5', '--num-warm-iter', '1',
             '-b', '2', '--device', 'cpu']
    plain = _run([scripts / 'benchmark.py', *bench], cwd=tmp_path)
    assert 'Unknown model' in plain
    log = _run(['-m', 'horesnet_timm', 'run', scripts / 'benchmark.py', *bench], cwd=tmp_path)
    assert '"infer_samples_per_sec"' in log and 'Unknown model' not in log


def _horesnet(*args, cwd):
    return _run(['-m', 'horesnet_timm', *args], cwd=cwd)


def test_fashion_mnist_end_to_end(scripts, tmp_path):
    """README's commands, and no other flag: a checkpoint of the 1x28x28 config is validated, exported,
    classified and staged for the Hub as the model it was trained as."""
    import onnx
    import timm
    import torch
    import torchvision
    from timm.data import create_transform
    from horesnet_timm.loading import load_model
    data = make_fashion_mnist(tmp_path / 'data')
    config = CONFIGS / 'fashion_mnist' / 'horesnet10_rk4.yaml'
    _run([scripts / 'train.py', '-c', config, '--data-dir', data, *CPU, '--epochs', '1'], cwd=tmp_path)
    [checkpoint] = tmp_path.glob('output/train/*/model_best.pth.tar')

    # validate.py rebuilds the model from the checkpoint's record: no --model, --in-chans, --mean ...
    log = _horesnet('run', scripts / 'validate.py', '--data-dir', data, '--dataset', 'torch/fashion_mnist',
                    '--checkpoint', checkpoint, '--device', 'cpu', '--workers', '0', cwd=tmp_path)
    assert '--model horesnet10_rk4 --num-classes 10 --in-chans 1' in log and '--input-size 1 28 28' in log
    validate_top1 = float(re.search(r'"top1": ([\d.]+)', log).group(1))
    # ... and scores what the checkpoint, loaded here through timm's own eval transform, scores
    loaded = load_model(str(checkpoint))
    test_set = torchvision.datasets.FashionMNIST(str(data), train=False)
    transform = create_transform(**loaded.data_config)
    with torch.no_grad():
        x = torch.stack([transform(image) for image, _ in test_set])
        reference = loaded.model(x)
    labels = torch.tensor([label for _, label in test_set])
    assert validate_top1 == pytest.approx(100 * (reference.argmax(1) == labels).float().mean().item(), abs=1e-3)

    _horesnet('export', checkpoint, '-o', 'fmnist.onnx', cwd=tmp_path)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / 'fmnist.onnx')).metadata_props}
    assert json.loads(meta['input_size']) == [1, 28, 28] and meta['scheme'] == 'rk4'
    assert json.loads(meta['mean']) == [0.286] and json.loads(meta['labels'])[0] == 'T-shirt/top'

    images = tmp_path / 'images'
    images.mkdir()
    for i in range(8):
        test_set[i][0].save(images / f'{i}.png')
    predicted = subprocess.run([sys.executable, '-m', 'horesnet_timm', 'predict', 'fmnist.onnx', str(images), '--json'],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0 and predicted.stderr == '', predicted.stderr  # trained weights: no warning
    results = json.loads(predicted.stdout)
    names = loaded.label_names
    assert [r['top'][0]['label'] for r in results] == [names[i] for i in reference[:8].argmax(1)]

    _horesnet('hub', 'push', checkpoint, '--repo-id', 'org/horesnet10_rk4.fmnist', '--dry-run',
              '--output-dir', 'staged', cwd=tmp_path)
    hub_model = timm.create_model(f'local-dir:{tmp_path / "staged"}', pretrained=True).eval()
    # published for RGB images: an RGB picture of each grey image gives the checkpoint's outputs
    assert hub_model.in_chans == 3 and hub_model.pretrained_cfg['label_names'][9] == 'Ankle boot'
    with torch.no_grad():
        rgb = hub_model(x.expand(-1, 3, -1, -1))
    assert torch.allclose(rgb, reference, atol=1e-4) and torch.equal(rgb.argmax(1), reference.argmax(1))


@pytest.mark.slow
@pytest.mark.parametrize('config', ALL_CONFIGS)
def test_train_py_every_config(config, scripts, data, tmp_path):
    _one_epoch(scripts, data, config, tmp_path)


def test_a_shipped_tag_validates_on_grey_images_as_published(scripts, tmp_path):
    """`horesnet run validate.py --model TAG --pretrained --dataset torch/fashion_mnist`: the tag takes RGB images
    and the dataset gives grey ones; the launcher adds the flags that make timm read them, and the score is the
    tag's own on those images."""
    import timm
    import torch
    import torchvision
    import horesnet_timm  # noqa: F401
    from conftest import top1
    data = make_fashion_mnist(tmp_path / 'data')
    tag = 'horesnet58w16_midpoint.fmnist'
    log = _horesnet('run', scripts / 'validate.py', '--model', tag, '--pretrained', '--data-dir', data, '--dataset',
                    'torch/fashion_mnist', '--device', 'cpu', '--workers', '0', cwd=tmp_path)
    assert 'gives grey images and horesnet58w16_midpoint.fmnist takes RGB ones: --in-chans 1 --input-size 1 28 28' in log
    test_set = torchvision.datasets.FashionMNIST(str(data), train=False)
    images = torch.stack([torchvision.transforms.functional.pil_to_tensor(image)[0] for image, _ in test_set]).numpy()
    expected = top1(timm.create_model(tag, pretrained=True), images, [label for _, label in test_set])
    assert float(re.search(r'"top1": ([\d.]+)', log).group(1)) == pytest.approx(expected, abs=1e-3)
