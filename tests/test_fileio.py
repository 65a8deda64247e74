"""Outputs appear complete or not at all: a signal at any moment after the temporary twin exists removes it."""
import os

import pytest

from horesnet_timm import fileio
from horesnet_timm.fileio import atomic_output


@pytest.mark.parametrize('directory', [False, True])
def test_a_signal_right_after_creating_the_twin_leaves_nothing(tmp_path, monkeypatch, directory):
    """The window a SIGTERM once hit by luck (a twin created, its clean-up not yet armed), hit on purpose: the
    CLI raises SIGTERM as SystemExit, here raised by the very call that creates the twin."""
    real = os.mkdir if directory else os.open

    def create_then_signal(path, *args, **kwargs):
        result = real(path, *args, **kwargs)
        if not directory:
            os.close(result)
        raise SystemExit(143)
    monkeypatch.setattr(fileio.os, 'mkdir' if directory else 'open', create_then_signal)
    with pytest.raises(SystemExit):
        with atomic_output(tmp_path / 'out', directory=directory):
            pass
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('directory', [False, True])
def test_a_signal_before_the_rename_leaves_nothing(tmp_path, monkeypatch, directory):
    def signal_instead(*args):
        raise SystemExit(129)
    monkeypatch.setattr(fileio.os, 'replace', signal_instead)
    with pytest.raises(SystemExit):
        with atomic_output(tmp_path / 'out', directory=directory) as tmp:
            (tmp / 'file').write_text('x') if directory else tmp.write_text('x')
    assert os.listdir(tmp_path) == []


def test_the_result_has_the_modes_of_open_and_mkdir(tmp_path):
    mask = fileio.umask()
    with atomic_output(tmp_path / 'f') as tmp:
        tmp.write_text('x')
    with atomic_output(tmp_path / 'd', directory=True):
        pass
    assert (tmp_path / 'f').stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / 'd').stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_signal_python_swallowed_still_stops_the_output(tmp_path, monkeypatch):
    """A SIGHUP landing in a weakref callback (importlib's module locks have them): its SystemExit is only printed
    as "Exception ignored", the command runs on, and its output must still not appear (once seen in CI)."""
    import signal
    import weakref
    from horesnet_timm import cli
    from horesnet_timm.commands import draw

    real = draw.draw_scheme

    def draw_and_get_signalled(*args, **kwargs):
        class Referent:
            pass
        referent = Referent()
        watch = weakref.ref(referent, lambda _: cli._terminate(signal.SIGHUP, None))
        del referent  # the callback runs here; Python swallows its SystemExit
        assert watch() is None
        return real(*args, **kwargs)
    monkeypatch.setattr(draw, 'draw_scheme', draw_and_get_signalled)
    with pytest.raises(SystemExit) as stop:
        cli.main(['draw', 'rk4', '-o', str(tmp_path / 'rk4.png')])
    assert stop.value.code == 128 + signal.SIGHUP
    assert list(tmp_path.iterdir()) == []
    from horesnet_timm import fileio
    assert fileio.signalled is None  # the record ends with the command: later outputs in this process appear
