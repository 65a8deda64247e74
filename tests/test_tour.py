"""`horesnet tour` runs, and README's model table is what the code measures."""
import re
from pathlib import Path

import pytest

from horesnet_timm.cli import main
from horesnet_timm.measure import model_stats

README = Path(__file__).resolve().parents[1] / 'README.md'


def readme_model_rows():
    rows = re.findall(r'^\| (horesnet\w+) \| (\w+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \|', README.read_text(), re.M)
    assert rows, 'README has no model table'
    return rows


@pytest.mark.parametrize('row', readme_model_rows(), ids=lambda r: r[0])
def test_readme_model_table_is_measured(row):
    name, scheme, depth, params_m, gmacs = row
    live = model_stats(name)
    assert (live['scheme'], str(live['depth'])) == (scheme, depth)
    assert (f"{live['params_m']:.2f}", f"{live['gmacs']:.2f}") == (params_m, gmacs)


def test_readme_lists_every_model():
    import timm
    assert sorted(r[0] for r in readme_model_rows()) == sorted(timm.list_models('horesnet*'))


def test_cli_tour(capsys):
    assert main(['tour']) == 0
    out = capsys.readouterr().out
    assert 'verner8' in out and 'horesnet58_rk4' in out and 'timm 1.0' in out
