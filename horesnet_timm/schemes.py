"""Stacking schemes as data: exact explicit Butcher tableaus, plus the LM-ResNet multistep rule.

A block that follows tableau (A, b, c) over sub-networks F_1..F_s computes

    k_i = F_i(x + h * sum_{j<i} a_ij k_j)        y = x + h * sum_i b_i k_i

so an s-stage block has exactly the weights of s Euler (plain residual) blocks. Every tableau
checks itself when built: shapes, A strictly lower triangular, rows of A summing to c, and the
quadrature conditions sum_i b_i c_i^(k-1) = 1/k for k up to its order. The full order claim is
proven by a convergence test (tests/test_schemes.py), not by this docstring.

Coefficients are exact (see `exact.py`): none is copied as a decimal, and none comes from the
HO-ResNet authors' code, whose RK8 weights carry a sign error.
"""
from dataclasses import dataclass, field
from fractions import Fraction as F
from typing import Dict, List, Mapping, Sequence, Tuple, Union

from .exact import Exact, QuadraticSurd, sqrt, to_exact

__all__ = ['Scheme', 'make_scheme', 'list_schemes', 'get_scheme']

Row = Union[Sequence[Exact], Mapping[int, Exact]]


@dataclass(frozen=True)
class Scheme:
    """An explicit scheme. `a` is the full s x s matrix (rows), `b` and `c` have s entries.

    `multistep` marks the LM-ResNet rule: each block has one stage (a = [[0]], b = [1]) and also
    mixes in the previous block's input with a learnable k_n.
    """
    name: str
    order: int
    a: Tuple[Tuple[QuadraticSurd, ...], ...]
    b: Tuple[QuadraticSurd, ...]
    c: Tuple[QuadraticSurd, ...]
    title: str = ''
    multistep: bool = False
    # per stage, the earlier stages whose k it reads (a_ij != 0); used to free k_j early
    reads: Tuple[Tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        s = len(self.b)
        if s < 1 or len(self.c) != s or len(self.a) != s or any(len(row) != s for row in self.a):
            raise ValueError(f'scheme {self.name!r}: A must be {s}x{s} and c must have {s} entries')
        for i, row in enumerate(self.a):
            if any(row[j] != 0 for j in range(i, s)):
                raise ValueError(f'scheme {self.name!r}: row {i + 1} of A is not strictly lower triangular')
            if sum(row, QuadraticSurd(F(0))) != self.c[i]:
                raise ValueError(f'scheme {self.name!r}: row {i + 1} of A sums to {sum(row)}, not c = {self.c[i]}')
        if self.order < 1:
            raise ValueError(f'scheme {self.name!r}: order must be >= 1')
        for k in range(1, self.order + 1):  # quadrature (bushy tree) conditions, cheap and exact
            moment = sum((bi * ci ** (k - 1) for bi, ci in zip(self.b, self.c)), QuadraticSurd(F(0)))
            if moment != F(1, k):
                raise ValueError(
                    f'scheme {self.name!r}: sum(b * c^{k - 1}) = {moment}, not 1/{k}; '
                    f'it cannot have order {self.order}')
        object.__setattr__(self, 'reads', tuple(
            tuple(j for j in range(i) if row[j] != 0) for i, row in enumerate(self.a)))

    @property
    def stages(self) -> int:
        return len(self.b)

    def as_floats(self) -> Tuple[List[List[float]], List[float]]:
        """(A, b) as correctly rounded floats, for building a block."""
        return [[float(v) for v in row] for row in self.a], [float(v) for v in self.b]


def make_scheme(name: str, order: int, title: str, c: Sequence[Exact], rows: Sequence[Row], b: Row) -> Scheme:
    """Build a scheme from the lower-triangular rows of stages 2..s.

    A row is a dense list (stage i lists a_i1..a_i(i-1)) or, for sparse tableaus, a dict
    {column: value} with 1-based columns as in the literature.
    """
    s = len(c)

    def dense(row: Row, width: int) -> Tuple[QuadraticSurd, ...]:
        if isinstance(row, Mapping):
            values = [0] * width
            for col, value in row.items():
                values[col - 1] = value
            row = values
        return tuple(to_exact(v) for v in row) + (to_exact(0),) * (s - len(row))

    if len(rows) != s - 1:
        raise ValueError(f'scheme {name!r}: {s} nodes need {s - 1} rows of A below the first')
    a = (dense([], 0),) + tuple(dense(row, i + 1) for i, row in enumerate(rows))
    return Scheme(name, order, a, dense(b, s), tuple(to_exact(v) for v in c), title=title)


S2, S6 = sqrt(2), sqrt(6)

_SCHEMES: Dict[str, Scheme] = {s.name: s for s in [
    make_scheme('euler', 1, 'forward Euler (a plain residual block)', c=[0], rows=[], b=[1]),
    make_scheme('midpoint', 2, 'explicit midpoint', c=[0, F(1, 2)], rows=[[F(1, 2)]], b=[0, 1]),
    make_scheme('heun', 2, "Heun's method (explicit trapezoid)", c=[0, 1], rows=[[1]], b=[F(1, 2), F(1, 2)]),
    # Ralston's method is the 2/3 method (minimum error bound). Many codes copied a 3/4 variant
    # that is also second order, so the order test alone would not catch the swap.
    make_scheme('ralston', 2, "Ralston's method", c=[0, F(2, 3)], rows=[[F(2, 3)]], b=[F(1, 4), F(3, 4)]),
    make_scheme(
        'rk3', 3, "Kutta's third-order method", c=[0, F(1, 2), 1],
        rows=[[F(1, 2)], [-1, 2]], b=[F(1, 6), F(2, 3), F(1, 6)]),
    make_scheme(
        'heun3', 3, "Heun's third-order method", c=[0, F(1, 3), F(2, 3)],
        rows=[[F(1, 3)], [0, F(2, 3)]], b=[F(1, 4), 0, F(3, 4)]),
    make_scheme(
        'ssprk3', 3, 'strong-stability-preserving RK3 (Shu-Osher)', c=[0, 1, F(1, 2)],
        rows=[[1], [F(1, 4), F(1, 4)]], b=[F(1, 6), F(1, 6), F(2, 3)]),
    make_scheme(
        'rk4', 4, 'classic Runge-Kutta 4', c=[0, F(1, 2), F(1, 2), 1],
        rows=[[F(1, 2)], [0, F(1, 2)], [0, 0, 1]], b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)]),
    make_scheme(
        'rk38', 4, "Kutta's 3/8 rule", c=[0, F(1, 3), F(2, 3), 1],
        rows=[[F(1, 3)], [F(-1, 3), 1], [1, -1, 1]], b=[F(1, 8), F(3, 8), F(3, 8), F(1, 8)]),
    make_scheme(
        'gill4', 4, "Gill's fourth-order method", c=[0, F(1, 2), F(1, 2), 1],
        rows=[[F(1, 2)], [(S2 - 1) / 2, (2 - S2) / 2], [0, -S2 / 2, (2 + S2) / 2]],
        b=[F(1, 6), (2 - S2) / 6, (2 + S2) / 6, F(1, 6)]),
    make_scheme(
        'kutta_nystrom5', 5, "Kutta's fifth-order method as corrected by Nystrom (6 stages)",
        c=[0, F(1, 3), F(2, 5), 1, F(2, 3), F(4, 5)],
        rows=[
            [F(1, 3)],
            [F(4, 25), F(6, 25)],
            [F(1, 4), -3, F(15, 4)],
            [F(2, 27), F(10, 9), F(-50, 81), F(8, 81)],
            [F(2, 25), F(12, 25), F(2, 15), F(8, 75), 0],
        ],
        b=[F(23, 192), 0, F(125, 192), 0, F(-27, 64), F(125, 192)]),
    # Huta (1956), the second of his two 8-stage sixth-order methods; b is the 7-point
    # Newton-Cotes rule on the nodes 0, 1/6, ..., 1
    make_scheme(
        'huta6', 6, "Huta's sixth-order method (8 stages)",
        c=[0, F(1, 9), F(1, 6), F(1, 3), F(1, 2), F(2, 3), F(5, 6), 1],
        rows=[
            [F(1, 9)],
            [F(1, 24), F(1, 8)],
            [F(1, 6), F(-1, 2), F(2, 3)],
            [F(139, 272), F(-945, 544), F(105, 68), F(99, 544)],
            [F(-53, 3), F(91, 2), F(-52, 3), F(-107, 6), 8],
            [F(55487, 22824), F(-83, 16), F(2849, 1902), F(34601, 15216), F(-640, 2853), F(107, 2536)],
            [F(-101195, 25994), F(351, 41), F(-35994, 12997), F(-26109, 25994), F(-10000, 12997),
             F(-36, 12997), F(36, 41)],
        ],
        b=[F(41, 840), 0, F(9, 35), F(9, 280), F(34, 105), F(9, 280), F(9, 35), F(41, 840)]),
    # Verner (1978), SIAM J. Numer. Anal. 15(4): the 8th-order solution of the 8(9) pair uses
    # stages 1..14 only (stages 15-16 feed the 9th-order estimate, which a network does not need)
    make_scheme(
        'verner8', 8, "Verner's 8th-order method (14 stages of his 8(9) pair)",
        c=[0, F(1, 12), F(1, 9), F(1, 6), (2 + 2 * S6) / 15, (6 + S6) / 15, (6 - S6) / 15,
           F(2, 3), F(1, 2), F(1, 3), F(1, 4), F(4, 3), F(5, 6), 1],
        rows=[
            {1: F(1, 12)},
            {1: F(1, 27), 2: F(2, 27)},
            {1: F(1, 24), 3: F(1, 8)},
            {1: (4 + 94 * S6) / 375, 3: (-94 - 84 * S6) / 125, 4: (328 + 208 * S6) / 375},
            {1: (9 - S6) / 150, 4: (312 + 32 * S6) / 1425, 5: (69 + 29 * S6) / 570},
            {1: (927 - 347 * S6) / 1250, 4: (-16248 + 7328 * S6) / 9375, 5: (-489 + 179 * S6) / 3750,
             6: (14268 - 5798 * S6) / 9375},
            {1: F(2, 27), 6: (16 - S6) / 54, 7: (16 + S6) / 54},
            {1: F(19, 256), 6: (118 - 23 * S6) / 512, 7: (118 + 23 * S6) / 512, 8: F(-9, 256)},
            {1: F(11, 144), 6: (266 - S6) / 864, 7: (266 + S6) / 864, 8: F(-1, 16), 9: F(-8, 27)},
            {1: (5034 - 271 * S6) / 61440, 7: (7859 - 1626 * S6) / 10240, 8: (-2232 + 813 * S6) / 20480,
             9: (-594 + 271 * S6) / 960, 10: (657 - 813 * S6) / 5120},
            {1: (5996 - 3794 * S6) / 405, 6: (-4342 - 338 * S6) / 9, 7: (154922 - 40458 * S6) / 135,
             8: (-4176 + 3794 * S6) / 45, 9: (-340864 + 242816 * S6) / 405, 10: (26304 - 15176 * S6) / 45,
             11: F(-26624, 81)},
            {1: (3793 + 2168 * S6) / 103680, 6: (4042 + 2263 * S6) / 13824, 7: (-231278 + 40717 * S6) / 69120,
             8: (7947 - 2168 * S6) / 11520, 9: (1048 - 542 * S6) / 405, 10: (-1383 + 542 * S6) / 720,
             11: F(2624, 1053), 12: F(3, 1664)},
            {1: F(-137, 1296), 6: (5642 - 337 * S6) / 864, 7: (5642 + 337 * S6) / 864, 8: F(-299, 48),
             9: F(184, 81), 10: F(-44, 9), 11: F(-5120, 1053), 12: F(-11, 468), 13: F(16, 9)},
        ],
        b={1: F(103, 1680), 8: F(-27, 140), 9: F(76, 105), 10: F(-201, 280), 11: F(1024, 1365),
           12: F(3, 7280), 13: F(12, 35), 14: F(9, 280)}),
]}

# LM-ResNet (Lu et al., ICML 2018): u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + F_n(u_n). Each block
# evaluates one sub-network, so its tableau is Euler's; the first block of a stage has no
# u_{n-1} and is a plain Euler step.
_SCHEMES['lm'] = Scheme(
    'lm', 1, _SCHEMES['euler'].a, _SCHEMES['euler'].b, _SCHEMES['euler'].c,
    title='linear multistep (LM-ResNet), one learnable k_n per block', multistep=True)


def list_schemes() -> List[str]:
    """Names of all stacking schemes."""
    return list(_SCHEMES)


def get_scheme(name: Union[str, Scheme]) -> Scheme:
    """The scheme called `name`; a Scheme passes through unchanged."""
    if isinstance(name, Scheme):
        return name
    try:
        return _SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f'unknown scheme {name!r}; valid schemes: {", ".join(_SCHEMES)}') from None
