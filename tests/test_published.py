"""The pretrained tags that ship in the package: each is a Hub folder staged by our push code, registered
from its config.json, loads with `pretrained=True` as the model it was trained as, and scores what its
evaluation record says (on the real Fashion-MNIST test set, where Debian's package is installed)."""
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import horesnet_timm  # noqa: F401
from horesnet_timm.cli import main
from horesnet_timm.models.cifar import WEIGHTS

TAGS = sorted(p.parent.name for p in WEIGHTS.glob('*/config.json'))
FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']


def test_every_shipped_folder_is_a_registered_tag():
    assert TAGS, 'no shipped weights'
    assert sorted(timm.list_pretrained('horesnet*')) == TAGS
    for name in TAGS:  # the untagged name keeps the paper's CIFAR layout as its default
        assert timm.create_model(name.split('.')[0]).pretrained_cfg['input_size'] == (3, 32, 32)


@pytest.mark.parametrize('name', TAGS)
def test_tag_loads_as_trained(name):
    model = timm.create_model(name, pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert model.in_chans == 1 and tuple(cfg['input_size']) == (1, 28, 28) and list(cfg['label_names']) == LABELS
    assert cfg['hf_hub_id'] == f'horesnet-timm/{name}' and cfg['license'] == 'apache-2.0'
    record = json.loads((WEIGHTS / name / 'eval.json').read_text())
    assert f"top-1 {record['top1']}%" in cfg['notes'][0]
    assert f"| {record['top1']} |" in (WEIGHTS / name / 'README.md').read_text()  # the card's metric is the record's
    folder = timm.create_model(f'local-dir:{WEIGHTS / name}', pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), folder(x))


def test_export_of_a_tag_is_marked_trained(tmp_path, capsys):
    import onnx
    name = TAGS[0]
    assert main(['export', name, '--pretrained', '-o', str(tmp_path / 'm.onnx'), '--no-verify']) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / 'm.onnx')).metadata_props}
    assert json.loads(meta['trained']) is True and json.loads(meta['labels']) == LABELS
    assert 'published weights' in meta['provenance']


def _read(path):
    with gzip.open(path, 'rb') as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason='apt-get install dataset-fashion-mnist')
@pytest.mark.parametrize('name', TAGS)
def test_tag_scores_its_record_on_the_test_set(name):
    images = _read(f'{FASHION_MNIST}/t10k-images-idx3-ubyte.gz')
    labels = torch.from_numpy(_read(f'{FASHION_MNIST}/t10k-labels-idx1-ubyte.gz').astype(np.int64))
    model = timm.create_model(name, pretrained=True).eval()
    cfg = model.pretrained_cfg
    x = (torch.from_numpy(images).float()[:, None] / 255 - cfg['mean'][0]) / cfg['std'][0]
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    top1 = 100 * (predicted == labels).float().mean().item()
    assert top1 == pytest.approx(json.loads((WEIGHTS / name / 'eval.json').read_text())['top1'], abs=0.01)
