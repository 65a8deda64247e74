"""The download path end to end against a real Hub-compatible HTTP server on loopback.

olah serves local git repositories as Hub model repositories (`<mirrors>/models/<org>/<name>`,
branch main). The repositories are folders staged by `horesnet hub push --dry-run`, committed
as they are; a fresh process with HF_ENDPOINT pointing at the server and an empty HF_HOME then
loads them with `timm.create_model('hf-hub:org/name', pretrained=True)`, exactly as a user would.
Not marked slow: this is the proof that what we publish is what timm reads from the Hub.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from horesnet_timm.cli import main

from conftest import grey_batch, load_subset
from test_hub import ROOT, train_py_checkpoint, trained

OLAH = Path(sys.executable).parent / 'olah-cli'
pytestmark = pytest.mark.skipif(not OLAH.exists(), reason="olah is not installed: pip install '.[test]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    """An olah server on a free loopback port, offline, serving git repositories under `mirrors`."""
    if shutil.which('git') is None:
        pytest.skip('git is needed to build the repositories olah serves')
    root = tmp_path_factory.mktemp('olah')
    mirrors, port = root / 'mirrors', free_port()
    mirrors.mkdir()
    (root / 'olah.toml').write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirrors-path = ["{mirrors}"]\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nrepos-path = "{root / "cache"}"\n\n[accessibility]\noffline = true\n')
    log = open(root / 'olah.log', 'wb')
    server = subprocess.Popen([str(OLAH), '-c', str(root / 'olah.toml')], cwd=root, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f'olah did not start: {(root / "olah.log").read_text()[-2000:]}')
                time.sleep(0.2)
        yield dict(url=f'http://127.0.0.1:{port}', mirrors=mirrors, root=root)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def publish(hub, repo_id: str, folder: Path, drop=(), damage=None) -> None:
    """Commit `folder` as the main branch of the repository olah serves as `repo_id`."""
    repo = hub['mirrors'] / 'models' / repo_id
    shutil.copytree(folder, repo)
    for name in drop:
        (repo / name).unlink()
    if damage:
        data = (repo / damage).read_bytes()
        (repo / damage).write_bytes(data[: len(data) // 2])
    git = ['git', '-c', 'user.name=test', '-c', 'user.email=test@example.com', '-c', 'commit.gpgsign=false']
    for args in (['init', '-q', '-b', 'main'], ['add', '-A'], ['commit', '-q', '-m', f'publish {repo_id}']):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True)


def in_fresh_process(hub, tmp_path, script: str, *args: str) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_ENDPOINT at import: run the client in its own process, with an empty cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    env.update(HF_ENDPOINT=hub['url'], HF_HOME=str(tmp_path / 'hf_home'), HF_HUB_DISABLE_TELEMETRY='1',
               PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, '-c', script, *args], env=env, capture_output=True, text=True, timeout=300)


LOAD = '''
import json, sys, timm, torch
import horesnet_timm
from safetensors.torch import load_file, save_file
results = {}
for repo_id in sys.argv[2:]:
    model = timm.create_model('hf-hub:' + repo_id, pretrained=True).eval()
    x = load_file(sys.argv[1])[repo_id]
    with torch.no_grad():
        results[repo_id] = model(x)
    print(json.dumps(dict(repo=repo_id, scheme=model.scheme, num_classes=model.num_classes,
                          hf_hub_id=model.pretrained_cfg['hf_hub_id'], source=model.pretrained_cfg['source'])))
save_file(results, sys.argv[1] + '.out.safetensors')
'''


def stage_dry_run(tmp_path, name, source, repo_id, **kwargs):
    weights = tmp_path / f'{name}.pth.tar'
    train_py_checkpoint(weights, source, name, **kwargs)
    out = tmp_path / repo_id.replace('/', '--')
    assert main(['hub', 'push', name, '--checkpoint', str(weights), '--repo-id', repo_id, '--dry-run',
                 '--output-dir', str(out)]) == 0
    return out


def test_hf_hub_round_trip(hub, tmp_path):
    """Weights pushed (dry run) and served by a Hub server load through `hf-hub:` with identical outputs,
    including a non-default scheme and class count that only config.json's model_args can carry."""
    cases = {
        'org/horesnet10_rk4.test': ('horesnet10_rk4', trained('horesnet10_rk4'), {}),
        'org/horesnet10_rk4.gill4-c100': ('horesnet10_rk4', trained('horesnet10_rk4', scheme='gill4', num_classes=100),
                                          dict(model_kwargs={'scheme': 'gill4'}, num_classes=100)),
    }
    inputs, expected = {}, {}
    for repo_id, (name, model, kwargs) in cases.items():
        publish(hub, repo_id, stage_dry_run(tmp_path, name, model, repo_id, **kwargs))
        inputs[repo_id] = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            expected[repo_id] = model.eval()(inputs[repo_id])
    save_file(inputs, str(tmp_path / 'inputs.safetensors'))
    result = in_fresh_process(hub, tmp_path, LOAD, str(tmp_path / 'inputs.safetensors'), *cases)
    assert result.returncode == 0, result.stderr[-3000:]
    got = load_file(str(tmp_path / 'inputs.safetensors.out.safetensors'))
    info = {r['repo']: r for r in map(json.loads, result.stdout.strip().splitlines())}
    for repo_id in cases:
        assert torch.equal(got[repo_id], expected[repo_id]), repo_id
        assert info[repo_id]['source'] == 'hf-hub' and info[repo_id]['hf_hub_id'] == repo_id
    assert info['org/horesnet10_rk4.gill4-c100']['scheme'] == 'gill4'
    assert info['org/horesnet10_rk4.gill4-c100']['num_classes'] == 100
    # the files came over HTTP into the fresh cache, not from the staging folder
    assert list((tmp_path / 'hf_home').rglob('model.safetensors'))


