"""A block's data flow drawn from the tableau the block runs (`horesnet draw SCHEME -o file.png|.svg`).

The drawing is the Butcher tableau as a circuit. The block input x runs down a bus on the left.
Row i is stage i's input, x + h sum_j a_ij k_j: it leaves the bus and runs right into F_i, which
sits on the diagonal; F_i's output k_i runs down column i. Where column j crosses row i a dot
labelled a_ij adds k_j into that input; the last row is the output y = x + h sum_i b_i k_i, with a
dot per non-zero b_i. Crossings without a dot are zero coefficients. Labels are exact where short
(1/6, -27/140, 1024/1365), else marked approximate: ≈0.625 (Verner's sqrt(6) terms). LM-ResNet's
multistep rule adds the previous block's input u_{n-1} into the output with its learned weight k_n. The paper gave no flowchart
for Verner's 8th-order scheme "because of the complicated connections"; this one comes from the
same data as the block, and matplotlib draws it (lines, markers, boxes, arrows).
"""
import hashlib
import textwrap
from pathlib import Path
from typing import Optional, Tuple

from .schemes import get_scheme

__all__ = ['FORMATS', 'fingerprint', 'draw_scheme']

FORMATS = ('.png', '.svg', '.pdf')
LAYOUT = 2  # bump when the drawing changes, so committed drawings are known to be stale


def fingerprint(name: str) -> str:
    """What a drawing shows, as a short hash: the tableau and the layout version. Stored in the file's
    metadata, so a test can tell a committed drawing from a stale one whatever matplotlib's version."""
    scheme = get_scheme(name)
    data = repr((LAYOUT, scheme.name, scheme.order, scheme.title, scheme.a, scheme.b, scheme.c, scheme.multistep))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _label(value) -> str:
    """The exact coefficient when it is short (1/6, -27/140, 1024/1365), else 3 significant digits marked
    approximate, so that no label reads as an exact value it is not."""
    text = str(value)
    return text if len(text) <= 10 else f'≈{float(value):.3g}'


def draw_scheme(name: str, path: str, dpi: int = 100, fmt: Optional[str] = None) -> Tuple[int, int]:
    """Draw scheme `name` into `path` (png, svg or pdf: `fmt`, else the file's suffix); returns the numbers
    of a- and b-junctions."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    scheme = get_scheme(name)
    s = scheme.stages
    out = s + 1  # the output row, below the stages
    size = 1.0 + 0.75 * (s + 1)
    fig, ax = plt.subplots(figsize=(max(size + 1.6, 6.0), size + 0.9))
    ax.set_axis_off()
    ax.set_aspect('equal')
    wire = dict(color='#555555', lw=1.1, zorder=1)
    box = lambda color: dict(boxstyle='round,pad=0.3', facecolor=color, edgecolor='black')
    arrow = dict(arrowstyle='-|>', color='#555555', lw=1.1, shrinkA=0, shrinkB=11)

    ax.plot([0, 0], [0.6, -out], **wire)  # the bus carrying x
    ax.text(0, 0.75, 'x', ha='center', va='bottom', fontsize=13, bbox=box('#dddddd'))
    junctions_a = junctions_b = 0
    for i in range(s):
        row = -(i + 1)
        ax.annotate('', xy=(i + 1, row), xytext=(0, row), arrowprops=arrow)  # x + h sum_j a_ij k_j -> F_i
        ax.text(-0.35, row, f'Σ{i + 1}', ha='right', va='center', fontsize=9, color='#7a5c00')
        ax.text(i + 1, row, f'F{i + 1}', ha='center', va='center', fontsize=11, zorder=3, bbox=box('#c9e4ff'))
        ax.plot([i + 1, i + 1], [row - 0.3, -out], **wire)  # k_i, down to the output row
        for j in scheme.reads[i]:
            ax.plot(j + 1, row, 'o', color='#c0392b', ms=6, zorder=2)
            ax.text(j + 1.08, row + 0.1, _label(scheme.a[i][j]), fontsize=8, ha='left', va='bottom', zorder=4,
                    bbox=dict(boxstyle='round,pad=0.1', facecolor='white', edgecolor='none', alpha=0.9))
            junctions_a += 1
    ax.annotate('', xy=(s + 1.1, -out), xytext=(0, -out), arrowprops=dict(arrow, shrinkB=12))
    ax.text(s + 1.25, -out, 'y', ha='left', va='center', fontsize=13, bbox=box('#dddddd'))
    ax.text(-0.35, -out, 'out', ha='right', va='center', fontsize=9, color='#7a5c00')
    for i in range(s):
        if scheme.b[i] != 0:
            ax.plot(i + 1, -out, 'o', color='#1f6fb4', ms=6, zorder=2)
            ax.text(i + 1.08, -out + 0.1, _label(scheme.b[i]), fontsize=8, ha='left', va='bottom', zorder=4,
                    bbox=dict(boxstyle='round,pad=0.1', facecolor='white', edgecolor='none', alpha=0.9))
            junctions_b += 1
    bottom = -out - 0.8
    if scheme.multistep:  # y = x + k_n (u_{n-1} - x) + F(x): u_{n-1} joins the output row, x's weight drops by k_n
        ax.text(0.5, -out - 1.0, '$u_{n-1}$', ha='center', va='center', fontsize=11, bbox=box('#dddddd'))
        ax.annotate('', xy=(0.5, -out), xytext=(0.5, -out - 1.0), arrowprops=dict(arrow, shrinkA=10, shrinkB=0))
        for at, label, side in ((0, '$1 - k_n$', 'right'), (0.5, '$k_n$', 'left')):
            ax.plot(at, -out, 'o', color='#2e8b57', ms=6, zorder=2)
            ax.text(at + (0.08 if side == 'left' else -0.08), -out - 0.12, label, fontsize=8, ha=side, va='top',
                    zorder=4, bbox=dict(boxstyle='round,pad=0.1', facecolor='white', edgecolor='none', alpha=0.9))
        bottom -= 0.9
    ax.set_xlim(-1.2, s + 2.0)
    ax.set_ylim(bottom, 1.4)
    note = (' Green: the previous block\'s input u(n-1) joins y with the block\'s learned weight k(n), '
            'x with 1 - k(n) (LM-ResNet).' if scheme.multistep else '')
    title = (f'{scheme.name}: {scheme.title}, {s} stage{"s" * (s > 1)}, order {scheme.order}. Row i feeds Fi '
             f'x + h Σj aij kj; the last row is y = x + h Σi bi ki (h = 1, or learned per block in the adaptive '
             f'variant). Dots are the non-zero coefficients.{note}')
    ax.set_title(textwrap.fill(title, width=int(12 * max(size + 1.6, 6.0))), fontsize=9)
    fig.tight_layout()
    fmt = fmt or Path(path).suffix.lower()[1:]
    key = 'Description' if fmt == 'png' else 'Title'
    fig.savefig(path, format=fmt, dpi=dpi, metadata={key: f'horesnet draw {scheme.name}; tableau {fingerprint(name)}'})
    plt.close(fig)
    return junctions_a, junctions_b
