"""`horesnet demo` at reduced size: both models train, the plot is drawn, the ONNX file agrees with PyTorch
on the test PNGs, the staged Hub folder reloads through timm and scores the same, runs never overwrite
each other, and the same seed gives the same numbers. The full default run is under -m slow."""
import json
import os

import pytest
from PIL import Image

from horesnet_timm.commands import demo
from horesnet_timm.cli import main


def run_demo(*argv):
    assert main(['demo', *map(str, argv)]) == 0
    return argv


def check_run(folder, epochs):
    results = json.loads((folder / 'results.json').read_text())
    (ho, ho_r), (twin, twin_r) = results['models'].items()
    assert ho_r['scheme'] == 'rk4' and twin_r['scheme'] == 'euler' and ho_r['params'] == twin_r['params'] == 297290
    assert all(len(h) == epochs for h in results['histories'].values())
    with Image.open(folder / 'curves.png') as plot:
        assert plot.size[0] > 600 and plot.size[1] > 300
    assert len(os.listdir(folder / 'test_images')) == results['sizes']['test'] == 360
    # onnxruntime on the PNG files answers as PyTorch did on the same pixels
    assert results['onnx']['top1_agreement'] == 100.0 and results['onnx']['max_abs_error'] < 1e-4
    assert results['onnx']['top1'] == pytest.approx(ho_r['test_top1'])
    # the Hub folder reloads through timm with the very same logits, and its card carries this run's metric
    assert results['hub']['identical_logits'] and results['hub']['top1'] == pytest.approx(ho_r['test_top1'])
    card = (folder / 'hub' / 'README.md').read_text()
    assert f"| digits | test (360 images, seed-{results['seed']} split) | {round(ho_r['test_top1'], 2)} |" in card
    config = json.loads((folder / 'hub' / 'config.json').read_text())
    assert config['pretrained_cfg']['input_size'] == [1, 8, 8] and config['pretrained_cfg']['label_names'][7] == '7'
    return results


def test_demo_reduced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_demo('--epochs', '2')
    out = capsys.readouterr().out
    assert 'wrote horesnet-demo/run-1/' in out and 'agreement with PyTorch' in out and 'horesnet predict' in out
    first = check_run(tmp_path / 'horesnet-demo' / 'run-1', 2)
    # a second run makes its own folder; the same seed gives the same numbers
    run_demo('--epochs', '2')
    second = check_run(tmp_path / 'horesnet-demo' / 'run-2', 2)
    assert first['models'] == {k: {**v, 'train_seconds': first['models'][k]['train_seconds']}
                               for k, v in second['models'].items()}
    assert first['histories'] == second['histories']


def test_output_is_never_overwritten_unless_asked(tmp_path, capsys):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('x')
    assert main(['demo', '--output', str(tmp_path / 'mine'), '--epochs', '1']) == 2
    assert "already exists: choose another --output, or add --overwrite" in capsys.readouterr().err
    assert os.listdir(tmp_path / 'mine') == ['keep.txt']


def test_fashion_mnist_missing_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, 'FASHION_MNIST_DIR', str(tmp_path))
    assert main(['demo', '--data', 'fashion-mnist', '--output', str(tmp_path / 'run')]) == 1
    assert 'apt-get install dataset-fashion-mnist' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_demo_defaults_reach_an_accuracy_worth_showing(tmp_path):
    run_demo('--output', tmp_path / 'run')
    results = check_run(tmp_path / 'run', 12)
    assert all(r['test_top1'] > 95 for r in results['models'].values()), results['models']


@pytest.mark.parametrize('argv, message', [
    (['--seed', '-1'], 'argument --seed: -1 is not an integer >= 0'),
    (['--lr', 'nan'], "argument --lr: 'nan' is not a finite number"),
    (['--scheme', 'bogus'], '--scheme bogus: not a scheme; choose one of euler'),
    (['--twin-scheme', 'RK4'], '--twin-scheme RK4: not a scheme'),
    (['--model', 'resnet18'], '--model resnet18: the demo trains a CIFAR-layout horesnet model'),
    (['--data', 'fashion-mnist', '--train-size', '6'], '--train-size 6: give at least 7'),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(['demo', '--epochs', '1', *argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2 or code == 1
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and 'internal error' not in err, err  # after argparse's usage
    assert os.listdir(tmp_path) == []  # no empty horesnet-demo/ either


def test_an_existing_file_as_output_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / 'f').write_text('x')
    assert main(['demo', '--output', str(tmp_path / 'f'), '--overwrite']) == 2
    assert 'is a file; the demo writes a folder' in capsys.readouterr().err


@pytest.mark.parametrize('epochs', [1, 6])
def test_curves_have_readable_axes(tmp_path, monkeypatch, epochs):
    """Whole epochs on the x axis (a one-epoch run once showed 0.94..1.06), tick labels on the loss axis."""
    import matplotlib.figure
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', lambda fig, *a, **k: drawn.append(fig))
    history = lambda top, loss: [dict(epoch=e, val_acc=top - 5 / e, val_loss=loss / e ** 2) for e in range(1, epochs + 1)]
    demo.plot({'rk4': history(91.0, 0.9), 'euler': history(90.0, 1.0)}, tmp_path / 'c.png', 'title')
    for ax in drawn[0].axes:
        ax.figure.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        low, high = ax.get_ylim()
        assert sum(low <= t <= high for t in ax.get_yticks()) >= 2
        assert all(low < h['val_acc' if 'accuracy' in ax.get_title() else 'val_loss'] < high for h in history(90.0, 1.0))