ERRORS = '''
import json, sys
import horesnet_timm
from horesnet_timm.hub import HubError, load_from_hub
for repo_id in sys.argv[1:]:
    try:
        load_from_hub(repo_id)
        print(json.dumps([repo_id, 'loaded']))
    except HubError as e:
        print(json.dumps([repo_id, str(e)]))
'''


def test_bad_hub_repositories_are_named(hub, tmp_path):
    folder = stage_dry_run(tmp_path, 'horesnet10_rk4', trained('horesnet10_rk4'), 'org/base')
    publish(hub, 'org/no-weights', folder, drop=['model.safetensors'])
    publish(hub, 'org/no-config', folder, drop=['config.json'])
    publish(hub, 'org/truncated', folder, damage='model.safetensors')
    result = in_fresh_process(hub, tmp_path, ERRORS, 'org/no-weights', 'org/no-config', 'org/truncated',
                              'org/does-not-exist')
    assert result.returncode == 0, result.stderr[-3000:]
    errors = dict(map(json.loads, result.stdout.strip().splitlines()))
    assert errors['org/no-weights'].startswith('hf-hub:org/no-weights has no model.safetensors')
    assert errors['org/no-config'].startswith('hf-hub:org/no-config has no config.json')
    assert errors['org/truncated'].startswith('model.safetensors in hf-hub:org/truncated cannot be read')
    assert 'truncated or corrupt' in errors['org/truncated']
    assert errors['org/does-not-exist'].startswith(f"repository 'org/does-not-exist' not found at {hub['url']}")


def test_push_refused_by_server(hub, tmp_path):
    """olah serves downloads only: its refusal to create a repository must read as a clear failure."""
    weights = tmp_path / 'w.safetensors'
    save_file(trained('horesnet10_rk4').state_dict(), str(weights))
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    env.update(HF_ENDPOINT=hub['url'], HF_HOME=str(tmp_path / 'hf_home'), HF_TOKEN='hf_test', PYTHONPATH=ROOT)
    command = [sys.executable, '-m', 'horesnet_timm', 'hub', 'push', 'horesnet10_rk4', '--checkpoint', str(weights),
               '--repo-id', 'org/new']
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"the Hub at {hub['url']} refused the request for 'org/new' (HTTP 405)" in result.stderr
    assert 'Traceback' not in result.stderr


