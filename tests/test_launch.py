"""`horesnet run SCRIPT`: a script that knows nothing of horesnet_timm finds our models."""
import subprocess
import sys
import textwrap


def test_run_script_sees_registered_models(tmp_path):
    (tmp_path / 'helper_module.py').write_text('SIZE = 32\n')  # the script's folder is on sys.path
    script = tmp_path / 'script.py'
    script.write_text(textwrap.dedent('''\
        import sys
        import timm
        from helper_module import SIZE
        model = timm.create_model(sys.argv[1])
        print(type(model).__name__, model.pretrained_cfg['input_size'][-1] == SIZE, sys.argv[2:])
        sys.exit(3)
    '''))
    plain = subprocess.run([sys.executable, str(script), 'horesnet10_rk4'], capture_output=True, text=True)
    assert plain.returncode != 0 and 'Unknown model' in plain.stderr
    launched = subprocess.run([sys.executable, '-m', 'horesnet_timm', 'run', str(script), 'horesnet10_rk4',
                               '--model', 'x', '-b', '2'], capture_output=True, text=True)
    assert launched.returncode == 3, launched.stderr
    assert launched.stdout.strip() == "HoResNet True ['--model', 'x', '-b', '2']"


def test_missing_script_is_named(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'horesnet_timm', 'run', str(tmp_path / 'validate.py')],
                            capture_output=True, text=True)
    assert result.returncode != 0 and 'validate.py' in result.stderr and 'timm script' in result.stderr


def _script(tmp_path):
    """A stand-in for validate.py: the launcher reads which flags a script takes from its source."""
    script = tmp_path / 'validate.py'
    script.write_text("flags = ['--checkpoint', '--model', '--model-kwargs', '--num-classes', '--in-chans', "
                      "'--input-size', '--img-size', '--mean', '--std', '--gp']\n")
    return str(script)


def _checkpoint(tmp_path):
    import timm
    import horesnet_timm  # noqa: F401
    from conftest import train_py_checkpoint
    model = timm.create_model('horesnet10_midpoint', scheme='heun', in_chans=1, num_classes=10)
    return train_py_checkpoint(tmp_path / 'heun.pth.tar', model, 'horesnet10_midpoint', model_kwargs={'scheme': 'heun'},
                               num_classes=10, input_size=[1, 20, 20], mean=[0.5], std=[0.25])


def test_recorded_model_kwargs_join_the_users(tmp_path):
    from horesnet_timm.commands.run import fill_from_checkpoint
    checkpoint = _checkpoint(tmp_path)
    argv = fill_from_checkpoint(_script(tmp_path), ['--checkpoint', checkpoint, '--model-kwargs', 'drop_rate=0.0'])
    i = argv.index('--model-kwargs')
    assert argv.count('--model-kwargs') == 1 and set(argv[i + 1:i + 3]) == {'drop_rate=0.0', "scheme='heun'"}
    argv = fill_from_checkpoint(_script(tmp_path), ['--checkpoint', checkpoint, '--model-kwargs=drop_rate=0.0'])
    i = argv.index('--model-kwargs')
    assert set(argv[i + 1:i + 3]) == {'drop_rate=0.0', "scheme='heun'"}


def test_users_image_size_is_kept(tmp_path):
    from horesnet_timm.commands.run import fill_from_checkpoint
    argv = fill_from_checkpoint(_script(tmp_path), ['--checkpoint', _checkpoint(tmp_path), '--img-size', '32'])
    assert '--input-size' not in argv and argv[argv.index('--img-size') + 1] == '32'
    assert argv[argv.index('--in-chans') + 1] == '1'


def test_contradicting_mean_is_refused(tmp_path):
    import pytest
    from horesnet_timm.errors import HoresnetError
    from horesnet_timm.commands.run import fill_from_checkpoint
    with pytest.raises(HoresnetError, match='trained with --mean 0.5'):
        fill_from_checkpoint(_script(tmp_path), ['--checkpoint', _checkpoint(tmp_path), '--mean', '0.3'])
    argv = fill_from_checkpoint(_script(tmp_path), ['--checkpoint', _checkpoint(tmp_path), '--mean', '0.50'])
    assert argv.count('--mean') == 1


def test_published_rgb_weights_on_a_grey_dataset_get_one_channel(tmp_path):
    from horesnet_timm.commands.run import fill_for_grey_images
    tag = ['--model', 'horesnet58w16_rk4.fmnist', '--pretrained']
    assert fill_for_grey_images([*tag, '--dataset', 'torch/fashion_mnist'])[-6:] == [
        '--in-chans', '1', '--input-size', '1', '28', '28']
    assert fill_for_grey_images([*tag, '--dataset', 'torch/fashion_mnist', '--in-chans', '1']).count('--in-chans') == 1
    for argv in ([*tag, '--dataset', 'torch/cifar10'], [*tag, '--dataset', 'torch/mnist', '--img-size', '32'],
                 [*tag, '--dataset', 'torch/mnist', '--in-chans', '3'], tag[:2] + ['--dataset', 'torch/mnist']):
        assert fill_for_grey_images(argv) == argv  # RGB data, the user's own size or channels, no weights
