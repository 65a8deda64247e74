"""The house's floors: the model library below, the tools above; no module imports from a floor above its own.

Read from the source (every relative import, those inside functions included), so a lazy import cannot
hide a dependency. A new module must be given its floor here.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'horesnet_timm'

FLOORS = [
    # the library (`import horesnet_timm` loads these)
    ['errors', 'exact'],
    ['schemes', 'stage_plan', 'fileio', 'measure'],
    ['blocks', 'cifar_augment'],
    ['models.horesnet'],
    ['models.cifar', 'models.imagenet', 'checkpoint'],
    ['restack'],
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


@pytest.mark.parametrize('name, path', list(modules()), ids=lambda v: v if isinstance(v, str) else '')
def test_no_import_runs_upward(name, path):
    if name == 'horesnet_timm':
        return  # the package's front: it imports the library's public names
    upward = [target for target in relative_imports(name, path)
              if target != 'horesnet_timm' and FLOOR[target] > FLOOR[name]]
    assert not upward, f'{name} (floor {FLOOR[name]}) imports from a floor above: {upward}'