SHIPPED = '''
import json, sys, timm, torch
import horesnet_timm
from safetensors.torch import load_file, save_file
from timm.models._builder import _resolve_pretrained_source
sys.path.insert(0, sys.argv[1])
from conftest import load_subset, top1
images, labels = load_subset()
inputs, outputs = load_file(sys.argv[2]), {}
for name in inputs:
    # the registered tag without its installed file: timm goes to the tag's hf_hub_id on its own
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=None)).eval()
    cfg = model.pretrained_cfg
    with torch.no_grad():
        outputs[name] = model(inputs[name])
    print(json.dumps(dict(name=name, file=cfg.get('file'), hf_hub_id=cfg['hf_hub_id'],
                          source=list(_resolve_pretrained_source(cfg)), top1=round(top1(model, images, labels), 2))))
save_file(outputs, sys.argv[2] + '.out.safetensors')
'''


def test_shipped_tags_load_from_the_hub(hub, tmp_path):
    """Each shipped folder, published as the repository its config.json names, is what the tag loads from the
    Hub when the installed file is set aside: timm's own `hf_hub_id` path, the top-1 its eval.json records on
    the shipped test subset, and the logits of the installed file."""
    import hashlib
    import timm
    from horesnet_timm.models.cifar import WEIGHTS
    folders = sorted(p.parent for p in WEIGHTS.glob('*/config.json'))
    assert folders
    images, _ = load_subset()
    inputs, expected, records = {}, {}, {}
    for folder in folders:
        name, hub_id = folder.name, json.loads((folder / 'config.json').read_text())['pretrained_cfg']['hf_hub_id']
        assert hub_id == f'horesnet-timm/{name}'
        publish(hub, hub_id, folder)
        model = timm.create_model(name, pretrained=True).eval()  # from the installed file
        cfg = model.pretrained_cfg
        assert cfg['file'] == str(folder / 'model.safetensors')
        inputs[name] = grey_batch(images[:8], model)
        with torch.no_grad():
            expected[name] = model(inputs[name])
        records[name] = json.loads((folder / 'eval.json').read_text())
    save_file(inputs, str(tmp_path / 'inputs.safetensors'))
    result = in_fresh_process(hub, tmp_path, SHIPPED, str(Path(__file__).parent), str(tmp_path / 'inputs.safetensors'))
    assert result.returncode == 0, result.stderr[-3000:]
    got = load_file(str(tmp_path / 'inputs.safetensors.out.safetensors'))
    info = {r['name']: r for r in map(json.loads, result.stdout.strip().splitlines())}
    assert sorted(info) == [f.name for f in folders]
    for folder in folders:
        name, hub_id = folder.name, f'horesnet-timm/{folder.name}'
        assert info[name]['file'] is None and info[name]['hf_hub_id'] == hub_id
        assert info[name]['source'] == ['hf-hub', hub_id]
        assert info[name]['top1'] == pytest.approx(records[name]['subset']['top1'], abs=0.01), name
        assert torch.equal(got[name], expected[name]), name
        # the weights came over HTTP into the fresh cache, and are the installed file's bytes
        downloaded = list((tmp_path / 'hf_home').rglob(f"models--horesnet-timm--{name}/snapshots/*/model.safetensors"))
        assert len(downloaded) == 1, name
        digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest(downloaded[0]) == digest(folder / 'model.safetensors')


def test_publish_shipped_refused_by_server(hub, tmp_path):
    """`horesnet hub publish-shipped` checks every folder, then the server's refusal reads as one clear line."""
    from horesnet_timm.models.cifar import WEIGHTS
    first = sorted(p.parent.name for p in WEIGHTS.glob('*/config.json'))[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    env.update(HF_ENDPOINT=hub['url'], HF_HOME=str(tmp_path / 'hf_home'), HF_TOKEN='hf_test', PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, '-m', 'horesnet_timm', 'hub', 'publish-shipped'], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"horesnet hub: error: the Hub at {hub['url']} refused the request for 'horesnet-timm/{first}' (HTTP 405)"
            in result.stderr)
    assert 'Traceback' not in result.stderr and result.stderr.count('\n') == 1, result.stderr
    assert 'already published' not in result.stderr and 'pushed' not in result.stdout
