"""timm's own train.py on our configs: one epoch on an ImageFolder fixture, a checkpoint, a resumed
second epoch, and validate.py through `horesnet run`.

train.py is not in timm's wheel. Point TIMM_TRAIN_PY at a copy from a pytorch-image-models checkout
(validate.py is taken from the same folder). The scripts are copied into a temporary folder and run
from there, so they import the installed timm, not a `timm/` folder that sits next to them.
One config per dataset runs by default; `-m slow` runs every config.
"""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, make_image_folder

TRAIN_PY = os.environ.get('TIMM_TRAIN_PY')
pytestmark = pytest.mark.skipif(not TRAIN_PY, reason='set TIMM_TRAIN_PY=<pytorch-image-models>/train.py')

CPU = ['--device', 'cpu', '--workers', '0', '--no-prefetcher']
REPRESENTATIVES = ['cifar10/horesnet58_rk4', 'cifar100/horesnet30_rk8_adaptive', 'fashion_mnist/horesnet58_lm',
                   'imagenet/horesnet32i_midpoint']
ALL_CONFIGS = sorted(f'{p.parent.name}/{p.stem}' for p in CONFIGS.glob('*/*.yaml'))


@pytest.fixture(scope='module')
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp('timm_scripts')
    for name in ('train.py', 'validate.py'):
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


@pytest.mark.slow
@pytest.mark.parametrize('config', ALL_CONFIGS)
def test_train_py_every_config(config, scripts, data, tmp_path):
    _one_epoch(scripts, data, config, tmp_path)
