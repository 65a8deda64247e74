"""Model cards: timm's front matter, stats measured live, the scheme's exact tableau, and metrics only
from an evaluation record."""
import json
import re

import pytest
import timm

import horesnet_timm  # noqa: F401
from horesnet_timm.cards import CardError, load_eval_record, render_card
from horesnet_timm.cli import main
from horesnet_timm.measure import model_stats

from conftest import randomised, train_py_checkpoint

RECORD = dict(dataset='cifar10', split='test', top1=94.12, top5=99.81, epochs=300, seed=42,
              command='python train.py data/cifar10 --model horesnet58_rk4 --device-modules horesnet_timm --seed 42')


def card_of(name, *args, **kwargs):
    """The card of an untrained `name`, with its stats measured as `horesnet card` measures them."""
    model = timm.create_model(name, device='meta', **kwargs)
    return render_card(model, model_stats(name, activations=True, **kwargs), *args)


def front_matter(card):
    match = re.match(r'---\n(.*?)\n---\n', card, re.S)
    assert match, 'no YAML front matter'
    return match.group(1)


def stat(card, label):
    return re.search(rf'  - {re.escape(label)}: ([\d.]+)', card).group(1)


@pytest.mark.parametrize('name, kwargs', [('horesnet58_rk4', {}), ('horesnet32i_lm', {}),
                                          ('horesnet10_rk4', dict(scheme='gill4', num_classes=100))])
def test_stats_are_measured(name, kwargs, capsys):
    assert main(['card', name, '--model-kwargs', *[f'{k}={v!r}' for k, v in kwargs.items()]]) == 0
    card = capsys.readouterr().out
    model = timm.create_model(name, **kwargs)
    assert stat(card, 'Params (M)') == f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}"  # counted here
    live = model_stats(name, activations=True, **kwargs)
    assert stat(card, 'GMACs') == f"{live['gmacs']:.2f}"
    assert stat(card, 'Activations (M)') == f"{live['activations_m']:.2f}"
    assert f"  - Image size: {' x '.join(map(str, model.pretrained_cfg['input_size'][1:]))}" in card


def test_macs_are_counted_against_a_hand_count():
    """horesnet10_euler at 32x32: a 3->64 conv3x3 stem, 4 pre-activation sub-networks of two 64->64 conv3x3 at full
    resolution, a 64->10 classifier."""
    pixels = 32 * 32
    macs = 3 * 64 * 9 * pixels + 4 * 2 * 64 * 64 * 9 * pixels + 64 * 10
    assert model_stats('horesnet10_euler')['gmacs'] == pytest.approx(macs / 1e9, rel=1e-6)


def test_card_of_a_checkpoint_describes_what_it_was_trained_as(tmp_path, capsys):
    """1x28x28 Fashion-MNIST weights: stats at 28 x 28 with one input channel, the scheme it was trained with."""
    model = randomised(timm.create_model('horesnet10_rk4', scheme='rk38', in_chans=1))
    path = train_py_checkpoint(tmp_path / 'best.pth.tar', model, 'horesnet10_rk4', model_kwargs={'scheme': 'rk38'},
                               input_size=[1, 28, 28], mean=[0.286], std=[0.353], dataset='torch/fashion_mnist')
    assert main(['card', path]) == 0
    card = capsys.readouterr().out
    assert '  - Image size: 28 x 28' in card and "scheme='rk38'" in card and '`rk38`' in card
    assert stat(card, 'Params (M)') == f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}"
    assert stat(card, 'GMACs') < f"{model_stats('horesnet10_rk4')['gmacs']:.2f}"  # 28x28 costs less than 32x32
    assert 'a timm train.py checkpoint of `horesnet10_rk4`, epoch 299' in card and 'dataset torch/fashion_mnist' in card


def test_front_matter_and_no_metric_without_evaluation():
    card = card_of('horesnet58_rk4', 'org/horesnet58_rk4.cifar10')
    meta = front_matter(card)
    assert '- image-classification\n- timm' in meta and 'library_name: timm' in meta and 'license: apache-2.0' in meta
    assert 'datasets' not in meta  # nothing is claimed about data the weights were not shown to come from
    assert 'Top-1' not in card and '94.' not in card and 'this card reports no metric' in card
    assert "**Weights:** untrained (random initialisation)" in card
    assert 'import horesnet_timm' in card
    assert "timm.create_model('hf-hub:org/horesnet58_rk4.cifar10', pretrained=True)" in card
    assert '### ONNX' in card and '@article{luo2021rethinking' in card and '@inproceedings{lu2018beyond' in card


