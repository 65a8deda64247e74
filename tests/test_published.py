"""The pretrained tags that ship in the package: each is a Hub folder staged by our push code, registered
from its config.json, loads with `pretrained=True` as the model it was trained as, and scores what its
evaluation record says: on the first 1000 test images, which ship in tests/data/ (everywhere), and on the
real Fashion-MNIST test set (where Debian's package is installed)."""
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

from conftest import SUBSET, SUBSET_IMAGES, load_subset, record_subset_top1, subset_top1, top1

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
    # published for RGB images (pipelines convert every image to RGB), trained on grey ones
    assert model.in_chans == 3 and tuple(cfg['input_size']) == (3, 28, 28) and list(cfg['label_names']) == LABELS
    pixels = load_subset()[0] / 255.  # the normalisation is the data's (within rounding), not a typed-in guess
    assert cfg['mean'] == pytest.approx((pixels.mean(),) * 3, abs=0.01)
    assert cfg['std'] == pytest.approx((pixels.std(),) * 3, abs=0.01)
    assert cfg['hf_hub_id'] == f'horesnet-timm/{name}' and cfg['license'] == 'apache-2.0'
    record = json.loads((WEIGHTS / name / 'eval.json').read_text())
    assert f"| {record['top1']} |" in (WEIGHTS / name / 'README.md').read_text()  # the card's metric is the record's
    # the tag is declared in code; its folder's config.json, written by hub push, must say the same
    staged = json.loads((WEIGHTS / name / 'config.json').read_text())['pretrained_cfg']
    for key in ('input_size', 'mean', 'std', 'label_names', 'hf_hub_id', 'crop_pct', 'interpolation', 'pool_size'):
        assert list(staged[key]) == list(cfg[key]) if isinstance(cfg[key], (tuple, list)) else staged[key] == cfg[key]
    folder = timm.create_model(f'local-dir:{WEIGHTS / name}', pretrained=True).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), folder(x))


@pytest.mark.parametrize('name', TAGS)
def test_readmes_weights_table_is_each_tags_record(name):
    """README's row for a tag says what its eval.json says: a tag that moved to another seed moves the row."""
    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text(encoding='utf-8')
    row = next((line for line in readme.splitlines() if line.startswith(f'| `{name}` |')), None)
    assert row, f'README lists no row for {name}'
    record = json.loads((WEIGHTS / name / 'eval.json').read_text())
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[3:7] == [f"{record['top1']:.2f}%", f"{record['top5']:.2f}%", f"{record['validation']['top1']:.2f}%",
                          f"{record['seed']} (from {', '.join(map(str, record['selected']['of_seeds']))})"]


def test_a_new_classifier_drops_the_tags_class_names():
    """Fine-tuning a tag for 3 classes: its 10 class names name none of the new outputs."""
    model = timm.create_model(TAGS[0], pretrained=True, num_classes=3)
    assert model.num_classes == 3 and 'label_names' not in model.pretrained_cfg
    assert model.default_cfg is model.pretrained_cfg


def test_a_damaged_weights_file_fails_its_own_load_only(tmp_path):
    damaged = tmp_path / 'model.safetensors'
    damaged.write_bytes((WEIGHTS / TAGS[0] / 'model.safetensors').read_bytes()[:1000])
    from safetensors import SafetensorError
    with pytest.raises(SafetensorError, match='deserializing header'):
        timm.create_model(TAGS[0], pretrained=True, pretrained_cfg_overlay=dict(file=str(damaged)))
    timm.create_model(TAGS[-1], pretrained=True)  # the others load


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
    labels = _read(f'{FASHION_MNIST}/t10k-labels-idx1-ubyte.gz')
    score = top1(timm.create_model(name, pretrained=True), images, labels)
    assert score == pytest.approx(json.loads((WEIGHTS / name / 'eval.json').read_text())['top1'], abs=0.01)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason='apt-get install dataset-fashion-mnist')
def test_shipped_subset_is_the_head_of_the_test_set():
    images, labels = load_subset()
    assert images.dtype == np.uint8 and images.shape == (1000, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (1000,)
    assert np.array_equal(images, _read(f'{FASHION_MNIST}/t10k-images-idx3-ubyte.gz')[:1000])
    assert np.array_equal(labels, _read(f'{FASHION_MNIST}/t10k-labels-idx1-ubyte.gz')[:1000])


@pytest.mark.parametrize('name', TAGS)
def test_tag_scores_its_record_on_the_shipped_subset(name):
    """The accuracy check that runs everywhere: top-1 on tests/data/'s 1000 test images, as eval.json says."""
    path = WEIGHTS / name / 'eval.json'
    subset = json.loads(path.read_text())
    if 'subset' not in subset:
        pytest.fail(f'{path} has no "subset" field (the top-1 on tests/data/{SUBSET.name}); fill it in with '
                    f'`python tests/conftest.py {name}`', pytrace=False)
    subset = subset['subset']
    assert subset['images'] == SUBSET_IMAGES
    assert subset_top1(name) == pytest.approx(subset['top1'], abs=0.01)


def test_recording_the_subset_keeps_the_rest_of_the_record(tmp_path, monkeypatch):
    """`python tests/conftest.py NAME` appends the field to a new folder's eval.json, leaving its lines as they
    are, and replaces it in one that has it."""
    import conftest
    import horesnet_timm.models.cifar
    name = TAGS[0]
    record = json.loads((WEIGHTS / name / 'eval.json').read_text())
    del record['subset']
    original = '{' + ',\n '.join(f'{json.dumps(k)}: {json.dumps(v)}' for k, v in record.items()) + '}\n'
    (tmp_path / name).mkdir()
    (tmp_path / name / 'eval.json').write_text(original)
    monkeypatch.setattr(horesnet_timm.models.cifar, 'WEIGHTS', tmp_path)
    monkeypatch.setattr(conftest, 'subset_top1', lambda tag: {name: 12.3}[tag])
    assert record_subset_top1(name) == {'images': SUBSET_IMAGES, 'top1': 12.3}
    text = (tmp_path / name / 'eval.json').read_text()
    assert text.startswith(original[:-2] + ',\n "subset": ')
    assert json.loads(text) == {**record, 'subset': {'images': SUBSET_IMAGES, 'top1': 12.3}}
    monkeypatch.setattr(conftest, 'subset_top1', lambda tag: 45.6)
    record_subset_top1(name)
    assert json.loads((tmp_path / name / 'eval.json').read_text()) == {**record, 'subset': {'images': SUBSET_IMAGES,
                                                                                            'top1': 45.6}}
