"""The house's floors: the model library below, the tools above; no module imports from a floor above its own.
And its front door: importing the package registers the models with timm whatever is imported first, and the
command line's help and torch-free runner import no torch.

Read from the source (every relative import, those inside functions included), so a lazy import cannot
hide a dependency. A new module must be given its floor here.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'horesnet_timm'

FLOORS = [
    # the library (`import horesnet_timm` loads these)
    ['errors', 'exact'],
    ['schemes', 'stage_plan', 'fileio', 'measure'],
    ['blocks', 'cifar_augment'],
    ['stages'],
    ['models.horesnet'],
    ['models.cifar', 'models.imagenet', 'checkpoint'],
    ['restacking'],
    ['models.restacked', 'models', 'loading'],
    # the tools above it: the torch-free runner, then everything that builds on the loader
    ['predict', 'diagram', 'cards'],
    ['onnx_export', 'hub'],
    ['commands', 'commands.arguments'],
    ['commands.bench', 'commands.card', 'commands.demo', 'commands.draw', 'commands.export', 'commands.hub',
     'commands.restack', 'commands.run', 'commands.tour'],
    ['cli', '__main__'],
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
def modules():
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(PACKAGE).with_suffix('').parts
        yield '.'.join(parts[:-1] if parts[-1] == '__init__' else parts) or 'horesnet_timm', path


def relative_imports(name: str, path: Path):
    package = name.split('.')[:-1] if path.name != '__init__.py' else name.split('.')
    package = [] if name == 'horesnet_timm' else package
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            if node.module:
                yield '.'.join(base + node.module.split('.'))
            else:  # from . import x: a module of the package, or a name of its __init__ (__version__)
                for alias in node.names:
                    target = '.'.join(base + [alias.name])
                    yield target if target in FLOOR else '.'.join(base) or 'horesnet_timm'


def test_every_module_has_a_floor():
    missing = [name for name, _ in modules() if name not in FLOOR and name != 'horesnet_timm']
    assert not missing, f'give these modules a floor in FLOORS: {missing}'


def with_packages(target: str, importer: str):
    """`target` and the packages above it that importing it runs, but the importer's own (already running)."""
    parts = target.split('.')
    for i in range(1, len(parts)):
        package = '.'.join(parts[:i])
        if not (importer + '.').startswith(package + '.'):
            yield package
    yield target


@pytest.mark.parametrize('name, path', list(modules()), ids=lambda v: v if isinstance(v, str) else '')
def test_no_import_runs_upward(name, path):
    """Nor through a package's __init__: restack's library once imported models.horesnet, whose package imports
    the restacked models, which import restack (a cycle that broke `import horesnet_timm.restack` first)."""
    if name == 'horesnet_timm':
        return  # the package's front: it imports the library's public names
    upward = sorted({module for target in relative_imports(name, path) for module in with_packages(target, name)
                     if module != 'horesnet_timm' and FLOOR[module] > FLOOR[name]})
    assert not upward, f'{name} (floor {FLOOR[name]}) imports from a floor above: {upward}'


# --- the package front: registration with timm, and what the command line imports ---------------------

def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


@pytest.mark.parametrize('first', [
    'import horesnet_timm; import timm',  # the README's order
    'import timm; import horesnet_timm',
    'from horesnet_timm import HoResNet',  # a name of the front, before timm
    'from horesnet_timm.blocks import SchemeBlock',  # a module that imports timm itself, half-way through
    'from horesnet_timm.restacking import FAMILIES',  # ... and one that the model modules import
])
def test_importing_registers_whatever_comes_first(first):
    done = python(f"{first}\nimport timm, horesnet_timm\nfrom horesnet_timm import restack\n"
                  "assert timm.list_models('horesnet58_rk4') and timm.list_pretrained('horesnet58w16_rk4.*')\n"
                  "assert callable(restack) and horesnet_timm.HoResNet.__name__ == 'HoResNet'\n"
                  "timm.create_model('horesnet10_rk4')")
    assert done.returncode == 0, done.stderr[-2000:]


def test_help_and_the_runner_start_without_torch(tmp_path):
    """`import horesnet_timm` alone, `horesnet --help` and `horesnet predict` import no torch (nor timm)."""
    done = python("import sys\nimport horesnet_timm\nfrom horesnet_timm.cli import main\n"
                  "for argv in (['--help'], ['predict', '--help'], ['predict', 'missing.onnx', 'a.png']):\n"
                  "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
                  "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == '[]', done.stdout + done.stderr
