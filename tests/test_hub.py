"""Staging for the Hub: every scheme family round-trips through timm's `local-dir:` loader, the
config carries non-default arguments, and every bad input is refused by name with nothing left behind.

The download from a real Hub server is tests/test_hub_roundtrip.py.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

import horesnet_timm  # noqa: F401
from horesnet_timm.cli import main
from horesnet_timm.hub import HubError, stage
from horesnet_timm.loading import LoadError, Loaded, load_model

from conftest import ONE_PER_FAMILY, randomised, train_py_checkpoint  # noqa: F401  (test_hub_roundtrip imports it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trained(name, **kwargs):
    return randomised(timm.create_model(name, **kwargs))


def outputs(model, input_size=(3, 32, 32)):
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


def dry_run(*argv):
    return main(['hub', 'push', *map(str, argv), '--dry-run'])


@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_dry_run_loads_back_identically(tmp_path, name, capsys):
    source = trained(name)
    checkpoint = tmp_path / 'weights.safetensors'
    save_file(source.state_dict(), str(checkpoint))
    out = tmp_path / 'staged'
    assert dry_run(name, '--checkpoint', checkpoint, '--repo-id', f'org/{name}.test', '--output-dir', out) == 0
    assert 'weights and outputs identical' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']  # no pickle
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}  # as the umask says, not private
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    input_size = source.pretrained_cfg['input_size']
    assert torch.equal(outputs(loaded, input_size), outputs(source, input_size))
    assert loaded.scheme == source.scheme
    if name.endswith('_adaptive'):
        assert any(n.endswith('step_size') for n, _ in loaded.named_parameters())


def test_config_records_scheme_classes_and_hub_id(tmp_path):
    """A train.py checkpoint made with --model-kwargs scheme=gill4 --num-classes 100 is published as such."""
    source = trained('horesnet10_rk4', scheme='gill4', num_classes=100)
    checkpoint = train_py_checkpoint(tmp_path / 'model_best.pth.tar', source, 'horesnet10_rk4',
                                     model_kwargs={'scheme': 'gill4'}, num_classes=100)
    out = tmp_path / 'staged'
    assert dry_run('horesnet10_rk4', '--checkpoint', checkpoint, '--repo-id', 'org/h10.c100', '--output-dir', out) == 0
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'horesnet10_rk4' and config['num_classes'] == 100
    # the class count at the top level only: transformers adds its own num_classes to model_args
    assert config['model_args']['scheme'] == 'gill4' and 'num_classes' not in config['model_args']
    cfg = config['pretrained_cfg']
    assert cfg['num_classes'] == 100 and cfg['hf_hub_id'] == 'org/h10.c100'
    assert cfg['input_size'] == [3, 32, 32] and cfg['mean'] == [0.4914, 0.4822, 0.4465] and cfg['crop_pct'] == 1.0
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert loaded.scheme == 'gill4' and loaded.num_classes == 100
    assert torch.equal(outputs(loaded), outputs(source))
    card = (out / 'README.md').read_text()
    assert 'epoch 299, EMA weights' in card and 'model_best.pth.tar' in card and 'scheme=\'gill4\'' in card


def test_refuses_folder_that_reloads_differently(tmp_path):
    """rk4 and gill4 share every key and shape: a config without scheme= would load the wrong wiring."""
    model = trained('horesnet10_rk4', scheme='gill4')
    model._model_args = {}  # as if the scheme had not been recorded
    out = tmp_path / 'staged'
    loaded = Loaded(model, 'horesnet10_rk4', 'test', {}, {}, True, 'test')
    with pytest.raises(HubError, match=r"does not load back as the model it holds .*trained in a 'gill4' block"):
        stage(loaded, out, 'org/x')
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin


def test_existing_output_dir_is_not_touched(tmp_path, capsys):
    checkpoint = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_rk4').state_dict(), str(checkpoint))
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    assert dry_run('horesnet10_rk4', '--checkpoint', checkpoint, '--repo-id', 'org/x', '--output-dir',
                   tmp_path / 'out') == 1
    assert 'already exists' in capsys.readouterr().err
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['keep.txt']


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_safetensors_named(tmp_path, capsys, damage):
    checkpoint = tmp_path / 'model.safetensors'
    save_file(trained('horesnet10_rk4').state_dict(), str(checkpoint))
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == 'truncated' else os.urandom(256))
    assert dry_run('horesnet10_rk4', '--checkpoint', checkpoint, '--repo-id', 'org/x',
                   '--output-dir', tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert str(checkpoint) in err and ('truncated' in err or 'corrupt' in err)
    assert not (tmp_path / 'out').exists()


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    # a train.py checkpoint says what it was trained as
    checkpoint = train_py_checkpoint(tmp_path / 'last.pth.tar', trained('horesnet18_euler'), 'horesnet18_euler')
    assert dry_run('horesnet10_rk4', '--checkpoint', checkpoint, '--repo-id', 'org/x') == 1
    assert "holds weights of horesnet18_euler, not horesnet10_rk4" in capsys.readouterr().err
    # a bare safetensors file does not: every key and shape that does not fit is named
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet18_euler').state_dict(), str(weights))
    assert dry_run('horesnet10_rk4', '--checkpoint', weights, '--repo-id', 'org/x') == 1
    err = capsys.readouterr().err
    assert 'does not fit horesnet10_rk4: 36 missing, 84 unexpected' in err
    assert 'unexpected: stages.0.blocks.1.subnets.0.' in err


def test_checkpoint_trained_with_other_model_kwargs(tmp_path):
    checkpoint = train_py_checkpoint(tmp_path / 'c.pth.tar', trained('horesnet10_rk4', scheme='gill4'),
                                     'horesnet10_rk4', model_kwargs={'scheme': 'gill4'})
    with pytest.raises(LoadError, match=r"with scheme='gill4'; scheme='rk38' would build another architecture"):
        load_model('horesnet10_rk4', checkpoint, {'scheme': 'rk38'})
    assert load_model('horesnet10_rk4', checkpoint).model.scheme == 'gill4'


def test_a_default_scheme_is_not_overridden(tmp_path, capsys):
    """The run used horesnet10_rk4's registered scheme (train.py records nothing): a card saying gill4 over
    rk4 weights would be a wrong artefact."""
    checkpoint = train_py_checkpoint(tmp_path / 'rk4.pth.tar', trained('horesnet10_rk4'), 'horesnet10_rk4')
    assert dry_run('horesnet10_rk4', '--checkpoint', checkpoint, '--model-kwargs', 'scheme=gill4', '--repo-id', 'org/x',
                   '--output-dir', tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert "trained as horesnet10_rk4 with scheme='rk4'; scheme='gill4' would build another architecture" in err
    assert not (tmp_path / 'out').exists()


def test_bad_names_and_arguments_are_one_line(tmp_path, capsys):
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_rk4').state_dict(), str(weights))
    for argv, message in [(['horesnet10_rk5'], "unknown model 'horesnet10_rk5'; did you mean"),
                          (['horesnet10_rk4', '--model-kwargs', 'num_classes=abc'],
                           "cannot build horesnet10_rk4 with num_classes='abc'")]:
        assert dry_run(*argv, '--checkpoint', weights, '--repo-id', 'org/x') == 1
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err and err.count('\n') == 1, err


def test_nan_weights_are_named(tmp_path, capsys):
    state = trained('horesnet10_rk4').state_dict()
    state['fc.weight'][0, 0] = float('inf')
    weights = tmp_path / 'w.safetensors'
    save_file(state, str(weights))
    assert dry_run('horesnet10_rk4', '--checkpoint', weights, '--repo-id', 'org/x') == 1
    err = capsys.readouterr().err
    assert 'NaN or infinite values in 1 tensors (e.g. fc.weight)' in err and 'reloads' not in err


def test_untrained_weights_are_not_published(capsys):
    assert dry_run('horesnet10_rk4', '--repo-id', 'org/x') == 1
    assert 'horesnet10_rk4 has random weights' in capsys.readouterr().err


def test_sigterm_during_staging_leaves_nothing(tmp_path):
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet86_rk8').state_dict(), str(weights))
    out = tmp_path / 'out'
    out.mkdir()
    process = subprocess.Popen([sys.executable, '-m', 'horesnet_timm', 'hub', 'push', 'horesnet86_rk8', '--checkpoint',
                                str(weights), '--repo-id', 'org/x', '--dry-run', '--output-dir', str(out / 'staged')],
                               env={**os.environ, 'PYTHONPATH': ROOT}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not os.listdir(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # wait for the hidden staging folder
    assert os.listdir(out), 'the staging folder never appeared'
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, process.stderr.read()
    assert os.listdir(out) == []


def test_missing_checkpoint_and_bad_repo_id(tmp_path, capsys):
    assert dry_run('horesnet10_rk4', '--checkpoint', tmp_path / 'nope.pth.tar', '--repo-id', 'org/x') == 1
    assert 'nope.pth.tar' in capsys.readouterr().err
    assert dry_run('horesnet10_rk4', '--checkpoint', tmp_path / 'nope.pth.tar', '--repo-id', 'org/a/b') == 2
    assert "--repo-id 'org/a/b' is not a Hub repository id" in capsys.readouterr().err


def test_onnx_joins_the_folder_self_contained(tmp_path, capsys):
    model = trained('horesnet10_rk4')
    weights = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(weights))
    exported = tmp_path / 'export' / 'horesnet10_rk4.onnx'
    exported.parent.mkdir()
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(exported), dynamo=True, verbose=False)
    out = tmp_path / 'staged'
    assert dry_run('horesnet10_rk4', '--checkpoint', weights, '--repo-id', 'org/x', '--output-dir', out,
                   '--onnx', exported) == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.onnx', 'model.safetensors']
    assert 'hf_hub_download(\'org/x\', \'model.onnx\')' in (out / 'README.md').read_text()
    # weights that the ONNX file was not exported from are refused, by file name
    other = tmp_path / 'other.safetensors'
    save_file({**model.state_dict(), 'fc.bias': model.fc.bias.detach() + 1}, str(other))
    assert dry_run('horesnet10_rk4', '--checkpoint', other, '--repo-id', 'org/x', '--output-dir', tmp_path / 'o2',
                   '--onnx', exported) == 1
    assert f"ONNX file '{exported}' does not compute what these weights compute" in capsys.readouterr().err
    # a file that is not ONNX at all
    (tmp_path / 'bad.onnx').write_bytes(b'\x08garbage')
    bad = tmp_path / 'bad.onnx'
    assert dry_run('horesnet10_rk4', '--checkpoint', weights, '--repo-id', 'org/x', '--onnx', bad) == 1
    assert 'bad.onnx' in capsys.readouterr().err
    assert not (tmp_path / 'o2').exists()


def _cli(tmp_path, *argv, **env):
    """`horesnet hub push` in a fresh process: huggingface_hub reads HF_ENDPOINT and HF_HOME at import."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    environ.update(HF_HOME=str(tmp_path / 'hf_home'), PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, '-m', 'horesnet_timm', 'hub', 'push', *map(str, argv)],
                          env=environ, capture_output=True, text=True, timeout=300)


