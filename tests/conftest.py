import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'


def make_image_folder(root: Path, size: int = 32, mode: str = 'RGB', per_class: int = 8,
                      classes=('disc', 'stripes'), splits=('train', 'validation')) -> Path:
    """A tiny ImageFolder dataset (<root>/<split>/<class>/*.png) whose classes are visibly different."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    patterns = {'disc': ((xx - .5) ** 2 + (yy - .5) ** 2 < .1), 'stripes': (np.sin(xx * 20) > 0)}
    for split in splits:
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                base = patterns[name] * 0.7 + rng.uniform(0, 0.3, (size, size))
                pixels = (np.stack([base] * 3, -1) * 255).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / f'{j}.png')
    return root


def load_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope='session')
def config_generator():
    return runpy.run_path(str(CONFIGS / 'generate.py'), run_name='config_generator')


@pytest.fixture(scope='session')
def train_py_arguments() -> dict:
    return json.loads((CONFIGS / 'train_py_args.json').read_text())['arguments']
