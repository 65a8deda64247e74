"""Exact numbers of the form p + q * sqrt(d), p and q rational.

Butcher tableaus are written with these so that every coefficient is exact: rationals as
`Fraction`, and the irrational ones (Gill's sqrt(2), Verner's sqrt(6)) as `sqrt(d)` terms.
Sums and products stay exact, so a tableau can check its own row sums and order conditions
with `==`, and a coefficient becomes a float only once, correctly rounded, when a block is built.
"""
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from numbers import Rational
from typing import Union

__all__ = ['QuadraticSurd', 'Exact', 'sqrt', 'to_exact']


@dataclass(frozen=True)
class QuadraticSurd:
    """p + q * sqrt(d): exact arithmetic in the field Q(sqrt(d)). d == 0 marks a plain rational."""
    p: Fraction
    q: Fraction = Fraction(0)
    d: int = 0

    def __post_init__(self):
        if self.q == 0 and self.d != 0:
            object.__setattr__(self, 'd', 0)  # canonical form, so equal numbers compare and hash equal

    def _field(self, other: 'QuadraticSurd') -> int:
        if self.d and other.d and self.d != other.d:
            raise ValueError(f'cannot combine sqrt({self.d}) and sqrt({other.d}) terms exactly')
        return self.d or other.d

    def __add__(self, other):
        other = to_exact(other)
        return QuadraticSurd(self.p + other.p, self.q + other.q, self._field(other))

    __radd__ = __add__

    def __neg__(self):
        return QuadraticSurd(-self.p, -self.q, self.d)

    def __sub__(self, other):
        return self + (-to_exact(other))

    def __rsub__(self, other):
        return to_exact(other) - self

    def __mul__(self, other):
        other = to_exact(other)
        d = self._field(other)
        return QuadraticSurd(self.p * other.p + self.q * other.q * d, self.p * other.q + self.q * other.p, d)

    __rmul__ = __mul__

    def __truediv__(self, other):
        other = to_exact(other)
        norm = other.p * other.p - other.q * other.q * other.d  # (p + q√d)(p - q√d), rational
        if norm == 0:
            raise ZeroDivisionError('division by zero')
        conjugate = QuadraticSurd(other.p, -other.q, other.d)
        numerator = self * conjugate
        return QuadraticSurd(numerator.p / norm, numerator.q / norm, numerator.d)

    def __rtruediv__(self, other):
        return to_exact(other) / self

    def __pow__(self, exponent: int):
        if not isinstance(exponent, int) or exponent < 0:
            raise TypeError('only non-negative integer powers are exact')
        result = QuadraticSurd(Fraction(1))
        for _ in range(exponent):
            result = result * self
        return result

    def __eq__(self, other):
        try:
            other = to_exact(other)
        except TypeError:
            return NotImplemented
        return (self.p, self.q, self.d) == (other.p, other.q, other.d)

    def __hash__(self):
        return hash((self.p, self.q, self.d))

    def __float__(self):
        if not self.q:
            return float(self.p)
        # 40 digits, then one rounding to double: p and q*sqrt(d) can nearly cancel
        with localcontext() as ctx:
            ctx.prec = 40
            value = _decimal(self.p) + _decimal(self.q) * Decimal(self.d).sqrt()
        return float(value)

    def __repr__(self):
        if not self.q:
            return str(self.p)
        return f'({self.p} + {self.q}*sqrt({self.d}))'

    def __str__(self):
        """As a tableau prints it: '1/6', '1/3 - 1/6*sqrt(2)', '-1/2*sqrt(2)'."""
        if not self.q:
            return str(self.p)
        surd = f'{abs(self.q)}*sqrt({self.d})'
        return (f'{self.p} {"-" if self.q < 0 else "+"} ' if self.p else '-' if self.q < 0 else '') + surd


Exact = Union[int, Fraction, QuadraticSurd]


def _decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def to_exact(value) -> QuadraticSurd:
    """Coerce an int, Fraction or QuadraticSurd; floats are refused because they are not exact."""
    if isinstance(value, QuadraticSurd):
        return value
    if isinstance(value, (int, Rational)) and not isinstance(value, bool):
        return QuadraticSurd(Fraction(value))
    raise TypeError(
        f'{value!r} ({type(value).__name__}) is not exact: write coefficients as int, '
        f'Fraction or sqrt(d) expressions')


def sqrt(d: int) -> QuadraticSurd:
    """The exact square root of a positive square-free integer."""
    if not isinstance(d, int) or d < 2:
        raise ValueError(f'sqrt() needs an integer radicand >= 2, got {d!r}')
    return QuadraticSurd(Fraction(0), Fraction(1), d)

