"""timm's own model test-suite (its tests/test_models.py) over our registered names.

timm holds every model in its registry to that file. It runs in a subprocess from the folder that
holds the tests folder, with the plugin loaded before collection (`-p horesnet_timm`), as the
copy's README says. The file is timm's, not ours to ship: it is found through TIMM_TESTS_DIR, or
in ../shared/timm-tests beside this checkout when that copy is the installed timm's version;
otherwise the test skips (a fresh clone has no ../shared).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import horesnet_timm  # noqa: F401  registers the models

REPO = Path(__file__).resolve().parents[1]
ALL_MODELS = timm.list_models('horesnet*')
# every code path once: Euler; RK blocks with taps inside and between them; one Verner-8 block with
# a learnt step size; LM; the ImageNet layout with basic and with bottleneck sub-networks
DEFAULT_MODELS = [
    'horesnet10_euler', 'horesnet18_rk4', 'horesnet30_rk8_adaptive', 'horesnet58_lm',
    'horesnet32i_rk4', 'horesnet50i_lm',
]
# forward, backward, default_cfgs, torchscript, forward_features, and FX forward / backward / torchscript
TESTS_PER_MODEL = 8


def timm_tests_dir() -> Path:
    if os.environ.get('TIMM_TESTS_DIR'):
        path = Path(os.environ['TIMM_TESTS_DIR'])
        assert (path / 'test_models.py').is_file(), f'TIMM_TESTS_DIR={path} holds no test_models.py'
        return path
    path = REPO.parent / 'shared' / 'timm-tests'
    readme = path / 'README.md'
    found = re.search(r'timm (\d+\.\d+\.\d+)', readme.read_text()) if readme.is_file() else None
    if not (path / 'test_models.py').is_file() or not found:
        pytest.skip(f"no copy of timm's tests/test_models.py at {path}: set TIMM_TESTS_DIR to a folder "
                    f"holding the one from timm {timm.__version__}'s sdist (with its conftest.py)")
    if found.group(1) != timm.__version__:
        pytest.skip(f'{path} holds the tests of timm {found.group(1)}, not of the installed {timm.__version__}: '
                    f"set TIMM_TESTS_DIR to a copy from timm {timm.__version__}'s sdist")
    return path


def run_timm_suite(names, tests_per_model=TESTS_PER_MODEL):
    path = timm_tests_dir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    env.pop('GITHUB_ACTIONS', None)  # on GitHub runners timm leaves out its FX + TorchScript test: run all
    env.pop('PYTEST_ADDOPTS', None)  # the outer run's options are not timm's
    selection = ' or '.join(f'{name}]' for name in names)  # ids end '-<name>]': no name selects a longer one
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'horesnet_timm', '-p', 'no:cacheprovider', '-q',
         f'{path.name}/test_models.py', '-k', selection],
        cwd=path.parent, env=env, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else result.stderr.strip()[-2000:]
    counts = {word: int(n) for n, word in re.findall(r'(\d+) (\w+)', summary)}
    expected = tests_per_model * len(names)
    ok = result.returncode == 0 and counts.get('passed') == expected and not (
        counts.keys() & {'failed', 'error', 'errors', 'skipped', 'xfailed', 'xpassed'})
    assert ok, (f'timm {timm.__version__} test_models.py over {len(names)} names: {summary!r} '
                f'(expected {expected} passed, nothing else)\n' + result.stdout[-6000:])


def test_timm_suite_on_representatives():
    run_timm_suite(DEFAULT_MODELS)


def test_timm_suite_on_the_shipped_pretrained_tags():
    """timm runs its pretrained-cfg tests (default_cfgs, and forward / backward at the cfg's size) over every
    tag: a shipped config must describe the model at its own input size (pool_size included)."""
    run_timm_suite(timm.list_pretrained('horesnet*'), tests_per_model=3)


@pytest.mark.slow
def test_timm_suite_on_every_registered_name():
    run_timm_suite(ALL_MODELS)
