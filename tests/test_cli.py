"""The command line's one convention: 0 success, 1 a failure named in one line, 2 a usage error,
130/143 after SIGINT/SIGTERM; --debug shows a traceback; a missing optional package names its extra."""
import subprocess
import sys

import pytest

from horesnet_timm.cli import main


def test_failure_is_one_line_and_debug_shows_the_traceback(capsys):
    assert main(['export', 'horesnet10_rk5']) == 1
    err = capsys.readouterr().err
    assert err.startswith("horesnet export: error: unknown model 'horesnet10_rk5'") and err.count('\n') == 1
    with pytest.raises(Exception, match="unknown model 'horesnet10_rk5'"):
        main(['--debug', 'export', 'horesnet10_rk5'])


def test_usage_errors_exit_2(capsys):
    for argv in (['export', 'horesnet10_rk4', '--opset', 'x'], ['nosuchcommand'], ['export', 'horesnet10_rk4', '--scheme', 'rk4']):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert main(['export', 'horesnet10_rk4', '--model', 'horesnet10_euler']) == 2  # contradictory, found after parsing
    assert "MODEL 'horesnet10_rk4' and --model 'horesnet10_euler' differ" in capsys.readouterr().err


def test_missing_optional_package_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, 'onnx', None)  # `import onnx` now fails as if it were not installed
    assert main(['export', 'horesnet10_rk4', '-o', str(tmp_path / 'x.onnx'), '--no-verify']) == 1
    assert "needs onnx, which is not installed: pip install 'horesnet-timm[onnx]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_is_reported_not_dumped(monkeypatch, capsys):
    def bug(args):
        raise ZeroDivisionError('division by zero')
    monkeypatch.setattr('horesnet_timm.commands.tour.run', bug)
    assert main(['tour']) == 1
    err = capsys.readouterr().err
    assert 'internal error (ZeroDivisionError: division by zero)' in err and '--debug' in err and 'Traceback' not in err


def test_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr('horesnet_timm.commands.tour.run', interrupted)
    assert main(['tour']) == 130


def test_broken_pipe_is_quiet(tmp_path):
    """`horesnet tour | head -1`: the reader leaves early; no traceback, no 'Exception ignored'."""
    result = subprocess.run(f'{sys.executable} -m horesnet_timm tour | head -1', shell=True,
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.startswith('horesnet-timm') and result.stderr == '', result.stderr


@pytest.mark.parametrize('argv', [['export', 'horesnet10_rk4', '-o', '\udcff\udcfe.onnx'],
                                  ['export', 'horesnet10_rk4', '--checkpoint', 'w\udcff.pth'],
                                  ['draw', 'rk4', '-o', '\udcff.png']])
def test_a_file_name_that_is_not_utf8_is_named_before_any_work(tmp_path, monkeypatch, capsys, argv):
    """Such a name (as the OS hands it to Python: surrogate escapes) once reached onnx's checker as a TypeError."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "is not valid UTF-8: rename the file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_is_not_utf8_is_shown_as_its_bytes(capsys):
    """As ls shows it (\\xff), not as Python's surrogate escape (\\udcff)."""
    assert main(['predict', 'm\udcff.onnx', 'a.png']) == 1
    assert "ONNX file 'm\\xff.onnx' does not exist" in capsys.readouterr().err
    from horesnet_timm.predict import printable
    assert printable('bad\ud800') == 'bad\\ud800'  # a surrogate no file name decodes to


def test_interrupt_while_the_command_imports_exits_130(monkeypatch, capsys):
    import horesnet_timm.cli

    def interrupted(only=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(horesnet_timm.cli, 'build_parser', interrupted)
    assert main(['export', 'horesnet10_rk4']) == 130
    assert capsys.readouterr().err == 'horesnet export: interrupted\n'


def test_an_output_that_is_also_an_input_is_refused_before_any_work(tmp_path, capsys):
    import timm
    from conftest import randomised, train_py_checkpoint
    record = tmp_path / 'eval.json'
    record.write_text('{"dataset": "d", "split": "test", "top1": 90, "epochs": 1, "seed": 0, "command": "x"}')
    checkpoint = train_py_checkpoint(tmp_path / 'ck.pth.tar', randomised(timm.create_model('horesnet10_rk4')),
                                     'horesnet10_rk4')
    (tmp_path / 'link.pth.tar').symlink_to(checkpoint)
    before = {p: p.read_bytes() for p in (record, tmp_path / 'ck.pth.tar')}
    assert main(['card', 'horesnet10_rk4', '--eval-json', str(record), '-o', str(record)]) == 2
    assert "is both this command's --output and its --eval-json" in capsys.readouterr().err
    assert main(['export', str(tmp_path / 'link.pth.tar'), '-o', checkpoint]) == 2  # the same file by another name
    assert "is both this command's --output and its MODEL" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before


def test_an_existing_output_that_is_no_input_is_replaced(tmp_path, capsys):
    (tmp_path / 'README.md').write_text('old')
    assert main(['card', 'horesnet10_rk4', '-o', str(tmp_path / 'README.md')]) == 0
    assert (tmp_path / 'README.md').read_text().startswith('---')
