"""Every tableau earns its order: integrate a smooth nonlinear system with steps h and h/2 and
measure log2(err(h) / err(h/2)), at 40 significant digits so round-off stays far below the error.
The reference solution comes from mpmath's Taylor-series integrator, not from any tableau."""
import functools
from fractions import Fraction

import mpmath
import pytest

from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.exact import QuadraticSurd, sqrt
from horesnet_timm.schemes import Scheme

mpmath.mp.dps = 40
T_END = mpmath.mpf(1)
Y0 = [mpmath.mpf('0.3'), mpmath.mpf('-0.2'), mpmath.mpf('0.5')]


def field(y):
    # nonlinear and fully coupled, so all elementary differentials (trees) appear
    y1, y2, y3 = y
    return [mpmath.sin(y2) + y1 * y3 / 2, mpmath.cos(y1) - y3 ** 2 / 3, y1 * y2 / 4 - y3 / 2 + y1 ** 2 / 5]


def to_mpf(value) -> mpmath.mpf:
    v = value if isinstance(value, QuadraticSurd) else QuadraticSurd(Fraction(value))
    return mpmath.mpf(v.p.numerator) / v.p.denominator + mpmath.mpf(v.q.numerator) / v.q.denominator * mpmath.sqrt(v.d)


def rk_solve(scheme: Scheme, f, steps: int):
    a = [[to_mpf(v) for v in row] for row in scheme.a]
    b = [to_mpf(v) for v in scheme.b]
    h = T_END / steps
    y = list(Y0)
    for _ in range(steps):
        ks = []
        for i in range(scheme.stages):
            yi = [y[n] + h * sum(a[i][j] * ks[j][n] for j in range(i)) for n in range(3)]
            ks.append(f(yi))
        y = [y[n] + h * sum(b[i] * ks[i][n] for i in range(scheme.stages)) for n in range(3)]
    return y


@functools.lru_cache(maxsize=None)
def reference(f):
    return mpmath.odefun(lambda t, y: f(y), 0, Y0)(T_END)


def observed_order(solve, f, steps: int) -> float:
    exact = reference(f)
    err = lambda n: mpmath.norm([u - v for u, v in zip(solve(n), exact)])
    return float(mpmath.log(err(steps) / err(2 * steps), 2))


RK_SCHEMES = [n for n in list_schemes() if not get_scheme(n).multistep]


@pytest.mark.parametrize('name', RK_SCHEMES)
def test_tableau_convergence_order(name):
    scheme = get_scheme(name)
    steps = 16 if scheme.order <= 4 else 8
    order = observed_order(lambda n: rk_solve(scheme, field, n), field, steps)
    assert order >= scheme.order - 0.25, f'{name}: observed order {order:.2f} < claimed {scheme.order}'
    # and not an order higher than claimed would need: catches a tableau filed under the wrong name
    assert order < scheme.order + 1.5, f'{name}: observed order {order:.2f} suspiciously above {scheme.order}'


def test_lm_rule_is_first_order():
    """u_{n+1} = (1-k) u_n + k u_{n-1} + h f(u_n), first step Euler. Its characteristic polynomial
    (z-1)(z+k) gives consistency with (1+k) y' = f: first order for that rescaled system."""
    k = mpmath.mpf('-0.05')
    scaled = lambda y: [v / (1 + k) for v in field(y)]

    def lm_solve(steps):
        h = T_END / steps
        prev, y = None, list(Y0)
        for _ in range(steps):
            fy = field(y)
            nxt = [y[n] + h * fy[n] + (k * (prev[n] - y[n]) if prev is not None else 0) for n in range(3)]
            prev, y = y, nxt
        return y

    assert get_scheme('lm').multistep and get_scheme('lm').order == 1
    assert observed_order(lm_solve, scaled, 64) >= 0.9


def test_required_schemes_and_orders():
    expected = dict(euler=1, midpoint=2, heun=2, ralston=2, rk3=3, heun3=3, ssprk3=3, rk4=4, rk38=4, gill4=4,
                    kutta_nystrom5=5, huta6=6, verner8=8, lm=1)
    assert {n: get_scheme(n).order for n in list_schemes()} == expected
    stages = {n: get_scheme(n).stages for n in list_schemes()}
    assert stages['kutta_nystrom5'] == 6 and stages['huta6'] == 8 and stages['verner8'] == 14


def test_public_scheme_api():
    rk4 = get_scheme('rk4')
    assert rk4.stages == 4 and rk4.order == 4
    assert [list(row) for row in rk4.a][2] == [0, Fraction(1, 2), 0, 0]
    assert list(rk4.b) == [Fraction(1, 6), Fraction(1, 3), Fraction(1, 3), Fraction(1, 6)]
    assert list(rk4.c) == [0, Fraction(1, 2), Fraction(1, 2), 1]
    with pytest.raises(ValueError, match='valid schemes: euler, midpoint'):
        get_scheme('rk5')


def test_ralston_is_the_two_thirds_method():
    ralston = get_scheme('ralston')
    assert ralston.a[1][0] == Fraction(2, 3) and list(ralston.b) == [Fraction(1, 4), Fraction(3, 4)]


def test_verner8_weights_match_the_paper_and_sum_to_one():
    b = get_scheme('verner8').b
    assert b[7] == Fraction(-27, 140)  # the authors' code adds this weight with the wrong sign
    assert sum(b, QuadraticSurd(Fraction(0))) == 1
    assert [i + 1 for i, v in enumerate(b) if v != 0] == [1, 8, 9, 10, 11, 12, 13, 14]


def test_coefficients_are_exact():
    s6 = sqrt(6)
    assert get_scheme('verner8').c[4] == (2 + 2 * s6) / 15  # not a decimal approximation
    assert ((6 + s6) / 15) * ((6 - s6) / 15) == Fraction(2, 15)
    assert float((6 + s6) / 15) == pytest.approx(0.5632993161855452, rel=1e-16)


@pytest.mark.parametrize('build, message', [
    (lambda: Scheme('bad', 1, ((QuadraticSurd(Fraction(0)),),), (QuadraticSurd(Fraction(1, 2)),),
                    (QuadraticSurd(Fraction(0)),)), r'sum\(b \* c\^0\)'),
    (lambda: get_scheme('rk4').__class__('bad', 2, get_scheme('rk4').a, get_scheme('rk4').b,
                                         tuple(QuadraticSurd(Fraction(0)) for _ in range(4))), 'row 2 of A sums'),
])
def test_construction_rejects_invalid_tableaus(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_floats_are_refused():
    from horesnet_timm.schemes import make_scheme
    with pytest.raises(TypeError, match='not exact'):
        make_scheme('approx', 2, 'approximate midpoint', c=[0, 0.5], rows=[[0.5]], b=[0, 1])
