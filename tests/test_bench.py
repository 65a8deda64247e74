"""`horesnet bench` measures and prints its tables, its chart says what it did not measure, and bad
counts or names are refused before any work."""
import json

import pytest

from horesnet_timm.cli import main


# --- horesnet bench ----------------------------------------------------------------------------

def test_bench_quick_prints_machine_versions_and_ratios(capsys, tmp_path):
    assert main(['bench', '--quick', '--output', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    machine = out.splitlines()[0]
    for part in ('CPUs', 'threads', 'python ', 'torch ', 'timm ', 'horesnet-timm '):
        assert part in machine
    assert 'median of 2 interleaved rounds' in out
    assert 'mode: eager' in out
    header = next(line for line in out.splitlines() if line.startswith('model'))
    for column in ('train ms', 'train xE', 'infer ms', 'infer xE', 'infer img/s', 'infer mem xE'):
        assert column in header
    euler = next(line for line in out.splitlines() if line.startswith('horesnet10_euler'))
    assert euler.split()[3] == '1.000'  # Euler against itself
    assert next(line for line in out.splitlines() if line.startswith('horesnet10_rk4'))
    saved = json.loads((tmp_path / 'bench-cpu.json').read_text())
    assert [r['model'] for r in saved['rows']] == ['horesnet10_euler', 'horesnet10_rk4']
    euler, rk4 = saved['rows']
    assert rk4['train_x'] == pytest.approx(rk4['train_ms'] / euler['train_ms'])  # the ratio is to Euler's row
    assert len(saved['rows'][1]['times']['train']) == 2
    assert '| model |' in (tmp_path / 'bench-cpu.md').read_text()
    assert (tmp_path / 'bench-cpu.png').read_bytes()[:4] == b'\x89PNG'


def test_bench_memory_probe_runs_in_a_fresh_process(capsys):
    """One model, one probe kind each: the growth is measured and is at least the maps it must hold."""
    assert main(['bench', '--quick', '--models', 'horesnet10_euler', '--memory', '--infer-batch', '16',
                 '--repeats', '1', '--warmup', '0']) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('horesnet10_euler'))
    train_mib, infer_mib = float(row.split()[8]), float(row.split()[10])
    assert train_mib > 1 and infer_mib >= 2 * 16 * 64 * 32 * 32 * 4 / 2 ** 20  # input and output of a conv


def test_bench_onnxruntime_mode(capsys):
    pytest.importorskip('onnxruntime')
    assert main(['bench', '--quick', '--models', 'horesnet10_euler', '--modes', 'onnxruntime', 'ort:raw',
                 '--repeats', '1']) == 0
    out = capsys.readouterr().out
    assert 'mode: onnxruntime' in out and 'mode: ort:raw' in out and 'vs eager' in out


def test_bench_refuses_unknown_models_and_modes(capsys):
    assert main(['bench', '--models', 'resnet50']) == 2
    assert main(['bench', '--modes', 'tensorrt']) == 2
    err = capsys.readouterr().err
    assert "--models 'resnet50': bench compares horesnet models" in err and "unknown mode 'tensorrt'" in err


@pytest.mark.parametrize('flag', [['--repeats', '0'], ['--train-batch', '0'], ['--infer-batch', '-1'],
                                  ['--ort-batch', '0'], ['--warmup', '-1']])
def test_bench_refuses_counts_out_of_range_rather_than_using_defaults(flag, capsys):
    """0 is a value given, not "unset": it must not quietly start the hour-long default run."""
    assert main(['bench', *flag]) == 2
    assert f'{flag[0]} must be at least' in capsys.readouterr().err


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, capsys):
    out = tmp_path / 'results'
    assert main(['bench', '--models', 'horesnet10_nope', '--output', str(out)]) != 0
    assert not out.exists()
    (tmp_path / 'file').write_text('x')
    assert main(['bench', '--quick', '--output', str(tmp_path / 'file')]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err


def test_chart_says_what_was_not_measured(tmp_path, monkeypatch):
    """An empty memory panel reads as "not measured", not as a cost of zero; a mode with no bars is named."""
    import matplotlib.figure
    from horesnet_timm.commands.bench import chart
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', lambda fig, *a, **k: drawn.append(fig))
    rows = [dict(model=m, scheme=s, mode=mode, train_x=1.5, infer_x=1.2, **({'infer_mem_x': 1.1} if mode == 'eager'
                                                                            else {}))
            for m, s in (('horesnet10_euler', 'euler'), ('horesnet10_rk4', 'rk4')) for mode in ('eager', 'compile')]
    chart(rows, str(tmp_path / 'c.png'), 'title')
    notes = {ax.get_title(): [t.get_text() for t in ax.texts if 'not measured' in t.get_text()] for ax in drawn[0].axes}
    assert notes['training step time / Euler at the same depth'] == []
    assert notes['training peak memory / Euler at the same depth'] == ['not measured\n(--no-memory or --quick)']
    assert notes['inference peak memory / Euler at the same depth'] == ['not measured: compile']