def test_push_without_token(tmp_path):
    result = _cli(tmp_path, 'horesnet10_rk4', '--checkpoint', tmp_path / 'w.safetensors', '--repo-id', 'org/x')
    assert result.returncode == 1
    assert 'no Hugging Face token' in result.stderr and 'hf auth login' in result.stderr and 'HF_TOKEN' in result.stderr


def test_push_network_failure(tmp_path):
    import socket
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_rk4').state_dict(), str(weights))
    result = _cli(tmp_path, 'horesnet10_rk4', '--checkpoint', weights, '--repo-id', 'org/x',
                  HF_ENDPOINT=f'http://127.0.0.1:{port}', HF_TOKEN='hf_test')
    assert result.returncode == 1, result.stderr
    assert f'cannot reach the Hub at http://127.0.0.1:{port}' in result.stderr
    assert 'no commit was made' in result.stderr and 'Traceback' not in result.stderr


def test_download_network_failure_is_not_called_a_push(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    code = ('from horesnet_timm.hub import load_from_hub\ntry:\n    load_from_hub("org/x")\n'
            'except Exception as e:\n    print(type(e).__name__, e)')
    environ = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                            env={**environ, 'PYTHONPATH': ROOT, 'HF_HOME': str(tmp_path), 'HF_HUB_DISABLE_XET': '1',
                                 'HF_ENDPOINT': f'http://127.0.0.1:{port}'})
    assert result.stdout.startswith('HubError cannot reach the Hub'), result.stdout + result.stderr
    assert 'commit' not in result.stdout


