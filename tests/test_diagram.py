"""`horesnet draw`: the drawing is made from the tableau (one dot per non-zero coefficient), in the
formats asked for, and README's drawings are what the command makes from today's tableaus."""
from pathlib import Path

import pytest
from PIL import Image

from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.cli import main
from horesnet_timm.diagram import draw_scheme, fingerprint

REPO = Path(__file__).resolve().parents[1]
README_SCHEMES = ('euler', 'midpoint', 'rk4', 'verner8')


@pytest.mark.parametrize('name', list_schemes())
def test_one_dot_per_nonzero_coefficient(tmp_path, name):
    scheme = get_scheme(name)
    nonzero_a = sum(1 for i in range(scheme.stages) for j in range(i) if scheme.a[i][j] != 0)
    nonzero_b = sum(1 for v in scheme.b if v != 0)
    assert draw_scheme(name, str(tmp_path / 'd.png')) == (nonzero_a, nonzero_b)
    if name == 'verner8':
        assert (nonzero_a, nonzero_b) == (56, 8)  # the 8th-order weights use stages 1 and 8..14


def test_command_writes_png_and_svg(tmp_path, capsys):
    assert main(['draw', 'rk4', '-o', str(tmp_path / 'rk4.svg')]) == 0
    svg = (tmp_path / 'rk4.svg').read_text()
    assert svg.lstrip().startswith('<?xml') and f'tableau {fingerprint("rk4")}' in svg
    assert main(['draw', 'gill4', '-o', str(tmp_path / 'gill4.png')]) == 0
    assert Image.open(tmp_path / 'gill4.png').info['Description'] == f'horesnet draw gill4; tableau {fingerprint("gill4")}'
    assert 'wrote' in capsys.readouterr().out and sorted(p.name for p in tmp_path.iterdir()) == ['gill4.png', 'rk4.svg']


def test_bad_input(tmp_path, capsys):
    assert main(['draw', 'rk5', '-o', str(tmp_path / 'x.png')]) == 1
    assert "unknown scheme 'rk5'" in capsys.readouterr().err
    assert main(['draw', 'rk4', '-o', str(tmp_path / 'x.jpeg')]) == 2
    assert 'give a file ending in .png, .svg, .pdf' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('name', README_SCHEMES)
def test_readme_drawings_are_current(name):
    """Regenerate with: for s in euler midpoint rk4 verner8; do horesnet draw $s -o docs/schemes/$s.png; done"""
    path = REPO / 'docs' / 'schemes' / f'{name}.png'
    assert f'docs/schemes/{name}.png' in (REPO / 'README.md').read_text()
    assert Image.open(path).info.get('Description') == f'horesnet draw {name}; tableau {fingerprint(name)}', \
        f'{path} is stale: redraw it with `horesnet draw {name} -o docs/schemes/{name}.png`'


def test_labels_are_exact_or_marked_approximate():
    from horesnet_timm.diagram import _label
    b = get_scheme('verner8').b
    assert '1024/1365' in [_label(v) for v in b]  # not 0.75
    assert _label(get_scheme('verner8').a[4][0]) == '≈0.625'  # 4/375 + 94/375*sqrt(6)


def test_multistep_term_is_drawn(tmp_path):
    """LM-ResNet's block is not an Euler block: its drawing shows u_{n-1} joining the output."""
    import numpy as np

    def green_pixels(name):  # the multistep junctions' colour
        draw_scheme(name, str(tmp_path / f'{name}.png'))
        r, g, b = np.asarray(Image.open(tmp_path / f'{name}.png').convert('RGB')).astype(int).transpose(2, 0, 1)
        return int(((g > r + 50) & (g > b + 30)).sum())
    assert green_pixels('euler') == 0 and green_pixels('lm') > 50
