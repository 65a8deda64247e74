"""Model cards: timm's front matter, stats measured live, the scheme's exact tableau, and metrics only
from an evaluation record."""
import json
import re

import pytest
import timm

import horesnet_timm  # noqa: F401
from horesnet_timm.cards import EVAL_KEYS, load_eval_record, render_card
from horesnet_timm.cli import main
from horesnet_timm.tour import measure

RECORD = dict(dataset='cifar10', split='test', top1=94.12, top5=99.81, epochs=300, seed=42,
              command='python train.py data/cifar10 --model horesnet58_rk4 --device-modules horesnet_timm --seed 42')


def front_matter(card):
    match = re.match(r'---\n(.*?)\n---\n', card, re.S)
    assert match, 'no YAML front matter'
    return match.group(1)


def stat(card, label):
    return re.search(rf'  - {re.escape(label)}: ([\d.]+)', card).group(1)


@pytest.mark.parametrize('name, kwargs', [('horesnet58_rk4', {}), ('horesnet32i_lm', {}),
                                          ('horesnet10_rk4', dict(scheme='gill4', num_classes=100))])
def test_stats_are_measured(name, kwargs):
    card = render_card(timm.create_model(name, device='meta', **kwargs))
    live = measure(name, activations=True, **kwargs)
    assert stat(card, 'Params (M)') == f"{live['params_m']:.2f}"
    assert stat(card, 'GMACs') == f"{live['gmacs']:.2f}"
    assert stat(card, 'Activations (M)') == f"{live['activations_m']:.2f}"
    size = live['input_size'].replace('x', ' x ')
    assert f'  - Image size: {size}' in card


def test_front_matter_and_no_metric_without_evaluation():
    card = render_card(timm.create_model('horesnet58_rk4', device='meta'), 'org/horesnet58_rk4.cifar10')
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
    card = render_card(timm.create_model('horesnet58_rk4', device='meta'), 'org/x', 'converted from `m.pth.tar`.',
                       load_eval_record(path), datasets=['CIFAR10'])
    assert front_matter(card).endswith('datasets:\n- cifar10')
    assert '| Dataset | Split | Top-1 (%) | Top-5 (%) | Epochs | Seed |' in card
    assert '| cifar10 | test | 94.12 | 99.81 | 300 | 42 |' in card and RECORD['command'] in card


def test_incomplete_evaluation_record_is_refused(tmp_path):
    path = tmp_path / 'eval.json'
    path.write_text(json.dumps(dict(dataset='cifar10', top1=95.0)))
    with pytest.raises(ValueError, match='lacks split, epochs, seed, command'):
        load_eval_record(path)
    assert set(EVAL_KEYS) == {'dataset', 'split', 'top1', 'epochs', 'seed', 'command'}


def test_scheme_tableau():
    rk4 = render_card(timm.create_model('horesnet58_rk4', device='meta'))
    assert '1/2 | 0    1/2\n  1 | 0    0    1\n----+-------------------\n    | 1/6  1/3  1/3  1/6' in rk4
    assert 'explicit order-4 Runge-Kutta step' in rk4 and 'h = 1' in rk4
    gill = render_card(timm.create_model('horesnet10_rk4', device='meta', scheme='gill4'))
    assert "`gill4`, Gill's fourth-order method" in gill and '1/3 - 1/6*sqrt(2)' in gill
    adaptive = render_card(timm.create_model('horesnet30_rk8_adaptive', device='meta'))
    assert 'order-8' in adaptive and 'h is learned, one per block' in adaptive and '-27/140' in adaptive
    lm = render_card(timm.create_model('horesnet58_lm', device='meta'))
    assert 'u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + F_n(u_n)' in lm


def test_card_command(tmp_path, capsys):
    out = tmp_path / 'README.md'
    assert main(['card', 'horesnet10_rk4', '--model-kwargs', 'scheme=gill4', '-o', str(out)]) == 0
    card = out.read_text()
    assert card.startswith('---\ntags:\n') and "(scheme='gill4')" in card
    assert main(['card', 'horesnet10_rk4']) == 0
    assert capsys.readouterr().out.count('# Model card for horesnet10_rk4') == 1
    assert main(['card', 'horesnet10_rk4', '--model-kwargs', 'scheme']) == 1
    assert 'not KEY=VALUE' in capsys.readouterr().err