# --- `horesnet hub publish-shipped`: the folders of horesnet_timm/weights/, one Hub commit each ---

def _shipped():
    from horesnet_timm.models.cifar import WEIGHTS
    folders = sorted(p.parent for p in WEIGHTS.glob('*/config.json'))
    assert folders, 'no shipped weights'
    return folders


def _digests(folder):
    import hashlib
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def uploads(monkeypatch):
    """huggingface_hub's create_repo and upload_folder, recorded instead of sent: one entry per commit, with
    the sha256 of every file in the folder as it was when uploaded."""
    import types
    from huggingface_hub import HfApi
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(('create_repo', repo_id, kwargs))
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        from pathlib import Path
        calls.append(('upload_folder', repo_id, dict(kwargs, files=_digests(Path(folder_path)))))
        return types.SimpleNamespace(commit_url=f'https://hub.test/{repo_id}/commit/0')

    monkeypatch.setattr(HfApi, 'create_repo', create_repo)
    monkeypatch.setattr(HfApi, 'upload_folder', upload_folder)
    return calls


def test_publish_shipped_dry_run_lists_every_folder(uploads, capsys):
    before = {f.name: _digests(f) for f in _shipped()}
    assert main(['hub', 'publish-shipped', '--dry-run']) == 0
    out = capsys.readouterr().out
    import hashlib
    import re
    for folder in _shipped():
        hub_id = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['hf_hub_id']
        assert hub_id == f'horesnet-timm/{folder.name}'
        assert f'{hub_id} <- {folder}\n' in out
        for path in sorted(folder.iterdir()):
            assert re.search(rf'^  {re.escape(path.name)} +{path.stat().st_size} bytes', out, re.M), path.name
        sha = hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()
        assert re.search(rf'^  model\.safetensors +\d+ bytes  sha256 {sha}$', out, re.M)
        assert f'checked: loads through timm (local-dir:) as {folder.name}, weights and outputs identical' in out
    assert out.rstrip().endswith('dry run: nothing uploaded ' + (
        '(1 repository, one commit each)' if len(before) == 1 else f'({len(before)} repositories, one commit each)'))
    assert uploads == [] and {f.name: _digests(f) for f in _shipped()} == before


