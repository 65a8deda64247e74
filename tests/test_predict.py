"""The onnxruntime runner: preprocessing equal to timm's, bad inputs, exit statuses, and a run in a
virtualenv without torch. Most tests use a tiny ONNX graph (Flatten + MatMul) made here in milliseconds."""
import contextlib
import json
import re
import os
import subprocess
import sys
import tempfile
import venv
import warnings

import numpy as np
import pytest
import timm
from PIL import Image
from timm.data import create_transform, resolve_data_config

import horesnet_timm  # noqa: F401
from horesnet_timm.cli import main
from horesnet_timm.onnx_export import export_onnx, synthetic_images
from horesnet_timm import predict as runner
from horesnet_timm.predict import PredictError, Predictor, decode_metadata, list_images, load_image, preprocess

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
    assert main(['predict', path, images[0], str(bad)]) == 1
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


def test_onnx_without_metadata(exported, tmp_path, capsys):
    import onnx
    path, images = exported
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / 'bare.onnx'))
    with pytest.raises(PredictError, match='lacks the preprocessing metadata'):
        Predictor(str(tmp_path / 'bare.onnx'))
    assert runner.main([str(tmp_path / 'bare.onnx'), images[0]]) == 1
    assert 'lacks the preprocessing metadata' in error_line(capsys)


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


# --- a tiny ONNX file: Flatten + MatMul over an 8x8 RGB input, four classes, horesnet metadata ---

CLASSES = 4


def tiny_onnx(path, weights=None, **metadata) -> str:
    """An ONNX classifier with the metadata `horesnet export` writes (plus `metadata`), in milliseconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    if weights is None:
        weights = np.random.default_rng(0).standard_normal((3 * 8 * 8, CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node('Flatten', ['input'], ['flat']), helper.make_node('MatMul', ['flat', 'w'], ['logits'])],
        'tiny', [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['batch', 3, 8, 8])],
        [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', CLASSES])],
        [numpy_helper.from_array(weights, 'w')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    props = dict(input_size=[3, 8, 8], mean=[0.5] * 3, std=[0.25] * 3, interpolation='bilinear', crop_pct=1.0,
                 num_classes=CLASSES, labels=[f'class{i}' for i in range(CLASSES)]) | metadata
    helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v) for k, v in props.items()})
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture
def tiny(tmp_path):
    """A tiny ONNX file and a folder of five small images."""
    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in range(5):
        images.append(str(folder / f'{i}.png'))
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(images[-1])
    return tiny_onnx(tmp_path / 'tiny.onnx'), images


def error_line(capsys) -> str:
    """stderr, which must be exactly one line, after no output."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == '' and len(lines) == 1, captured
    return lines[0]


@pytest.mark.parametrize('flag', ['--topk', '--batch-size', '--threads'])
@pytest.mark.parametrize('value', ['0', '-1', 'two'])
def test_counts_below_one_are_usage_errors(tiny, capsys, flag, value):
    path, images = tiny
    with pytest.raises(SystemExit) as exit_:
        runner.main([path, *images, flag, value])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    last = captured.err.strip().splitlines()[-1]  # argparse: usage, then one line naming the flag
    assert flag in last and '>= 1' in last and value in last


def test_counts_below_one_are_refused_by_the_api(tiny):
    path, images = tiny
    with pytest.raises(ValueError, match='topk'):
        Predictor(path).predict(images, topk=0)
    with pytest.raises(ValueError, match='batch_size'):
        Predictor(path).predict(images, batch_size=0)
    with pytest.raises(ValueError, match='threads'):
        Predictor(path, threads=-1)


def test_topk_beyond_the_classes_gives_all_classes(tiny, capsys):
    path, images = tiny
    assert runner.main([path, *images, '--topk', '100', '--json']) == 0
    results = json.loads(capsys.readouterr().out)
    assert [sorted(t['index'] for t in r['top']) for r in results] == [list(range(CLASSES))] * len(images)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_outputs_are_refused(tiny, tmp_path, capsys, value):
    _, images = tiny
    weights = np.ones((3 * 8 * 8, CLASSES), np.float32)
    weights[:, 1] = value  # NaN, or +inf and -inf from the negative inputs: class 1 is never finite
    broken = tiny_onnx(tmp_path / 'broken.onnx', weights)
    assert runner.main([broken, images[0], images[1]]) == 1
    line = error_line(capsys)
    assert 'non-finite' in line and '0.png' in line and '1.png' in line and 're-export' in line


