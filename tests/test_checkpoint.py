"""Reading weights: safetensors and train.py checkpoints load exactly; bad files fail with a clear error."""
import os
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

import horesnet_timm  # noqa: F401
from horesnet_timm.checkpoint import CheckpointError, checkpoint_meta, load_weights, read_state_dict


def _model(name='horesnet10_rk4', **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


def _randomised(model):
    with torch.no_grad():  # BN running stats and zero-init weights become non-trivial
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if t.ndim == 1 else 0.0))
    return model


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_round_trip(tmp_path):
    source = _randomised(_model())
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), str(path))
    assert _same_weights(load_weights(_model(), path), source)
    assert checkpoint_meta(str(path)) == {}  # no config.json beside it


def test_train_py_checkpoint_prefers_ema_and_strips_ddp_prefix(tmp_path):
    source, ema = _randomised(_model()), _randomised(_model())
    # the layout timm's CheckpointSaver writes (train.py under DDP saves the unwrapped model; a
    # hand-saved DDP state dict carries 'module.')
    checkpoint = {'epoch': 3, 'arch': 'horesnet10_rk4', 'version': 2,
                  'state_dict': {'module.' + k: v for k, v in source.state_dict().items()},
                  'state_dict_ema': ema.state_dict(), 'optimizer': {'state': {}, 'param_groups': []}}
    path = tmp_path / 'model_best.pth.tar'
    torch.save(checkpoint, path)
    assert checkpoint_meta(str(path))['arch'] == 'horesnet10_rk4'
    assert _same_weights(load_weights(_model(), path), ema)
    assert _same_weights(load_weights(_model(), path, use_ema=False), source)


def test_pickled_code_is_not_run(tmp_path, capfd):
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    plain, saved = tmp_path / 'evil.pth', tmp_path / 'evil_torch.pth'
    with open(plain, 'wb') as f:
        pickle.dump({'state_dict': Evil()}, f)
    torch.save({'state_dict': Evil()}, saved)
    for path in (plain, saved):
        with pytest.raises(CheckpointError, match=path.name) as e:
            read_state_dict(str(path))
        assert 'weights_only=False' not in str(e.value)  # no way offered to run it
    assert 'pwned' not in capfd.readouterr().out
    # torch's own format and a plain pickle alike: what was refused is named, without torch's protocol note
    for path in (saved, plain):
        with pytest.raises(CheckpointError, match=r"holds pickled Python objects \(posix\.system\).*never runs code"):
            read_state_dict(str(path))
    assert 'pickle protocol' not in capfd.readouterr().err
    (tmp_path / 'noise.pth').write_bytes(bytes(range(256)) * 8)  # no pickle at all
    with pytest.raises(CheckpointError, match='truncated, corrupt, or not a torch checkpoint'):
        read_state_dict(str(tmp_path / 'noise.pth'))


def test_missing_file_names_path(tmp_path):
    with pytest.raises(CheckpointError, match="'.*nope.safetensors' does not exist"):
        load_weights(_model(), tmp_path / 'nope.safetensors')


def test_folder_and_unreadable_file_say_so(tmp_path):
    with pytest.raises(CheckpointError, match=r"is a folder, not a file \(for a Hub folder use local-dir:"):
        read_state_dict(str(tmp_path))
    path = tmp_path / 'locked.safetensors'
    save_file(_model().state_dict(), str(path))
    path.chmod(0)
    try:
        if not os.access(path, os.R_OK):  # root reads anything
            with pytest.raises(CheckpointError, match='permission denied'):
                read_state_dict(str(path))
    finally:
        path.chmod(0o644)


def test_path_that_is_not_utf8_reads(tmp_path):
    source = _randomised(_model())
    path = os.path.join(os.fsencode(tmp_path), b'\xff-weights.safetensors')
    save_file(source.state_dict(), os.fsdecode(path))
    assert _same_weights(load_weights(_model(), os.fsdecode(path)), source)


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_safetensors(tmp_path, damage):
    path = tmp_path / 'model.safetensors'
    save_file(_model().state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == 'truncated' else b'\x00' * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(truncated|corrupt)"):
        load_weights(_model(), path)


def test_corrupt_torch_checkpoint(tmp_path):
    path = tmp_path / 'last.pth.tar'
    torch.save({'state_dict': _model().state_dict()}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r'last\.pth\.tar'):
        load_weights(_model(), path)


def test_other_architecture_names_every_problem(tmp_path):
    path = tmp_path / 'checkpoint.pth.tar'
    torch.save({'arch': 'horesnet18_euler', 'state_dict': _model('horesnet18_euler').state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_weights(_model('horesnet10_rk4'), path)
    message = str(e.value)
    assert "trained as 'horesnet18_euler'" in message and 'horesnet10_rk4' in message
    assert 'unexpected: stages.0.blocks.1.subnets.0.conv1.weight' in message  # 2 RK4 blocks vs 1


def test_wrong_num_classes_names_the_shape(tmp_path):
    path = tmp_path / 'model.safetensors'
    save_file(_model(num_classes=100).state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r'fc\.weight: checkpoint \(100, 64\) vs model \(10, 64\)'):
        load_weights(_model(), path)


def test_load_weights_refuses_another_wiring_of_the_same_shapes(tmp_path):
    """rk4 and gill4 share every key and shape: the record of a train.py run tells them apart, its
    registered default (rk4, never recorded) included."""
    from conftest import train_py_checkpoint
    path = train_py_checkpoint(tmp_path / 'rk4.pth.tar', _randomised(_model()), 'horesnet10_rk4', num_classes=10)
    with pytest.raises(CheckpointError, match=r"was trained as horesnet10_rk4\(num_classes=10, in_chans=3\), and the "
                                              r"model given is another architecture \(first difference: .*gill4"):
        load_weights(_model(scheme='gill4'), path)
    assert _same_weights(load_weights(_model(), path), load_weights(_model(), path))


def test_unreadable_files_are_named_for_what_they_are(tmp_path):
    """checkpoint_meta (which the launcher and the loader ask first) says why a file cannot be read, instead of
    answering 'nothing recorded' and letting a later step blame the wrong thing."""
    import random
    from horesnet_timm.checkpoint import checkpoint_meta
    noise = tmp_path / 'noise.pth.tar'
    for seed in range(50):  # the unpickler trips on random bytes in many ways: each must read as damage
        noise.write_bytes(random.Random(seed).randbytes(200))
        with pytest.raises(CheckpointError, match='truncated, corrupt'):
            checkpoint_meta(str(noise))
    torch.save({'state_dict': {}, 'hook': print}, tmp_path / 'code.pth.tar')
    with pytest.raises(CheckpointError, match='holds pickled Python objects'):
        checkpoint_meta(str(tmp_path / 'code.pth.tar'))
    folder = tmp_path / 'staged'
    folder.mkdir()
    save_file({'w': torch.zeros(1)}, str(folder / 'model.safetensors'))
    assert checkpoint_meta(str(folder / 'model.safetensors')) == {}  # bare: the caller names the model
    (folder / 'config.json').write_text('{"architecture": ')
    with pytest.raises(CheckpointError, match="the config.json beside .* cannot describe its weights"):
        checkpoint_meta(str(folder / 'model.safetensors'))
