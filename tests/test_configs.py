"""The train.py configs: generated from one recipe table, every key a real train.py argument, and the
pipeline each one describes (built through timm's public factories, as train.py builds it) trains."""
import argparse
import math
import random

import pytest
import timm
import torch
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

import horesnet_timm  # noqa: F401
from conftest import CONFIGS, load_config, make_image_folder

CONFIG_FILES = sorted(CONFIGS.glob('*/*.yaml'))
DATASETS = sorted({p.parent.name for p in CONFIG_FILES})


def unknown_keys(config: dict, arguments: dict):
    return sorted(set(config) - set(arguments))


def test_files_match_generator(config_generator):
    assert config_generator['main'](['--check']) == 0, 'run: python configs/generate.py'


def test_every_dataset_and_model_has_a_config():
    assert DATASETS == ['cifar10', 'cifar100', 'fashion_mnist', 'imagenet']
    names = timm.list_models('horesnet*')
    imagenet = {n for n in names if 'i_' in n}
    for dataset in ('cifar10', 'cifar100', 'fashion_mnist'):
        assert {p.stem for p in (CONFIGS / dataset).glob('*.yaml')} == set(names) - imagenet
    assert {p.stem for p in (CONFIGS / 'imagenet').glob('*.yaml')} == imagenet
    assert {'horesnet58_rk4', 'horesnet86_rk8_adaptive', 'horesnet10_euler'} <= set(names) - imagenet


def test_unknown_key_check_catches_a_misspelling(train_py_arguments):
    assert unknown_keys({'weight_decay': 1e-4, 'weight_decy': 1e-4, 'aa': 'cifar10'}, train_py_arguments) == [
        'weight_decy']


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_config_keys_and_values(path, train_py_arguments):
    config = load_config(path)
    assert unknown_keys(config, train_py_arguments) == [], f'{path.name}: not train.py arguments'
    for key, value in config.items():  # same kind of value as train.py's default, where it has one
        default = train_py_arguments[key]
        if isinstance(default, (bool, list, str)):
            assert isinstance(value, type(default)), f'{key}: {value!r}'
    assert config['model'] == path.stem and config['model'] in timm.list_models('horesnet*')
    assert config['device_modules'][0] == 'horesnet_timm'
    channels = config.get('input_size', [3])[0]
    assert len(config.get('mean', [0] * channels)) == len(config.get('std', [0] * channels)) == channels


def test_cifar_recipe_is_the_papers():
    config = load_config(CONFIGS / 'cifar10' / 'horesnet58_rk4.yaml')
    assert {k: config[k] for k in ('opt', 'momentum', 'weight_decay', 'batch_size', 'lr', 'sched',
                                   'decay_milestones', 'decay_rate', 'epochs', 'warmup_epochs', 'aa')} == {
        'opt': 'momentum', 'momentum': 0.9, 'weight_decay': 1e-4, 'batch_size': 128, 'lr': 0.1,
        'sched': 'multistep', 'decay_milestones': [101, 151, 201, 231], 'decay_rate': 0.1, 'epochs': 260,
        'warmup_epochs': 0, 'aa': 'cifar10'}
    assert config['dataset'] == 'torch/cifar10' and config['dataset_download'] is True


def _train_args(config: dict, arguments: dict, **overrides) -> argparse.Namespace:
    """train.py's args: its defaults, then the config (as set_defaults does), then the command line."""
    return argparse.Namespace(**{**arguments, **config, **overrides})


def _cosine(epoch, epochs, lr=0.1, min_lr=1e-4):
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def _lr_at(scheduler, epoch):
    scheduler.step(epoch)
    return scheduler.optimizer.param_groups[0]['lr']


@pytest.mark.parametrize('dataset, expected_lr', [
    ('cifar10', {0: 0.1, 99: 0.1, 100: 0.01, 149: 0.01, 150: 1e-3, 200: 1e-4, 230: 1e-5, 259: 1e-5}),
    ('cifar100', {0: 0.1, 100: 0.01, 230: 1e-5}),
    ('imagenet', {0: 0.2, 29: 0.2, 30: 0.02, 59: 0.02, 60: 2e-3, 89: 2e-3}),  # 0.1 per 256 images; 512
    ('fashion_mnist', {0: 0.01, 1: _cosine(1, 15), 14: _cosine(14, 15)}),
])
def test_schedule(dataset, expected_lr, train_py_arguments):
    config = load_config(sorted((CONFIGS / dataset).glob('*.yaml'))[0])
    args = _train_args(config, train_py_arguments)
    if args.lr is None:  # train.py: lr from lr_base and the global batch (here 8 processes)
        args.lr = args.lr_base * args.batch_size * 8 / args.lr_base_size
    optimizer = create_optimizer_v2(torch.nn.Linear(2, 2), **optimizer_kwargs(cfg=args))
    assert type(optimizer).__name__ == 'SGD' and not optimizer.defaults['nesterov']
    scheduler, epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=10)
    assert epochs == config['epochs']
    for epoch, lr in expected_lr.items():
        assert _lr_at(scheduler, epoch) == pytest.approx(lr, rel=1e-6), f'epoch {epoch}'


@pytest.mark.parametrize('path', [
    CONFIGS / 'cifar10' / 'horesnet18_rk4.yaml',
    CONFIGS / 'cifar100' / 'horesnet58_lm.yaml',
    CONFIGS / 'fashion_mnist' / 'horesnet30_rk8_adaptive.yaml',
    CONFIGS / 'imagenet' / 'horesnet32i_midpoint.yaml',
], ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_pipeline_trains(path, tmp_path, train_py_arguments):
    """Dataset, loader (with the config's augmentation), model, optimiser and scheduler as train.py makes
    them; eight steps on one augmented batch lower its loss."""
    import horesnet_timm.cifar_augment  # noqa: F401  train.py imports every device_modules entry
    config = load_config(path)
    args = _train_args(config, train_py_arguments, batch_size=4, workers=0)
    random.seed(0)  # the augmentations draw from `random`: the same batch on every run
    # the recipe's lr at batch 4 instead of 128 (linear scaling): at the full lr a 4-image batch makes
    # deep Euler and LM stacks blow up in the first steps (higher-order stacks do not; the paper's point)
    args.lr = (config.get('lr') or config['lr_base'] / config['lr_base_size'] * config['batch_size']) \
        * args.batch_size / config['batch_size']
    torch.manual_seed(0)
    in_chans = (args.input_size or [3])[0]
    model = timm.create_model(args.model, num_classes=2, in_chans=in_chans)  # 2 fixture classes
    data_config = resolve_data_config(vars(args), model=model)
    size = 28 if in_chans == 1 else 32
    root = make_image_folder(tmp_path, size=size, mode='L' if in_chans == 1 else 'RGB', per_class=2)
    dataset = create_dataset('', root=str(root), split=args.train_split, is_training=True,
                             input_img_mode='L' if in_chans == 1 else 'RGB')
    loader = create_loader(
        dataset, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip,
        color_jitter=args.color_jitter, auto_augment=args.aa, interpolation=args.train_interpolation,
        mean=data_config['mean'], std=data_config['std'], num_workers=0, use_prefetcher=False)
    images, targets = next(iter(loader))
    assert images.shape == (4, *data_config['input_size']) and torch.isfinite(images).all()

    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    scheduler, _ = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=1)
    scheduler.step(1)  # past any warmup
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    for _ in range(8):
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