def test_images_are_decoded_one_batch_at_a_time(tiny, monkeypatch):
    path, images = tiny
    events = []
    load, logits = runner.load_image, Predictor.logits
    monkeypatch.setattr(runner, 'load_image', lambda *a: events.append('decode') or load(*a))
    monkeypatch.setattr(Predictor, 'logits', lambda self, x: events.append('run') or logits(self, x))
    assert len(Predictor(path).predict(images, batch_size=2)) == 5
    assert events == ['decode', 'decode', 'run', 'decode', 'decode', 'run', 'decode', 'run']


def test_a_bad_header_fails_before_any_work(tiny, tmp_path, monkeypatch):
    path, images = tiny
    (tmp_path / 'notes.png').write_bytes(b'not an image')
    monkeypatch.setattr(runner, 'load_image', lambda *a: pytest.fail('decoded an image before checking all'))
    with pytest.raises(PredictError, match=r"notes\.png.* not an image"):
        Predictor(path).predict(images + [str(tmp_path / 'notes.png')], batch_size=2)


def test_a_file_truncated_past_its_header_fails_at_its_batch(tiny, tmp_path, monkeypatch):
    path, images = tiny
    truncated = tmp_path / 'half.png'
    truncated.write_bytes(open(images[0], 'rb').read()[:100])  # the header parses, the pixels are cut
    runs = []
    logits = Predictor.logits
    monkeypatch.setattr(Predictor, 'logits', lambda self, x: runs.append(len(x)) or logits(self, x))
    with pytest.raises(PredictError, match=r"'.*half\.png' is truncated or corrupt"):
        Predictor(path).predict(images[:2] + [str(truncated)], batch_size=2)
    assert runs == [2]  # the first batch ran: only the header was read up front


def test_decompression_bombs(tiny, tmp_path, monkeypatch, capsys):
    from PIL import Image as PILImage
    path, _ = tiny
    monkeypatch.setattr(PILImage, 'MAX_IMAGE_PIXELS', 1000)  # pillow refuses > 2000 pixels, warns > 1000
    Image.new('RGB', (50, 50)).save(tmp_path / 'huge.png')
    assert runner.main([path, str(tmp_path / 'huge.png')]) == 1
    line = error_line(capsys)
    assert all(w in line for w in ('huge.png', '2,500 pixels', 'decompression-bomb', 'resize it'))
    Image.new('RGB', (40, 40)).save(tmp_path / 'large.png')  # pillow's warning range: decoded, no warning
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert len(Predictor(path).predict([str(tmp_path / 'large.png')])) == 1


def test_untrained_weights_are_flagged(tiny, tmp_path, capsys):
    _, images = tiny
    untrained = tiny_onnx(tmp_path / 'untrained.onnx', trained='false',
                          provenance='random weights of horesnet10_rk4 (no checkpoint given)')
    assert runner.main([untrained, images[0]]) == 0
    captured = capsys.readouterr()
    assert 'holds untrained (random) weights: these labels are not predictions' in captured.err
    assert captured.out.startswith(images[0])
    assert runner.main([untrained, images[0], '--json']) == 0
    assert json.loads(capsys.readouterr().out)[0]['trained'] is False
    trained = tiny_onnx(tmp_path / 'trained.onnx', trained='true', provenance='weights from model.safetensors')
    for path, expected in ((trained, True), (tiny[0], None)):  # trained, and an older file without the key
        assert runner.main([path, images[0], '--json']) == 0
        captured = capsys.readouterr()
        assert captured.err == '' and json.loads(captured.out)[0].get('trained') is expected
    assert decode_metadata({'trained': 'false', 'provenance': 'random'}) == {'trained': False, 'provenance': 'random'}


