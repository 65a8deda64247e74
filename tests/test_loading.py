"""One loader below every command: each kind of source builds the model its weights were trained as,
overrides that contradict the weights are refused (registered defaults included), and the data config
and labels describe the weights actually loaded."""
import argparse
import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf

import horesnet_timm  # noqa: F401
from horesnet_timm.checkpoint import CheckpointError
from horesnet_timm.errors import UsageError
from horesnet_timm.commands.arguments import add_model_arguments, load_from_args
from horesnet_timm.loading import LoadError, architecture_of, load_model

from conftest import randomised, train_py_checkpoint

FASHION_MNIST = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                 'Ankle boot']


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_train_py_checkpoint_rebuilds_scheme_classes_and_channels(tmp_path):
    """--model-kwargs scheme=gill4, 1x28x28 Fashion-MNIST input (train.py derives in_chans=1 from
    --input-size), 10 classes: all of it comes back from the checkpoint alone."""
    source = randomised(timm.create_model('horesnet10_rk4', scheme='gill4', in_chans=1))
    path = train_py_checkpoint(tmp_path / 'model_best.pth.tar', source, 'horesnet10_rk4', model_kwargs={'scheme': 'gill4'},
                               num_classes=10, input_size=[1, 28, 28], mean=[0.286], std=[0.353],
                               dataset='torch/fashion_mnist')
    loaded = load_model(path)
    assert loaded.model.scheme == 'gill4' and loaded.model.in_chans == 1 and same_weights(loaded.model, source)
    assert loaded.architecture == 'horesnet10_rk4' and loaded.trained
    assert loaded.model_args == {'scheme': 'gill4', 'num_classes': 10, 'in_chans': 1}
    cfg = loaded.model.pretrained_cfg
    assert tuple(cfg['input_size']) == (1, 28, 28) and tuple(cfg['mean']) == (0.286,) and tuple(cfg['std']) == (0.353,)
    assert cfg['label_names'] == FASHION_MNIST  # not the CIFAR-10 names of the registered cfg
    assert loaded.data_config['input_size'] == (1, 28, 28)
    assert 'epoch 299' in loaded.provenance and 'EMA weights' in loaded.provenance
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), source(x))


def test_registered_default_is_compared_too(tmp_path):
    """train.py records only what was passed: a horesnet10_rk4 run records no scheme, yet rk4 it is."""
    path = train_py_checkpoint(tmp_path / 'c.pth.tar', randomised(timm.create_model('horesnet10_rk4')), 'horesnet10_rk4',
                               num_classes=10)
    with pytest.raises(LoadError, match=r"trained as horesnet10_rk4 with scheme='rk4'; scheme='gill4' would build "
                                        r"another architecture"):
        load_model(path, model_args={'scheme': 'gill4'})
    with pytest.raises(LoadError, match='num_classes=10; num_classes=100'):
        load_model(path, model_args={'num_classes': 100})
    with pytest.raises(LoadError, match='in_chans=3; in_chans=1'):
        load_model(path, model_args={'in_chans': 1})
    # overrides that keep the architecture are fine: restating it, or training-only settings
    assert load_model(path, model_args={'scheme': 'rk4', 'drop_path_rate': 0.1}).model.scheme == 'rk4'


def test_name_and_checkpoint_must_agree(tmp_path):
    path = train_py_checkpoint(tmp_path / 'c.pth.tar', timm.create_model('horesnet18_euler'), 'horesnet18_euler')
    with pytest.raises(LoadError, match="holds weights of horesnet18_euler, not horesnet10_rk4"):
        load_model('horesnet10_rk4', path)
    assert load_model('horesnet18_euler', path).architecture == 'horesnet18_euler'


def test_safetensors_needs_a_name_or_a_config_beside_it(tmp_path):
    source = randomised(timm.create_model('horesnet10_rk4', scheme='rk38', num_classes=5))
    bare = tmp_path / 'w.safetensors'
    save_file(source.state_dict(), str(bare))
    with pytest.raises(LoadError, match='does not say which model it holds'):
        load_model(str(bare))
    named = load_model('horesnet10_rk4', str(bare), model_args={'scheme': 'rk38', 'num_classes': 5})
    assert same_weights(named.model, source) and named.label_names is None  # the data is unknown: no labels
    # a folder staged for the Hub: config.json beside model.safetensors records everything
    save_for_hf(source, str(tmp_path / 'repo'), safe_serialization=True)
    loaded = load_model(str(tmp_path / 'repo' / 'model.safetensors'))
    assert loaded.model.scheme == 'rk38' and loaded.model.num_classes == 5 and same_weights(loaded.model, source)
    with pytest.raises(LoadError, match="scheme='rk38'; scheme='rk4'"):
        load_model(str(tmp_path / 'repo' / 'model.safetensors'), model_args={'scheme': 'rk4'})


