"""Value types for the commands' flags (argparse `type=`), one per kind of number; each refusal is a usage
error naming the value. (predict.py keeps its own: it runs without the package.)"""
import argparse
import math

__all__ = ['positive_int', 'non_negative_int', 'positive_float', 'fraction']


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {'a whole number' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive integer')
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{value} is not an integer >= 0')
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text} is not a positive number')
    return value


def fraction(text: str) -> float:
    """A number in (0, 1], such as a crop fraction."""
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'{value} is not in (0, 1]')
    return value