def test_paths_that_are_not_files(tiny, tmp_path, capsys):
    path, images = tiny
    os.mkfifo(tmp_path / 'pipe.png')  # opening it would block forever
    cases = [([path, f'{tmp_path}/pipe.png'], f"image '{tmp_path}/pipe.png' is not a regular file"),
             ([path, '/dev/null'], "image '/dev/null' is not a regular file"),
             ([path, f'{tmp_path}/missing.png'], f"image '{tmp_path}/missing.png' does not exist"),
             ([str(tmp_path), images[0]], f"ONNX file '{tmp_path}' is a folder"),
             (['/dev/null', images[0]], "ONNX file '/dev/null' is not a regular file"),
             ([images[0], images[0]], f"cannot load ONNX file '{images[0]}'")]  # a PNG given as the model
    for argv, message in cases:
        assert runner.main(argv) == 1
        line = error_line(capsys)
        assert message in line, line


@contextlib.contextmanager
def unprivileged():
    """Root reads any file: act as nobody (the effective uid only, so that it can be given back)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534), os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0), os.setegid(0)


def test_permission_denied_is_named(tiny):
    path, images = tiny
    Predictor(path).predict(images[:1])  # import what a run imports while the interpreter's files can be read
    with tempfile.TemporaryDirectory() as folder:  # not under tmp_path, which only its owner may enter
        os.chmod(folder, 0o755)
        model, image, locked = (os.path.join(folder, name) for name in ('m.onnx', 'cat.png', 'locked'))
        for src, dst in ((path, model), (images[0], image)):
            with open(src, 'rb') as f, open(dst, 'wb') as g:
                g.write(f.read())
        os.mkdir(locked, 0)
        for unreadable, run in ((image, lambda: Predictor(model).predict([image])),
                                (model, lambda: Predictor(model)),
                                (locked, lambda: list_images([locked]))):
            os.chmod(model, 0o644), os.chmod(image, 0o644), os.chmod(unreadable, 0)
            with unprivileged(), pytest.raises(PredictError) as error:
                run()
            assert f"'{unreadable}'" in str(error.value) and 'permission denied' in str(error.value)
            assert 'does not exist' not in str(error.value) and 'format' not in str(error.value)


def test_file_names_that_are_not_utf8(tiny, tmp_path):
    """Printed byte for byte (as ls does), even where stdout's encoding is strict UTF-8."""
    path, images = tiny
    folder = tmp_path / 'latin1'
    folder.mkdir()
    name = os.path.join(os.fsencode(folder), b'caf\xe9.png')
    with open(images[0], 'rb') as f, open(name, 'wb') as g:
        g.write(f.read())
    onnx_named = os.path.join(os.fsencode(folder), b'mod\xe8le.onnx')  # onnxruntime opens UTF-8 paths only
    with open(path, 'rb') as f, open(onnx_named, 'wb') as g:
        g.write(f.read())
    env = dict(os.environ, PYTHONIOENCODING='utf-8')
    for argv in ([os.fsencode(path), name], [os.fsencode(path), os.fsencode(folder)], [onnx_named, name]):
        out = subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, env=env)
        assert out.returncode == 0 and out.stdout.startswith(name + b': '), out.stderr.decode(errors='replace')
    assert len(Predictor(os.fsdecode(onnx_named)).predict([os.fsdecode(name)])) == 1
    with pytest.raises(PredictError) as error:  # a lone surrogate: a str no file name decodes to
        Predictor(path).predict([str(folder / 'bad\ud800.png')])
    assert 'not a valid file name' in str(error.value) and 'corrupt' not in str(error.value)


def broken_pipe_run(command):
    """Run `command` with its stdout a pipe whose reader has already gone, as `| head -1` leaves it."""
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    return out


