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