def test_hub_sources_carry_their_architecture(tmp_path):
    source = randomised(timm.create_model('horesnet10_rk4', scheme='gill4'))
    save_for_hf(source, str(tmp_path / 'repo'), safe_serialization=True)
    loaded = load_model(f'local-dir:{tmp_path / "repo"}')
    assert loaded.model.scheme == 'gill4' and same_weights(loaded.model, source) and loaded.trained
    with pytest.raises(LoadError, match='num_classes=10; num_classes=3'):  # timm would re-initialise the head
        load_model(f'local-dir:{tmp_path / "repo"}', model_args={'num_classes': 3})
    with pytest.raises(UsageError, match='both name weights'):
        load_model(f'local-dir:{tmp_path / "repo"}', str(tmp_path / 'repo' / 'model.safetensors'))


def test_untrained_registered_model_is_marked():
    loaded = load_model('horesnet10_midpoint', model_args={'num_classes': 7, 'in_chans': 1})
    assert not loaded.trained and loaded.provenance.startswith('untrained')
    assert loaded.label_names is None  # CIFAR-10's names do not fit 7 classes
    assert load_model('horesnet10_midpoint').label_names[3] == 'cat'
    assert tuple(load_model('horesnet10_midpoint', data_args={'input_size': (1, 40, 40)}, model_args={'in_chans': 1})
                 .model.pretrained_cfg['input_size']) == (1, 40, 40)


def test_non_finite_weights_are_refused(tmp_path):
    model = timm.create_model('horesnet10_rk4')
    state = model.state_dict()
    state['stages.0.blocks.0.subnets.1.conv1.weight'][0, 0, 0, 0] = float('nan')
    path = tmp_path / 'nan.safetensors'
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r'NaN or infinite values in 1 tensors \(e\.g\. stages\.0\.blocks\.0\.'
                                              r'subnets\.1\.conv1\.weight\); the training diverged'):
        load_model('horesnet10_rk4', str(path))


def test_data_overrides(tmp_path):
    path = train_py_checkpoint(tmp_path / 'c.pth.tar', timm.create_model('horesnet10_rk4', in_chans=1), 'horesnet10_rk4',
                               input_size=[1, 28, 28], mean=[0.286], std=[0.353])
    with pytest.raises(LoadError, match=r'trained with mean \[0\.286\]; --mean \[0\.5\]'):
        load_model(path, data_args={'mean': [0.5]})
    # a test-time resolution and crop are the user's choice
    loaded = load_model(path, data_args={'input_size': (1, 32, 32), 'crop_pct': 0.9})
    assert loaded.data_config['input_size'] == (1, 32, 32) and loaded.data_config['crop_pct'] == 0.9


@pytest.mark.parametrize('source, message', [
    ('horesnet58_rk5', "unknown model 'horesnet58_rk5'; did you mean .*horesnet58_rk4"),
    ('horesnet10_rk4.bogus', "horesnet10_rk4 has no tag 'bogus'"),
])
def test_bad_names(source, message):
    with pytest.raises(LoadError, match=message):
        load_model(source)


def test_pretrained_without_published_weights():
    with pytest.raises(LoadError, match="horesnet58_rk4 has no published weights"):
        load_model('horesnet58_rk4', pretrained=True)


@pytest.mark.parametrize('kwargs, message', [
    ({'num_classes': 'abc'}, "cannot build horesnet10_rk4 with num_classes='abc'"),
    ({'scheme': 'rk5'}, "unknown scheme 'rk5'"),
    ({'colour': 'red'}, "cannot build horesnet10_rk4 with colour='red'"),
])
def test_arguments_that_cannot_build(kwargs, message):
    with pytest.raises(LoadError, match=message):
        load_model('horesnet10_rk4', model_args=kwargs)


def test_flags_as_train_py_names_them(tmp_path):
    loaded = load_from_args(parse('horesnet10_rk4', '--model-kwargs', 'scheme=gill4', 'layers=(8,)', '--num-classes',
                                  '4', '--input-size', '1', '24', '24', '--mean', '0.5', '--std', '0.25'))
    model = loaded.model
    assert (model.scheme, model.num_classes, model.in_chans, model.depth) == ('gill4', 4, 1, 18)  # in_chans from C
    assert tuple(model.pretrained_cfg['input_size']) == (1, 24, 24) and tuple(model.pretrained_cfg['std']) == (0.25,)
    assert load_from_args(parse('--model', 'horesnet10_euler')).architecture == 'horesnet10_euler'
    with pytest.raises(UsageError, match="MODEL 'horesnet10_rk4' and --model 'horesnet10_euler' differ"):
        load_from_args(parse('horesnet10_rk4', '--model', 'horesnet10_euler'))