def test_broken_pipe_exits_quietly(tiny):
    path, images = tiny
    commands = [[sys.executable, SCRIPT, path, *images]]
    horesnet = os.path.join(os.path.dirname(sys.executable), 'horesnet')
    if os.path.isfile(horesnet):  # the console script pip installed beside the interpreter
        commands.append([horesnet, 'predict', path, *images])
    for command in commands:
        out = broken_pipe_run(command)
        assert out.returncode in (0, 141) and 'Traceback' not in out.stderr and 'BrokenPipe' not in out.stderr, \
            out.stderr


def test_metadata_that_disagrees_with_the_graph(tiny, tmp_path, capsys):
    _, images = tiny
    wrong = tiny_onnx(tmp_path / 'wrong.onnx', input_size=[3, 16, 16])  # the graph takes 8x8
    assert runner.main([wrong, images[0]]) == 1
    assert 'its metadata input_size [3, 16, 16] is not the size its graph takes ([3, 8, 8])' in error_line(capsys)
    tiny_onnx(tmp_path / 'garbled.onnx', trained='False')  # Python's spelling, not JSON's
    with pytest.raises(PredictError, match="metadata 'trained' holds 'False', which is not JSON"):
        Predictor(str(tmp_path / 'garbled.onnx'))


def test_preprocessing_equals_timm_for_every_crop_mode():
    """The runner against timm's own eval transform over image shape x input size x crop_pct x interpolation
    x crop mode x channels, non-square images and sizes and crop_pct above 1 (which pads) included."""
    import itertools
    rng = np.random.default_rng(0)
    for (w, h), size, crop_pct, interpolation, mode, channels in itertools.product(
            [(40, 40), (57, 31), (23, 64), (13, 9)], [(28, 28), (32, 24), (20, 36)], [0.875, 1.0, 1.15],
            ['bilinear', 'bicubic', 'nearest'], ['center', 'squash', 'border'], [3, 1]):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3)[:2 if channels == 1 else 3], dtype=np.uint8))
        mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if channels == 3 else ((0.3,), (0.35,))
        want = create_transform(input_size=(channels, *size), interpolation=interpolation, crop_pct=crop_pct,
                                crop_mode=mode, mean=mean, std=std)(image).numpy()
        cfg = dict(input_size=[channels, *size], interpolation=interpolation, crop_pct=crop_pct, crop_mode=mode,
                   mean=list(mean), std=list(std))
        np.testing.assert_allclose(preprocess(image, cfg), want, atol=1e-5,
                                   err_msg=f'{(w, h)} {size} {crop_pct} {interpolation} {mode} {channels}')


@pytest.mark.parametrize('metadata, message', [
    (dict(labels=[f'c{i}' for i in range(CLASSES + 2)]), f'{CLASSES + 2} labels for {CLASSES} outputs'),
    (dict(labels='"abcdefghij"'), 'not a list of names'),  # a JSON string: its characters would be the labels
    (dict(crop_pct=0), 'crop_pct 0 is not a positive number'),
    (dict(interpolation='magic'), "interpolation 'magic'"),
    (dict(crop_mode='zoom'), "crop_mode 'zoom'"),
    (dict(std=[0.25, 0.0, 0.25]), 'not positive'),
    (dict(mean=[0.5]), 'one per input channel'),
    (dict(std=['x', 1, 1]), 'finite number'),
    (dict(crop_pct=50), 'crop_pct 50 resizes a 8x8 input to nothing'),
    (dict(labels=['a'] * CLASSES), 'not distinct names'),
    (dict(labels=[' '] + [f'c{i}' for i in range(1, CLASSES)]), 'not distinct names'),
    (dict(num_classes=CLASSES + 1), f'num_classes {CLASSES + 1} does not match the {CLASSES} outputs'),
])
def test_metadata_that_does_not_describe_the_graph_is_refused(tmp_path, metadata, message):
    with pytest.raises(PredictError, match=re.escape(message)):
        Predictor(tiny_onnx(tmp_path / 'm.onnx', **metadata))


def test_a_headless_export_is_not_read_as_classes(tmp_path, tiny):
    headless = Predictor(tiny_onnx(tmp_path / 'm.onnx', num_classes=0, labels=None))
    with pytest.raises(PredictError, match='no classifier'):
        headless.predict(tiny[1])
