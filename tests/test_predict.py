"""The onnxruntime runner: preprocessing equal to timm's, bad inputs, and a run in a virtualenv without torch."""
import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest
import timm
from PIL import Image
from timm.data import create_transform, resolve_data_config

import horesnet_timm  # noqa: F401
from horesnet_timm.cli import main
from horesnet_timm.onnx_export import export_onnx, synthetic_images
from horesnet_timm.predict import PredictError, Predictor, list_images, load_image, preprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'export', 'predict.py')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp('exported')
    path = str(directory / 'horesnet10_rk4.onnx')
    export_onnx(timm.create_model('horesnet10_rk4'), path, check=False)
    return path, synthetic_images(str(directory), count=5, size=(120, 90))


@pytest.mark.parametrize('name', ['horesnet10_rk4', 'horesnet32i_rk4'])
def test_preprocessing_equals_timm_eval_transform(tmp_path, name):
    cfg = resolve_data_config(model=timm.create_model(name, device='meta'))
    transform = create_transform(**cfg)
    for path in synthetic_images(str(tmp_path), count=4, size=(300, 200)):
        expected = transform(Image.open(path).convert('RGB')).numpy()
        np.testing.assert_allclose(preprocess(load_image(path), cfg), expected, atol=1e-6)


def test_folder_and_files_give_the_same_results(exported, capsys):
    path, images = exported
    folder = os.path.dirname(images[0])
    assert main(['predict', path, folder, '--json', '--batch-size', '2']) == 0
    from_folder = json.loads(capsys.readouterr().out)
    assert [r['image'] for r in from_folder] == sorted(images)
    assert Predictor(path).predict(sorted(images), batch_size=32) == from_folder  # batching changes nothing
    probs = [sum(t['prob'] for t in r['top']) for r in Predictor(path).predict(images, topk=10)]
    assert probs == pytest.approx([1.0] * len(images), abs=1e-5)


def test_text_output(exported, capsys):
    path, images = exported
    assert main(['predict', path, images[0], '--topk', '3']) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(images[0] + ': ') and line.count(',') == 2


@pytest.mark.parametrize('content, message', [
    (b'not an image', 'cannot read image'),
    (None, 'does not exist'),
])
def test_bad_image(exported, tmp_path, capsys, content, message):
    path, images = exported
    bad = tmp_path / 'cat.png'
    if content is not None:
        bad.write_bytes(content)
    assert main(['predict', path, images[0], str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and 'cat.png' in err


def test_truncated_image(exported, tmp_path):
    path, images = exported
    bad = tmp_path / 'half.png'
    bad.write_bytes(open(images[0], 'rb').read()[:200])
    with pytest.raises(PredictError, match='half.png'):
        Predictor(path).predict([str(bad)])


def test_empty_folder_and_bad_onnx(exported, tmp_path):
    path, _ = exported
    with pytest.raises(PredictError, match='holds no image files'):
        list_images([str(tmp_path)])
    with pytest.raises(PredictError, match='does not exist'):
        Predictor(str(tmp_path / 'missing.onnx'))
    (tmp_path / 'junk.onnx').write_bytes(b'\x00' * 100)
    with pytest.raises(PredictError, match='cannot load ONNX file'):
        Predictor(str(tmp_path / 'junk.onnx'))


def test_onnx_without_metadata(exported, tmp_path):
    import onnx
    path, _ = exported
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / 'bare.onnx'))
    with pytest.raises(PredictError, match='lacks the preprocessing metadata'):
        Predictor(str(tmp_path / 'bare.onnx'))


def test_script_runs_without_importing_torch(exported):
    path, images = exported
    code = ('import runpy, sys; sys.argv = ["predict.py", *sys.argv[1:]]\n'
            'try:\n    runpy.run_path(%r, run_name="__main__")\n'
            'except SystemExit as e:\n    assert not e.code, e.code\n'
            'assert "torch" not in sys.modules and "horesnet_timm" not in sys.modules, "imported torch"\n') % SCRIPT
    out = subprocess.run([sys.executable, '-c', code, path, *images, '--json'], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == Predictor(path).predict(images)


def test_runner_in_a_virtualenv_with_only_onnxruntime_numpy_pillow(exported, tmp_path):
    path, images = exported
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / 'bin' / 'python')
    pip = subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                          'onnxruntime', 'numpy', 'pillow'], capture_output=True, text=True)
    if pip.returncode:
        network = ('connection', 'network', 'resolve', 'no matching distribution', 'timed out', 'proxy')
        if any(w in pip.stderr.lower() for w in network):
            pytest.skip(f'cannot install onnxruntime/numpy/pillow from the package index (no network?): '
                        f'{pip.stderr.strip().splitlines()[-1]}')
        pytest.fail(pip.stderr)
    no_torch = subprocess.run([python, '-c', 'import torch'], capture_output=True, text=True)
    assert no_torch.returncode != 0 and 'No module named' in no_torch.stderr
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    out = subprocess.run([python, SCRIPT, path, *images, '--json', '--topk', '3'], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr
    expected = Predictor(path).predict(images, topk=3)
    got = json.loads(out.stdout)
    assert [[t['index'] for t in r['top']] for r in got] == [[t['index'] for t in r['top']] for r in expected]
    for r, e in zip(got, expected):
        assert [t['prob'] for t in r['top']] == pytest.approx([t['prob'] for t in e['top']], abs=1e-5)
        assert [t['label'] for t in r['top']] == [t['label'] for t in e['top']]
