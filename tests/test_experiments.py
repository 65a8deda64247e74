"""The evidence tooling in experiments/fashion_mnist: the held-out split, resumed train.py outputs, epoch times,
and the shipped tags staged from the runs."""
import json
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / 'experiments' / 'fashion_mnist'
sys.path.insert(0, str(HERE))
import results  # noqa: E402
import run_queue  # noqa: E402
import ship  # noqa: E402
import split  # noqa: E402

SOURCE = Path('/usr/share/datasets/fashion-mnist')


@pytest.mark.skipif(not (SOURCE / 'train-images-idx3-ubyte.gz').is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_split_holds_out_the_recorded_images(tmp_path):
    import gzip
    assert split.main([str(tmp_path)]) == 0
    _, _, images = split.read_idx(gzip.decompress((SOURCE / 'train-images-idx3-ubyte.gz').read_bytes()))
    _, _, labels = split.read_idx(gzip.decompress((SOURCE / 'train-labels-idx1-ubyte.gz').read_bytes()))
    raw = tmp_path / 'trainval' / 'FashionMNIST' / 'raw'
    _, shape, train = split.read_idx((raw / 'train-images-idx3-ubyte').read_bytes())
    _, _, val = split.read_idx((raw / 't10k-images-idx3-ubyte').read_bytes())
    _, _, val_labels = split.read_idx((raw / 't10k-labels-idx1-ubyte').read_bytes())
    indices = split.validation_indices()
    assert shape[1:] == (28, 28) and (len(train), len(val)) == (55000, 5000)
    assert val == [images[i] for i in indices] and val_labels == [labels[i] for i in indices]
    held_out = set(indices)
    assert train[:100] == [x for i, x in enumerate(images) if i not in held_out][:100]
    # torchvision reads the folders as the layout train.py uses
    from torchvision.datasets import FashionMNIST
    assert len(FashionMNIST(str(tmp_path / 'trainval'), train=False)) == 5000
    assert len(FashionMNIST(str(tmp_path / 'test'), train=False)) == 10000


def test_split_refuses_a_missing_source(tmp_path, capsys):
    assert split.main([str(tmp_path / 'out'), '--source', str(tmp_path)]) == 1
    assert 'dataset-fashion-mnist' in capsys.readouterr().err and not (tmp_path / 'out').exists()


def test_resumed_summary_keeps_the_last_row_of_each_epoch(tmp_path):
    header = 'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n'
    (tmp_path / 'summary.csv').write_text(
        header + '0,2.0,1.0,80.0,99,0.01\n1,1.0,0.5,85.0,99,0.1\n'
        + header + '1,1.1,0.6,84.0,99,0.1\n2,0.9,0.4,84.0,99,0.05\n')  # resumed: epoch 1 redone
    rows = run_queue.summary_rows(tmp_path / 'summary.csv')
    assert [r['epoch'] for r in rows] == ['0', '1', '2'] and rows[1]['eval_top1'] == '84.0'
    assert run_queue.best_epoch(rows) == '1'  # the first of the tied best, as train.py's own saver


def test_epoch_seconds_skip_an_interrupted_epoch(tmp_path):
    log = tmp_path / 'train.log'
    log.write_text('\n'.join([
        '100.0 $ python train.py',
        '101.0 Train: 0 [   0/429 (  0%)]  Loss: 2.3',
        '150.0 Train: 0 [ 428/429 (100%)]  Loss: 1.0',
        '155.0 Test: [  39/39]  Acc@1: 80.0',
        '156.0 Train: 1 [   0/429 (  0%)]  Loss: 1.0',  # stopped here
        '300.0 $ python train.py --resume last.pth.tar',
        '302.0 Train: 1 [   0/429 (  0%)]  Loss: 1.0',
        '362.0 Test: [  39/39]  Acc@1: 85.0',
    ]) + '\n')
    assert results.epoch_seconds(log) == {0: 54.0, 1: 60.0}


def _grid(test_top1):
    """A grid of finished runs with these test scores ({scheme: [seed 0, seed 1, ...]})."""
    run = {'val_top1': 90.0, 'selected_epoch': 7, 'epochs_to': {90.0: 8, 92.0: None}, 'train_loss_end': 0.3,
           'seconds_per_epoch': 300.0}
    return {scheme: {seed: dict(run, test_top1=top1) for seed, top1 in enumerate(scores)}
            for scheme, scores in test_top1.items()}


@pytest.mark.parametrize('midpoint, expected', [
    # differences +1, +2, +3: mean 2, std 1, half-width 4.303 / sqrt(3) = 2.484
    ([91.0, 92.0, 93.0], '-0.48 to +4.48 (includes 0)'),
    # differences +2.0, +2.1, +1.9: std 0.1, half-width 0.248
    ([92.0, 92.1, 91.9], '+1.75 to +2.25 (excludes 0)'),
    # pairs only where both ran; two pairs: mean 1.5, std 0.707, half-width 12.706 * 0.707 / sqrt(2) = 6.353
    ([91.0, 92.0], '-4.85 to +7.85 (includes 0)'),
    ([91.0], '-'),                                        # one pair has no spread
])
def test_paired_difference_says_whether_its_95_percent_interval_excludes_zero(midpoint, expected):
    table = results.grid_tables(_grid({'euler': [90.0, 90.0, 90.0], 'midpoint': midpoint}))
    paired = table.split('| scheme - euler (same seed) |')[1]
    row = next(line for line in paired.splitlines() if line.startswith('| midpoint | '))
    assert row.split(' | ')[-1].rstrip(' |') == expected


def test_t_quantiles_are_students():
    stats = pytest.importorskip('scipy.stats')
    for dof, quantile in results.T_975.items():
        assert quantile == pytest.approx(stats.t.ppf(0.975, dof), abs=5e-4)


def test_cost_is_read_from_one_invocation_that_measured_every_scheme(tmp_path):
    def row(scheme, rate, stamp, channels_last=True):
        return json.dumps({'model': f'horesnet58w16_{scheme}', 'channels_last': channels_last, 'compile': False,
                           'images_per_s': rate, 'steps': 20, 'threads': 2, 'torch': 't', 'cpu': 'c',
                           'invocation': stamp})
    schemes = run_queue.SCHEMES
    pilot = tmp_path / 'pilot.jsonl'
    pilot.write_text('\n'.join(
        [row(s, 100.0, 'A') for s in schemes]               # complete
        + [row(s, 50.0, 'B') for s in schemes]
        + [row('euler', 999.0, 'B', channels_last=False)]   # another setting: not the runs'
        + [row(s, 1.0, 'C') for s in schemes[:-1]]) + '\n')  # latest, but a scheme is missing
    table = results.cost_table(pilot)
    assert '(B,' in table and '| euler | 50 | 1100 | 1.00 |' in table and '999' not in table
    pilot.write_text(row('euler', 1.0, 'A') + '\n')
    assert 'not measured yet' in results.cost_table(pilot)


def _finished_run(runs, work, scheme, seed, val, test):
    """A grid run as run_queue.py leaves it: outputs in runs/, the selected epoch's checkpoint in work/."""
    import timm
    import horesnet_timm  # noqa: F401
    from conftest import randomised, train_py_checkpoint
    name = f'horesnet58w16_{scheme}-s{seed}'
    (runs / name).mkdir(parents=True)
    (work / name).mkdir(parents=True)
    (runs / name / 'summary.csv').write_text(
        f'epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n0,1.0,0.9,50.0,90,0.1\n1,0.5,0.4,{val},99,0.01\n')
    (runs / name / 'train.log').write_text('')
    (runs / name / 'test.json').write_text(json.dumps({'top1': test, 'top5': 99.5}))
    command = ['VENV/bin/python', 'TIMM/train.py', '-c', 'SRC/configs/fashion_mnist/a.yaml',
               '--data-dir', 'DATA/trainval', '--output', 'CKPTS', '--seed', str(seed)]
    validate = ['VENV/bin/horesnet', 'run', 'TIMM/validate.py', '--checkpoint',
                f'CKPTS/{name}/checkpoint-1.pth.tar', '--results-file', f'RUNS/{name}/test.json', '--device', 'cpu']
    (runs / name / 'run.json').write_text(json.dumps({
        'epochs': 2, 'selected_epoch': 1, 'finished': True, 'validate_command': validate,
        'invocations': [{'command': command}]}))
    model = randomised(timm.create_model(f'horesnet58w16_{scheme}', in_chans=1), seed=seed)
    train_py_checkpoint(work / name / 'checkpoint-1.pth.tar', model, f'horesnet58w16_{scheme}', ema=False,
                        dataset='torch/fashion_mnist', num_classes=10, in_chans=1, input_size=[1, 28, 28],
                        mean=[0.286], std=[0.353], epochs=2, seed=seed)
    return model


def test_ship_picks_the_seed_best_on_validation_never_test(tmp_path, monkeypatch, capsys):
    import timm
    import torch
    runs, work, weights = tmp_path / 'runs', tmp_path / 'work', tmp_path / 'weights'
    weights.mkdir()
    monkeypatch.setattr(ship, 'WEIGHTS', weights)
    _finished_run(runs, work, 'rk4', 0, val=80.0, test=85.0)  # the better test score: must not matter
    chosen = _finished_run(runs, work, 'rk4', 1, val=81.0, test=84.0).eval()
    assert ship.main(['--work', str(work), '--runs', str(runs)]) == 0
    record = json.loads((weights / 'horesnet58w16_rk4.fmnist' / 'eval.json').read_text())
    assert record['selected'] == {'run': 'horesnet58w16_rk4-s1', 'by': 'validation top-1', 'of_seeds': [0, 1]}
    assert (record['top1'], record['seed'], record['validation']) == (84.0, 1, {'images': 5000, 'top1': 81.0,
                                                                               'epoch': 1})
    assert ('python experiments/fashion_mnist/split.py DATA && python train.py -c configs/fashion_mnist/a.yaml --data-dir DATA/trainval --output CKPTS --seed 1 && '
            'horesnet run validate.py --checkpoint CKPTS/horesnet58w16_rk4-s1/checkpoint-1.pth.tar --device cpu'
            ) in record['command']
    staged = timm.create_model(f'local-dir:{weights / "horesnet58w16_rk4.fmnist"}', pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():  # published for RGB: R = G = B gives the grey model's outputs
        assert torch.allclose(staged(x.expand(-1, 3, -1, -1)), chosen(x), atol=1e-5)
    assert '| 84.0 |' in (weights / 'horesnet58w16_rk4.fmnist' / 'README.md').read_text()
    capsys.readouterr()
    assert ship.main(['--work', str(work), '--runs', str(runs)]) == 0
    assert 'rk4.fmnist: already staged from horesnet58w16_rk4-s1' in capsys.readouterr().out
    weights_file = (weights / 'horesnet58w16_rk4.fmnist' / 'model.safetensors').read_bytes()
    _finished_run(runs, work, 'rk4', 2, val=80.5, test=90.0)  # a later seed, worse on validation
    assert ship.main(['--work', str(work), '--runs', str(runs)]) == 0
    record = json.loads((weights / 'horesnet58w16_rk4.fmnist' / 'eval.json').read_text())
    assert record['selected']['of_seeds'] == [0, 1, 2] and record['seed'] == 1
    assert (weights / 'horesnet58w16_rk4.fmnist' / 'model.safetensors').read_bytes() == weights_file
    assert [p.name for p in weights.iterdir()] == ['horesnet58w16_rk4.fmnist']
    assert not list(weights.rglob('.*'))  # no temporary left
    (runs / 'horesnet58w16_rk4-s1' / 'test.json').write_text(json.dumps({'top1': 84.5, 'top5': 99.5}))
    with pytest.raises(SystemExit, match='its top1 changed since'):  # never a record that is not its weights'
        ship.main(['--work', str(work), '--runs', str(runs)])


def test_finished_runs_name_no_folder_of_their_machine(tmp_path):
    """A finished run's files name the queue's folders by placeholders, the longest folder first (the
    checkpoints here lie inside the data folder), in the repository's runs and in a fresh run alike."""
    from argparse import Namespace
    args = Namespace(data=tmp_path / 'd', work=tmp_path / 'd' / 'ckpt', python=str(tmp_path / 'venv/bin/python'),
                     train_py=tmp_path / 'timm' / 'train.py', runs=tmp_path / 'runs')
    (tmp_path / 'runs' / 'r').mkdir(parents=True)
    log = tmp_path / 'runs' / 'r' / 'train.log'
    log.write_text(f"$ {args.python} {args.train_py} --data-dir {args.data}/trainval --output {args.work}\n"
                   f"Loaded '{args.work}/r/last.pth.tar'; wrote {args.runs}/r/test.json\n")
    assert run_queue.redact(log.parent, run_queue.placeholders(args))
    assert log.read_text() == ("$ VENV/bin/python TIMM/train.py --data-dir DATA/trainval --output CKPTS\n"
                               "Loaded 'CKPTS/r/last.pth.tar'; wrote RUNS/r/test.json\n")
    assert not run_queue.redact(log.parent, run_queue.placeholders(args))  # nothing left to replace
    for path in sorted((HERE / 'runs').glob('*/*')):
        text = path.read_text(encoding='utf-8')
        if json.loads((path.parent / 'run.json').read_text()).get('finished'):  # one in progress keeps them
            assert not re.search(r'(^|[\s\'"=])/(?!dev/)\w', text, re.M), f'{path} names a folder of its machine'


def test_shipped_tags_are_their_runs_best_seed():
    """Each shipped tag's record agrees with the run it names in runs/: its test and validation scores, and
    chosen from every finished seed of its scheme, none scoring higher on validation."""
    from horesnet_timm.models.cifar import SHIPPED, WEIGHTS
    grid = results.read_grid(HERE / 'runs')
    for tag in SHIPPED:
        record = json.loads((WEIGHTS / tag / 'eval.json').read_text())
        scheme = tag.split('.')[0].split('_', 1)[1]
        assert record['selected']['of_seeds'] == sorted(grid[scheme]), f'{tag}: run ship.py for the new seeds'
        runs = grid[scheme]
        assert record['selected']['run'] == f'{tag.split(".")[0]}-s{record["seed"]}'
        assert record['top1'] == runs[record['seed']]['test_top1']
        assert record['validation']['top1'] == runs[record['seed']]['val_top1']
        assert record['validation']['top1'] == max(run['val_top1'] for run in runs.values())


@pytest.mark.parametrize('train_loss, val_top1, expected', [
    (float('nan'), 9.9, 'diverged'),
    (116.0, 10.02, 'diverged'),  # exploded, then settled at chance: still diverged
    (2.33, 12.46, 'did not learn'),  # the loss stayed at chance's ln 10 all epoch
    (2.32, 10.02, 'did not learn'),
    (1.57, 54.12, 'trained'),
])
def test_sweep_outcome_tells_divergence_from_not_learning(train_loss, val_top1, expected):
    assert results.sweep_outcome(train_loss, val_top1) == expected


def test_results_refuse_a_page_without_both_markers_and_write_nothing(tmp_path, monkeypatch, capsys):
    page = f'# Results\n\n{results.BEGIN}\nold tables\n\n## Reading\n\nwritten by hand\n'  # the end marker lost
    (tmp_path / 'RESULTS.md').write_text(page)
    (tmp_path / 'runs').mkdir()
    monkeypatch.setattr(results, 'HERE', tmp_path)
    with pytest.raises(SystemExit) as exit_:
        results.main(['--runs', str(tmp_path / 'runs'), '--write'])
    assert results.END in str(exit_.value) and 'git checkout' in str(exit_.value)
    assert (tmp_path / 'RESULTS.md').read_text() == page
    assert sorted(p.name for p in tmp_path.iterdir()) == ['RESULTS.md', 'runs']


def test_results_json_is_strict_json_with_a_diverged_loss_as_null(tmp_path, monkeypatch):
    (tmp_path / 'RESULTS.md').write_text(f'{results.BEGIN}\n{results.END}\nreading\n')
    run = tmp_path / 'runs' / 'horesnet86w16_euler-lr2x-s0'
    run.mkdir(parents=True)
    (run / 'run.json').write_text('{"finished": true}')
    (run / 'summary.csv').write_text('epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n0,nan,nan,9.9,50.0,0.2\n')
    monkeypatch.setattr(results, 'HERE', tmp_path)
    assert results.main(['--runs', str(tmp_path / 'runs'), '--write']) == 0
    record = json.loads((tmp_path / 'results.json').read_text(), parse_constant=lambda name: pytest.fail(name))
    assert record['sweep']['horesnet86_euler@x2'] == {'train_loss': None, 'eval_loss': None, 'val_top1': 9.9,
                                                      'outcome': 'diverged'}
    assert (tmp_path / 'RESULTS.md').read_text().endswith(f'{results.END}\nreading\n')
    assert (tmp_path / 'lr_sweep.png').read_bytes()[:4] == b'\x89PNG'