def test_metrics_from_an_evaluation_record(tmp_path):
    path = tmp_path / 'eval.json'
    path.write_text(json.dumps(RECORD))
    card = card_of('horesnet58_rk4', 'org/x', 'converted from `m.pth.tar`.', load_eval_record(path), ['CIFAR10'])
    assert front_matter(card).startswith('datasets:\n- cifar10\n')
    assert '| Dataset | Split | Top-1 (%) | Top-5 (%) | Epochs | Seed |' in card
    assert '| cifar10 | test | 94.12 | 99.81 | 300 | 42 |' in card and RECORD['command'] in card


def test_incomplete_evaluation_record_is_refused(tmp_path):
    path = tmp_path / 'eval.json'
    path.write_text(json.dumps(dict(dataset='cifar10', top1=95.0)))
    with pytest.raises(ValueError, match='lacks split, epochs, seed, command'):
        load_eval_record(path)


def test_scheme_tableau():
    rk4 = card_of('horesnet58_rk4')
    assert '1/2 | 0    1/2\n  1 | 0    0    1\n----+-------------------\n    | 1/6  1/3  1/3  1/6' in rk4
    assert 'explicit order-4 Runge-Kutta step' in rk4 and 'h = 1' in rk4
    gill = card_of('horesnet10_rk4', scheme='gill4')
    assert "`gill4`, Gill's fourth-order method" in gill and '1/3 - 1/6*sqrt(2)' in gill
    adaptive = card_of('horesnet30_rk8_adaptive')
    assert 'order-8' in adaptive and 'h is learned, one per block' in adaptive and '-27/140' in adaptive
    lm = card_of('horesnet58_lm')
    assert 'u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + F_n(u_n)' in lm


def test_card_command(tmp_path, capsys):
    out = tmp_path / 'README.md'
    assert main(['card', 'horesnet10_rk4', '--model-kwargs', 'scheme=gill4', '-o', str(out)]) == 0
    card = out.read_text()
    assert 'pipeline_tag: image-classification\n' in front_matter(card) and "(scheme='gill4')" in card
    assert main(['card', 'horesnet10_rk4']) == 0
    assert capsys.readouterr().out.count('# Model card for horesnet10_rk4') == 1
    with pytest.raises(SystemExit) as e:  # a usage error: argparse's status 2
        main(['card', 'horesnet10_rk4', '--model-kwargs', 'scheme'])
    assert e.value.code == 2 and 'not KEY=VALUE' in capsys.readouterr().err


def test_card_output_errors_leave_nothing(tmp_path, capsys, monkeypatch):
    assert main(['card', 'horesnet10_rk4', '-o', str(tmp_path / 'missing' / 'README.md')]) == 1
    err = capsys.readouterr().err
    assert "folder '" in err and "missing' does not exist; create it first" in err and 'Traceback' not in err
    import errno
    from pathlib import Path

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device', str(self))
    monkeypatch.setattr(Path, 'write_text', disk_full)
    assert main(['card', 'horesnet10_rk4', '-o', str(tmp_path / 'README.md')]) == 1
    assert 'no space left on the device' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the card nor its temporary twin


@pytest.mark.parametrize('change', [{'top1': float('nan')}, {'top1': 150}, {'top1': 'abc'}, {'top5': -1},
                                    {'epochs': -3}, {'epochs': 2.5}, {'seed': True}, {'top5': 50.0},
                                    {'dataset': 'cifar10\n---\ninjected: yes'}, {'split': ['test']}])
def test_impossible_evaluation_record_is_refused(tmp_path, change):
    path = tmp_path / 'eval.json'
    path.write_text(json.dumps({**RECORD, **change}))
    with pytest.raises(CardError, match=next(iter(change))):
        load_eval_record(path)


def test_an_evaluation_record_beside_random_weights_is_refused(tmp_path, capsys):
    path = tmp_path / 'eval.json'
    path.write_text(json.dumps(RECORD))
    assert main(['card', 'horesnet10_rk4', '--eval-json', str(path)]) == 2
    err = capsys.readouterr().err
    assert '--eval-json records an evaluation of trained weights, and horesnet10_rk4 has random ones' in err
