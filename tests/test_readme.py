"""README's Python examples run as written, and every `horesnet` command it shows parses (the
commands' behaviour is tested in their own files: test_demo, test_onnx, test_hub, test_train_py ...)."""
import re
import shlex
from pathlib import Path

import pytest

from horesnet_timm.cli import build_parser

README = (Path(__file__).resolve().parents[1] / 'README.md').read_text()


def section(title: str) -> str:
    match = re.search(rf'^## {re.escape(title)}\n(.*?)(?=^## )', README, re.S | re.M)
    assert match, f'README has no section {title!r}'
    return match.group(1)


@pytest.mark.parametrize('title', ['Quick start in Python', 'Schemes: how they are defined, and how to add one',
                                   'Beyond the paper: restack any timm network'])
def test_python_examples_run(title):
    blocks = re.findall(r'```python\n(.*?)```', section(title), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, f'README: {title}', 'exec'), {})


def commands():
    found = []
    for line in README.splitlines():
        text = line.strip()
        if text.startswith('horesnet ') and not text.startswith('horesnet-'):
            found.append(text.split('  #')[0])
    return found


@pytest.mark.parametrize('command', commands())
def test_commands_parse(command):
    argv = shlex.split(command.replace('<', '').replace('>', ''))[1:]
    build_parser().parse_args(argv)  # argparse exits with status 2 on anything it does not accept
