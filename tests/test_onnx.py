"""ONNX export: parity with PyTorch per scheme family (all names under -m slow), metadata, precisions,
and every bad input failing with a clear message and no file left behind."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import timm
import torch
from safetensors.torch import save_file

import horesnet_timm
from horesnet_timm.cli import main
from horesnet_timm.errors import HoresnetError
from horesnet_timm.loading import load_model
from horesnet_timm.onnx_export import ExportError, export_onnx, model_metadata, synthetic_images
from horesnet_timm.predict import Predictor, load_image, preprocess

from conftest import ONE_PER_FAMILY, randomised, train_py_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def onnx_files(directory):
    return sorted(f for f in os.listdir(directory) if '.onnx' in f or f.endswith(('.tmp', '.probe')))


def check_parity(rows, tol=1e-4):
    for r in rows:
        assert r['max_abs'] <= tol * max(1., r['max_logit']), r
        assert r['top1'] == 1.0, r


@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_family_exports_with_parity(tmp_path, name):
    model = randomised(timm.create_model(name))
    out = tmp_path / 'model.onnx'
    result = export_onnx(model, str(out), batch_size=4)
    cases = {r['case'] for r in result['checks']}
    assert {'random b=1', 'images b=1', 'random b=4', 'images b=4'} <= cases
    check_parity(result['checks'])
    assert onnx_files(tmp_path) == ['model.onnx']
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta['scheme'] == model.scheme and meta['model_name'] == name


def test_imagenet_labels_and_overridden_classes():
    meta = model_metadata(timm.create_model('horesnet50i_rk4', device='meta'), 'horesnet50i_rk4')
    labels = json.loads(meta['labels'])
    assert len(labels) == 1000 and labels[0].startswith('tench') and json.loads(meta['crop_pct']) == 0.875
    meta = model_metadata(timm.create_model('horesnet10_rk4', num_classes=7, device='meta'), 'horesnet10_rk4')
    assert 'labels' not in meta  # CIFAR-10 names do not fit 7 classes


def test_cli_export_metadata_then_predict_with_checkpoint(tmp_path, capsys):
    source = randomised(timm.create_model('horesnet10_midpoint'))
    weights = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), str(weights))
    out = tmp_path / 'h.onnx'
    assert main(['export', 'horesnet10_midpoint', '--checkpoint', str(weights), '-o', str(out)]) == 0
    report = capsys.readouterr().out
    assert 'images b=8' in report and f'wrote {out}' in report
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta['input_size']) == [3, 32, 32]
    assert json.loads(meta['mean']) == pytest.approx([0.4914, 0.4822, 0.4465])
    assert json.loads(meta['std']) == pytest.approx([0.2470, 0.2435, 0.2616])
    assert meta['interpolation'] == 'bilinear' and json.loads(meta['crop_pct']) == 1.0
    assert 'labels' not in meta  # weights with no record of their data: indices, not CIFAR-10 names by default
    assert json.loads(meta['num_classes']) == 10 and json.loads(meta['trained']) is True
    assert meta['horesnet_timm_version'] == horesnet_timm.__version__ and meta['timm_version'] == timm.__version__
    assert meta['precision'] == 'fp32' and meta['opset'] == '18' and json.loads(meta['dynamic_batch']) is True
    assert meta['scheme'] == 'midpoint' and meta['model_name'] == 'horesnet10_midpoint'
    images = synthetic_images(str(tmp_path), count=3)
    assert main(['predict', str(out), *images, '--topk', '2', '--json']) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r['image'] for r in results] == images and len(results[0]['top']) == 2
    metadata = Predictor(str(out)).metadata
    with torch.no_grad():  # the runner's answer is the PyTorch model's on the same files
        probs = source(torch.from_numpy(np.stack([preprocess(load_image(p), metadata) for p in images]))).softmax(-1)
    for r, p in zip(results, probs):
        assert r['top'][0]['index'] == int(p.argmax()) and r['top'][0]['prob'] == pytest.approx(float(p.max()), abs=1e-5)
        assert r['top'][0]['label'] == str(r['top'][0]['index'])


def test_train_py_checkpoint_names_the_model(tmp_path):
    source = randomised(timm.create_model('horesnet10_rk4'))
    path = tmp_path / 'model_best.pth.tar'
    torch.save({'arch': 'horesnet10_rk4', 'state_dict': source.state_dict()}, path)
    model = load_model(str(path)).model
    assert model.pretrained_cfg['architecture'] == 'horesnet10_rk4'
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))


def test_static_batch_and_dynamic_size(tmp_path):
    model = randomised(timm.create_model('horesnet10_rk4'))
    out = tmp_path / 'static.onnx'
    result = export_onnx(model, str(out), dynamic_batch=False, batch_size=2)
    check_parity(result['checks'])
    predictor = Predictor(str(out))
    assert predictor.max_batch == 2
    assert len(predictor.predict(synthetic_images(str(tmp_path), count=3), batch_size=32)) == 3  # pads the last
    result = export_onnx(model, str(tmp_path / 'dyn.onnx'), dynamic_size=True, batch_size=2)
    assert 'random 48x40' in {r['case'] for r in result['checks']}
    check_parity(result['checks'])


@pytest.mark.parametrize('precision', ['fp16', 'int8'])
def test_reduced_precision(tmp_path, precision):
    model = randomised(timm.create_model('horesnet10_rk4'))
    out = tmp_path / f'{precision}.onnx'
    result = export_onnx(model, str(out), precision=precision, batch_size=4)
    images = [r for r in result['checks'] if r['case'].startswith('images')]
    assert np.mean([r['top1'] for r in images]) >= {'fp16': 0.9, 'int8': 0.75}[precision]
    proto = onnx.load(str(out))
    types = {i.data_type for i in proto.graph.initializer}
    assert (onnx.TensorProto.FLOAT16 if precision == 'fp16' else onnx.TensorProto.INT8) in types
    io_type = onnx.TensorProto.FLOAT16 if precision == 'fp16' else onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == io_type
    if precision == 'fp16':  # stage combinations stay fp32, as in the PyTorch model under fp16
        assert any(n.op_type == 'Cast' for n in proto.graph.node)
    assert {p.key: p.value for p in proto.metadata_props}['precision'] == precision
    assert len(Predictor(str(out)).predict(synthetic_images(str(tmp_path), count=2))) == 2


def test_int8_command_says_what_passed_and_prints_no_quantiser_noise(tmp_path, capsys):
    import logging
    heard = []
    listener = logging.Handler()
    listener.emit = heard.append
    root = logging.getLogger()
    root.addHandler(listener)
    handlers, level = list(root.handlers), root.level
    try:
        assert main(['export', 'horesnet10_rk4', '--precision', 'int8', '-o', str(tmp_path / 'q.onnx')]) == 0
    finally:
        root.removeHandler(listener)
    assert not [r.getMessage() for r in heard if r.levelno >= logging.WARNING]  # onnxruntime's per-weight advice
    assert "the 'random' rows show the size of the int8 error and are not part of the check" in capsys.readouterr().out
    assert root.handlers == handlers[:-1] and root.level == level  # the caller's logging left as found


# ---- bad inputs: a clear message and nothing left behind --------------------------------------

def _export_fails(tmp_path, capsys, *args, status=1):
    out = tmp_path / 'out' / 'x.onnx'
    out.parent.mkdir(exist_ok=True)
    try:
        assert main(['export', *args, '-o', str(out)]) == status
    except SystemExit as e:  # argparse's usage errors
        assert e.code == status == 2
    assert onnx_files(out.parent) == []
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return err


def test_unknown_model(tmp_path, capsys):
    err = _export_fails(tmp_path, capsys, 'horesnet58_rk5')
    assert "unknown model 'horesnet58_rk5'" in err and 'did you mean' in err and 'horesnet58_rk4' in err


def test_missing_checkpoint(tmp_path, capsys):
    err = _export_fails(tmp_path, capsys, 'horesnet10_rk4', '--checkpoint', str(tmp_path / 'nope.safetensors'))
    assert 'nope.safetensors' in err and 'does not exist' in err


def test_corrupt_checkpoint(tmp_path, capsys):
    path = tmp_path / 'model.safetensors'
    save_file(timm.create_model('horesnet10_rk4').state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:1000])
    err = _export_fails(tmp_path, capsys, 'horesnet10_rk4', '--checkpoint', str(path))
    assert 'model.safetensors' in err and 'truncated or corrupt' in err


def test_checkpoint_of_another_model(tmp_path, capsys):
    path = tmp_path / 'model.safetensors'
    save_file(timm.create_model('horesnet18_rk4').state_dict(), str(path))
    err = _export_fails(tmp_path, capsys, 'horesnet10_rk4', '--checkpoint', str(path))
    assert 'does not fit horesnet10_rk4' in err and 'unexpected' in err


def test_safetensors_without_model_name(tmp_path, capsys):
    path = tmp_path / 'model.safetensors'
    save_file(timm.create_model('horesnet10_rk4').state_dict(), str(path))
    err = _export_fails(tmp_path, capsys, str(path))
    assert 'does not say which model it holds' in err and '--checkpoint' in err


def test_wrong_image(tmp_path, capsys):
    bad = tmp_path / 'cat.png'
    bad.write_bytes(b'not an image')
    err = _export_fails(tmp_path, capsys, 'horesnet10_rk4', '--images', str(bad))
    assert "cannot read image" in err and 'cat.png' in err
    err = _export_fails(tmp_path, capsys, 'horesnet10_rk4', '--images', str(tmp_path / 'dog.png'))
    assert "image" in err and 'dog.png' in err and 'does not exist' in err


def test_output_directory_missing_or_not_writable(tmp_path, capsys, monkeypatch):
    model = timm.create_model('horesnet10_rk4')
    with pytest.raises(HoresnetError, match="folder '.*such' does not exist; create it first"):
        export_onnx(model, str(tmp_path / 'no' / 'such' / 'x.onnx'))
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: then only the simulated case below runs
            with pytest.raises(HoresnetError, match='is not writable'):
                export_onnx(model, str(locked / 'x.onnx'))
    finally:
        locked.chmod(0o755)

    real_open = os.open

    def refuse(path, *args, **kwargs):  # as a folder without write permission answers, for root too
        if str(path).startswith(str(locked)):
            raise PermissionError(13, 'Permission denied')
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, 'open', refuse)
    assert main(['export', 'horesnet10_rk4', '-o', str(locked / 'x.onnx')]) == 1
    err = capsys.readouterr().err
    assert "horesnet export: error: cannot write in folder '" in err and err.endswith(': permission denied\n')
    assert onnx_files(locked) == []


def test_failed_verification_leaves_nothing(tmp_path):
    model = randomised(timm.create_model('horesnet10_rk4'))
    with pytest.raises(ExportError, match='differs from PyTorch beyond'):
        export_onnx(model, str(tmp_path / 'x.onnx'), tol=1e-15)
    assert onnx_files(tmp_path) == []


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError('exporter crashed')
    monkeypatch.setattr(torch.onnx, 'export', crash)
    with pytest.raises(RuntimeError, match='exporter crashed'):
        export_onnx(timm.create_model('horesnet10_rk4'), str(tmp_path / 'x.onnx'))
    assert onnx_files(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize('name', timm.list_models('horesnet*'))
def test_every_registered_model_exports_with_parity(tmp_path, name):
    model = randomised(timm.create_model(name))
    with torch.no_grad():  # classifier scaled to logits of about 10, as a trained model's, so 1e-4 is absolute
        model.fc.weight.mul_(10 / model(torch.randn(8, *model.pretrained_cfg['input_size'])).abs().max())
        model.fc.bias.zero_()
    rows = export_onnx(model, str(tmp_path / 'model.onnx'))['checks']
    print(f"\nPARITY {name}: max abs {max(r['max_abs'] for r in rows):.3g}, "
          f"max rel {max(r['max_rel'] for r in rows):.3g}, logits up to {max(r['max_logit'] for r in rows):.3g}")
    for r in rows:
        assert r['max_abs'] <= 1e-4 and r['top1'] == 1.0, r


# ---- what the trust issue found: each of these wrote a wrong file with exit status 0, or a traceback ---------

def _meta(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _logits(path, x):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_train_py_checkpoint_exports_the_scheme_and_input_it_was_trained_with(tmp_path, capsys):
    """`--model-kwargs scheme=gill4` on 1x28x28 Fashion-MNIST: a gill4 graph on one channel, not rk4 on three."""
    source = randomised(timm.create_model('horesnet10_rk4', scheme='gill4', in_chans=1))
    path = train_py_checkpoint(tmp_path / 'model_best.pth.tar', source, 'horesnet10_rk4', model_kwargs={'scheme': 'gill4'},
                               num_classes=10, input_size=[1, 28, 28], mean=[0.286], std=[0.353],
                               dataset='torch/fashion_mnist')
    out = tmp_path / 'fmnist.onnx'
    assert main(['export', path, '-o', str(out)]) == 0
    assert 'horesnet10_rk4 (gill4), fp32, opset 18, input 1x28x28' in capsys.readouterr().out
    meta = _meta(out)
    assert meta['scheme'] == 'gill4' and json.loads(meta['input_size']) == [1, 28, 28]
    assert json.loads(meta['mean']) == [0.286] and json.loads(meta['std']) == [0.353]
    assert json.loads(meta['labels'])[9] == 'Ankle boot' and json.loads(meta['trained']) is True
    x = torch.randn(3, 1, 28, 28)
    rk4 = timm.create_model('horesnet10_rk4', in_chans=1).eval()
    # rk4 and gill4 share every key and shape (weights without the wiring record load anywhere)
    rk4.load_state_dict({k: v for k, v in source.state_dict().items() if not k.endswith('_extra_state')})
    with torch.no_grad():
        np.testing.assert_allclose(_logits(out, x), source(x).numpy(), atol=1e-4)
        assert not np.allclose(_logits(out, x), rk4(x).numpy(), atol=1e-3)


def test_opset_is_the_one_asked_for_or_refused(tmp_path, capsys):
    model = randomised(timm.create_model('horesnet10_midpoint'))
    out = tmp_path / 'op17.onnx'
    result = export_onnx(model, str(out), opset=17, batch_size=2)  # below 18: the TorchScript exporter
    check_parity(result['checks'])
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')] == [17]
    assert _meta(out)['opset'] == '17'
    for opset in ('5', '99'):
        err = _export_fails(tmp_path, capsys, 'horesnet10_rk4', '--opset', opset, status=2)
        assert f'--opset {opset}: this installation exports opsets 7 to' in err
    with pytest.raises(ExportError, match='opset 99 cannot be exported'):
        export_onnx(model, str(tmp_path / 'x.onnx'), opset=99)


def test_fp16_verification_fails_on_infinite_logits(tmp_path):
    model = randomised(timm.create_model('horesnet10_rk4'))
    with torch.no_grad():
        model.fc.weight.mul_(1e6)  # fine in fp32, beyond fp16's 65504
    with pytest.raises(ExportError, match=r'the fp16 file gives NaN or infinite logits.*overflows beyond 65504'):
        export_onnx(model, str(tmp_path / 'x.onnx'), precision='fp16', batch_size=2)
    assert onnx_files(tmp_path) == []


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o027, 0o640)])
def test_exported_file_honours_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        export_onnx(timm.create_model('horesnet10_euler'), str(tmp_path / 'x.onnx'), check=False)
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / 'x.onnx').st_mode & 0o777 == mode


@pytest.mark.parametrize('args, status, message', [
    (['--batch-size', '0'], 2, "argument --batch-size: 0 is not a positive integer"),
    (['--batch-size', '-1'], 2, "argument --batch-size: -1 is not a positive integer"),
    (['--model-kwargs', 'scheme=rk5'], 1, "unknown scheme 'rk5'"),
    (['--precision', 'fp8'], 2, "argument --precision: invalid choice: 'fp8'"),
    (['--tol', '-1'], 2, 'argument --tol: -1 is not a positive number'),
    (['--tol', 'nan'], 2, "argument --tol: 'nan' is not a finite number"),
])
def test_bad_flags(tmp_path, capsys, args, status, message):
    assert message in _export_fails(tmp_path, capsys, 'horesnet10_rk4', *args, status=status)


def test_untrained_export_is_marked(tmp_path, capsys):
    out = tmp_path / 'u.onnx'
    assert main(['export', 'horesnet10_rk4', '-o', str(out), '--no-verify']) == 0
    assert 'random weights' in capsys.readouterr().err
    meta = _meta(out)
    assert json.loads(meta['trained']) is False and meta['provenance'].startswith('untrained')
    assert main(['predict', str(out), *synthetic_images(str(tmp_path), count=1)]) == 0
    assert 'untrained (random) weights: these labels are not predictions' in capsys.readouterr().err


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_export_leaves_nothing(tmp_path, sig):
    out, scratch = tmp_path / 'out', tmp_path / 'scratch'
    out.mkdir()
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, '-m', 'horesnet_timm', 'export', 'horesnet58_rk8', '-o', str(out / 'x.onnx')],
                               env={**os.environ, 'PYTHONPATH': ROOT, 'TMPDIR': str(scratch)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (os.listdir(out) and os.listdir(scratch)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until both the output's temporary twin and the work folder exist
    assert os.listdir(out), 'the temporary output never appeared'
    process.send_signal(sig)
    assert process.wait(timeout=120) == 128 + sig, process.stderr.read()
    assert os.listdir(out) == [] and os.listdir(scratch) == []


def test_disk_full_is_named_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    save = onnx.save

    def full(proto, path, *args, **kwargs):  # the output's disk is full; the scratch folder is elsewhere
        if not str(path).startswith(str(tmp_path)):
            return save(proto, path, *args, **kwargs)
        with open(path, 'wb') as f:
            f.write(b'\0' * 1000)  # part of the file, then the device fills up
        raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    monkeypatch.setattr(onnx, 'save', full)
    assert main(['export', 'horesnet10_rk4', '-o', str(tmp_path / 'x.onnx'), '--no-verify']) == 1
    err = capsys.readouterr().err
    assert 'no space left on the device: free some space or write elsewhere' in err and 'Traceback' not in err
    assert onnx_files(tmp_path) == []


def test_a_full_scratch_folder_is_not_called_a_full_output_disk(tmp_path, capsys, monkeypatch):
    import errno
    from horesnet_timm import onnx_export

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(onnx_export, '_export', full)
    assert main(['export', 'horesnet10_rk4', '-o', str(tmp_path / 'x.onnx'), '--no-verify']) == 1
    err = capsys.readouterr().err
    assert 'the scratch folder' in err and 'TMPDIR' in err and os.listdir(tmp_path) == []