@pytest.mark.parametrize('argv', [['--num-classes', '-1'], ['--input-size', '1', '0', '28'], ['--crop-pct', '1.5'],
                                  ['--model-kwargs', 'scheme'], ['--in-chans', 'x']])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse('horesnet10_rk4', *argv)
    assert e.value.code == 2 and 'Traceback' not in capsys.readouterr().err


def test_architecture_ignores_training_only_settings():
    base = architecture_of(timm.create_model('horesnet10_rk4', device='meta'))
    assert architecture_of(timm.create_model('horesnet10_rk4', drop_path_rate=0.2, drop_rate=0.3, device='meta')) == base
    assert architecture_of(timm.create_model('horesnet10_rk4', scheme='gill4', device='meta')) != base
    assert architecture_of(timm.create_model('horesnet10_rk4', learn_step_size=True, device='meta')) != base
    assert architecture_of(timm.create_model('horesnet10_rk4', block_act=False, device='meta')) != base


@pytest.mark.parametrize('data_args', [{'std': (0.,) * 3}, {'std': (float('inf'),) * 3}, {'mean': (float('nan'),) * 3},
                                       {'std': (-0.2, 0.2, 0.2)}])
def test_data_config_that_no_image_can_use_is_refused(data_args):
    from horesnet_timm.loading import LoadError, load_model
    with pytest.raises(LoadError, match='finite number'):
        load_model('horesnet10_rk4', data_args=data_args)


def test_an_untagged_name_points_to_its_tags():
    with pytest.raises(LoadError, match=r'horesnet58w16_midpoint has no default weights; .* the tag horesnet58w16_midpoint.fmnist'):
        load_model('horesnet58w16_midpoint', pretrained=True)
    # an override with the untagged name is no conflict with weights it does not have: the tag is still named
    with pytest.raises(LoadError, match=r'no default weights; .* the tag horesnet58w16_midpoint.fmnist'):
        load_model('horesnet58w16_midpoint', pretrained=True, model_args={'scheme': 'heun'})


def test_restacked_pretrained_is_its_base_restacked_as_asked(monkeypatch):
    """restacked's pretrained weights are its base's, restacked by the scheme given: no conflict with a
    default scheme (once reported as "rk4 has 4 stages" when midpoint was asked), and a download that
    cannot happen is named as such."""
    from huggingface_hub.errors import LocalEntryNotFoundError
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError('offline')
    monkeypatch.setattr(builder, 'load_state_dict_from_hf', offline)
    monkeypatch.setattr(builder, 'load_state_dict_from_url', offline)
    monkeypatch.setattr(builder, 'download_cached_file', offline, raising=False)
    with pytest.raises(LoadError) as failure:
        load_model('restacked', pretrained=True, model_args={'base': 'resnet18', 'scheme': 'midpoint'})
    assert "cannot reach the Hub" in str(failure.value) and "'resnet18'" in str(failure.value)
    assert 'rk4' not in str(failure.value)


@pytest.mark.parametrize('data_args, size', [({}, (1, 20, 20)), ({'img_size': 40}, (1, 40, 40)),
                                             ({'input_size': (1, 24, 24)}, (1, 24, 24))])
def test_an_image_size_asked_for_replaces_the_recorded_one(tmp_path, data_args, size):
    """A checkpoint trained at 1x20x20 exported at 40x40 (`--img-size 40`) is not a conflict of timm's two size
    arguments: the size asked for, in either form, replaces the recorded one, and the channels stay recorded."""
    model = randomised(timm.create_model('horesnet10_rk4', in_chans=1))
    checkpoint = train_py_checkpoint(tmp_path / 'ck.pth.tar', model, 'horesnet10_rk4', in_chans=1,
                                     input_size=[1, 20, 20], dataset='torch/fashion_mnist', num_classes=10)
    assert load_model(checkpoint, data_args=data_args).data_config['input_size'] == size


@pytest.mark.parametrize('data_args, message', [
    ({'crop_pct': 0.0}, 'crop_pct 0.0: give a number above 0'),  # falsy: timm would use its default
    ({'crop_pct': float('nan')}, 'crop_pct nan'), ({'crop_pct': True}, 'crop_pct True'),
    ({'crop_mode': 'bogus'}, "crop_mode 'bogus': choose one of center, squash, border"),
    ({'interpolation': 'bogus'}, "interpolation 'bogus': choose one of bilinear")])
def test_an_eval_transform_timm_would_not_apply_is_refused(data_args, message):
    with pytest.raises(LoadError, match=re.escape(message)):
        load_model('horesnet10_rk4', data_args=data_args)