def test_publish_shipped_makes_one_commit_per_folder(uploads, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    assert main(['hub', 'publish-shipped']) == 0
    folders = _shipped()
    commits = [c for c in uploads if c[0] == 'upload_folder']
    assert [c[1] for c in commits] == [f'horesnet-timm/{f.name}' for f in folders]
    assert [c[1] for c in uploads if c[0] == 'create_repo'] == [c[1] for c in commits]
    for (_, repo_id, call), folder in zip(commits, folders):
        assert call['files'] == _digests(folder)  # every file, byte for byte, in one commit
        assert folder.name in call['commit_message']
    out = capsys.readouterr().out
    assert out.count('pushed https://hub.test/') == len(folders)
    # another namespace, and one folder only
    uploads.clear()
    first = folders[0].name
    assert main(['hub', 'publish-shipped', '--namespace', 'someone', '--only', first]) == 0
    assert [(c[0], c[1]) for c in uploads] == [('create_repo', f'someone/{first}'),
                                               ('upload_folder', f'someone/{first}')]
    assert f'note: its config.json and README.md name horesnet-timm/{first}' in capsys.readouterr().out


def test_publish_shipped_refuses_a_folder_before_uploading_any(uploads, monkeypatch, tmp_path, capsys):
    """A folder whose card does not show its record, or that does not load as its tag, stops the whole run."""
    import shutil
    import horesnet_timm.models.cifar
    monkeypatch.setenv('HF_TOKEN', 'hf_test')
    folders = _shipped()
    for folder in folders:
        shutil.copytree(folder, tmp_path / folder.name)
    monkeypatch.setattr(horesnet_timm.models.cifar, 'WEIGHTS', tmp_path)
    last = tmp_path / folders[-1].name
    card = (last / 'README.md').read_text()
    top1 = json.loads((last / 'eval.json').read_text())['top1']
    (last / 'README.md').write_text(card.replace(f'| {top1} |', '| ? |'))
    assert main(['hub', 'publish-shipped']) == 1
    assert f"the card of shipped folder '{last}' does not show the top-1 of its eval.json" in capsys.readouterr().err
    (last / 'README.md').write_text(card)
    from safetensors.torch import load_file
    weights = load_file(str(last / 'model.safetensors'))
    save_file({**weights, 'fc.bias': weights['fc.bias'] + 1}, str(last / 'model.safetensors'))
    assert main(['hub', 'publish-shipped']) == 1
    assert f"staged folder '{last}' reloads with other weights (1 tensors differ, e.g. ['fc.bias'])" in \
        capsys.readouterr().err
    save_file(weights, str(last / 'model.safetensors'))
    config = json.loads((last / 'config.json').read_text())
    config['num_classes'] = config['model_args']['num_classes'] = 5
    (last / 'config.json').write_text(json.dumps(config))
    assert main(['hub', 'publish-shipped']) == 1
    err = capsys.readouterr().err
    assert f"staged folder '{last}' does not load back as the model it holds (" in err and 'size mismatch' in err
    assert err.count('\n') == 1 and 'internal error' not in err
    assert uploads == []
    assert main(['hub', 'publish-shipped', '--only', 'horesnet10_euler.nope', '--dry-run']) == 2
    assert "--only horesnet10_euler.nope: not a shipped folder; the package ships" in capsys.readouterr().err


def test_publish_shipped_without_token(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    environ.update(HF_HOME=str(tmp_path / 'hf_home'), PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, '-m', 'horesnet_timm', 'hub', 'publish-shipped'], env=environ,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == ''
    assert result.stderr.startswith('horesnet hub: error: no Hugging Face token: run `hf auth login`, or set HF_TOKEN')
    assert '--dry-run' in result.stderr and result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr


@pytest.mark.parametrize('flags', [['--static-batch', '--batch-size', '4'], ['--precision', 'fp16']])
def test_onnx_of_the_same_weights_at_another_batch_or_precision_is_accepted(tmp_path, flags):
    """Checked as `horesnet export` checks its own file: at its batch and precision (fp16 by top-1 agreement)."""
    from horesnet_timm.cli import main as cli
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_midpoint').state_dict(), str(weights))
    exported = tmp_path / 'm.onnx'
    assert cli(['export', 'horesnet10_midpoint', '--checkpoint', str(weights), '-o', str(exported), '--no-verify',
                *flags]) == 0
    assert dry_run('horesnet10_midpoint', '--checkpoint', weights, '--repo-id', 'org/x', '--output-dir',
                   tmp_path / 'staged', '--onnx', exported) == 0


@pytest.mark.parametrize('flags, differ', [(['--input-size', '3', '24', '24'], 'input_size [3, 24, 24] vs [3, 32, 32]'),
                                           (['--crop-mode', 'squash', '--crop-pct', '0.8'], "crop_pct 0.8 vs 1.0"),
                                           (['--mean', '0.5'], 'mean [0.5, 0.5, 0.5] vs')])
def test_onnx_that_preprocesses_otherwise_than_the_config_is_refused(tmp_path, capsys, flags, differ):
    """The same weights exported with other preprocessing compute the same logits, but a repository whose
    model.onnx and config.json disagree on how to feed them would give clients two answers."""
    from horesnet_timm.cli import main as cli
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_midpoint').state_dict(), str(weights))
    exported = tmp_path / 'm.onnx'
    assert cli(['export', 'horesnet10_midpoint', '--checkpoint', str(weights), '-o', str(exported), '--no-verify',
                *flags]) == 0
    capsys.readouterr()
    assert dry_run('horesnet10_midpoint', '--checkpoint', weights, '--repo-id', 'org/x', '--output-dir',
                   tmp_path / 'staged', '--onnx', exported) == 1
    err = capsys.readouterr().err
    assert 'preprocesses images otherwise than the weights' in err and differ in err, err
    assert not (tmp_path / 'staged').exists()


def test_onnx_whose_preprocessing_metadata_is_not_json_is_named(tmp_path, capsys):
    import onnx
    from horesnet_timm.cli import main as cli
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_midpoint').state_dict(), str(weights))
    exported = tmp_path / 'm.onnx'
    assert cli(['export', 'horesnet10_midpoint', '--checkpoint', str(weights), '-o', str(exported), '--no-verify']) == 0
    model = onnx.load(str(exported))
    next(p for p in model.metadata_props if p.key == 'mean').value = '(0.5, 0.5, 0.5)'  # Python's tuple, not JSON
    onnx.save(model, str(exported))
    capsys.readouterr()
    assert dry_run('horesnet10_midpoint', '--checkpoint', weights, '--repo-id', 'org/x', '--onnx', exported) == 1
    assert 'holds preprocessing metadata that is not JSON' in capsys.readouterr().err
