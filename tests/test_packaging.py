"""The wheel's package list is explicit (hub_cards/ installs as horesnet_timm.hub_cards): it must name
every package of the source tree, or an installed `horesnet` would miss a module or its card template."""
from pathlib import Path

import pytest

try:
    import tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover
    tomllib = pytest.importorskip('tomli', reason='reading pyproject.toml needs Python >= 3.11 or tomli')

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    setuptools = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']
    listed = set(setuptools['packages'])
    found = {'.'.join(p.parent.relative_to(ROOT).parts) for p in (ROOT / 'horesnet_timm').rglob('__init__.py')}
    assert found <= listed, f'add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml'
    assert setuptools['package-dir']['horesnet_timm.hub_cards'] == 'hub_cards'
    assert (ROOT / 'hub_cards' / 'model_card.md').is_file()
    assert setuptools['package-data']['horesnet_timm.hub_cards'] == ['*.md']
