"""restack: any timm model's runs of residual blocks combined by a scheme (horesnet_timm/restacking.py), and the
`restacked` builder that makes it a timm model (models/restacked.py).

Each guarantee of docs/restack.md is a test here: euler is the base model bit for bit; parameters and
conv/linear/attention MACs equal the base's for every scheme (plus the step sizes or LM k_n); every
parameter gets a gradient; ONNX matches PyTorch; remainders stay plain residual blocks and the plan says
so; families restack cannot handle are refused with the reason. Small timm variants on CPU at small
inputs; every family and every scheme under -m slow.
"""
import contextlib
import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.blocks import MultistepBlock, SchemeBlock
from horesnet_timm.cli import build_parser, main
from horesnet_timm.restacking import FAMILIES, Increment, RestackError, measure_cost, plan_restack, restack

from conftest import make_image_folder, randomised

ROOT = Path(__file__).resolve().parents[1]

# family: (timm name, input size, a scheme that groups blocks and leaves a remainder where it can)
CASES = {
    'resnet_basic': ('resnet18', (3, 64, 64), 'midpoint'),
    'resnet_bottleneck': ('resnet50', (3, 64, 64), 'rk4'),
    'convnext': ('test_convnext', (3, 64, 64), 'rk4'),
    'vit': ('test_vit', (3, 160, 160), 'rk4'),
    'regnet': ('regnetx_002', (3, 64, 64), 'rk4'),
}
SLOW_CASES = {
    'resnetv2': ('resnetv2_50', (3, 64, 64), 'midpoint'),
    'efficientnet': ('efficientnet_b0', (3, 64, 64), 'midpoint'),
    'mobilenetv3': ('mobilenetv3_large_100', (3, 64, 64), 'midpoint'),
    'deit': ('deit_tiny_patch16_224', (3, 224, 224), 'rk4'),
    'convnext_atto': ('convnext_atto', (3, 64, 64), 'rk4'),
    'mixer': ('mixer_s16_224', (3, 224, 224), 'rk4'),
}
ALL_CASES = {**CASES, **SLOW_CASES}
slow_cases = [pytest.param(k, marks=pytest.mark.slow) for k in SLOW_CASES]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One thread: on a shared 2-core machine two OpenMP threads wait on each other (50x slower, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_BASES = {}


def base_model(case):
    """The case's base model with random weights, BN statistics and affine terms (so no block is the identity)."""
    if case not in _BASES:
        name, _, _ = ALL_CASES[case]
        torch.manual_seed(0)
        _BASES[case] = randomised(timm.create_model(name, num_classes=10), seed=1)
    return _BASES[case]


def inputs(case, batch=2):
    _, size, _ = ALL_CASES[case]
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(2))


def restacked(case, scheme=None, **kwargs):
    _, size, default = ALL_CASES[case]
    return restack(copy.deepcopy(base_model(case)), scheme or default, input_size=size, **kwargs).eval()


def extra_params(model) -> int:
    """One step size per restacked Runge-Kutta block with learn_step_size, one k_n per LM block but a run's first."""
    return sum(m.step_size is not None for m in model.modules() if isinstance(m, SchemeBlock)) + \
        sum(m.k is not None for m in model.modules() if isinstance(m, MultistepBlock))


# --- euler is the base model, bit for bit ---

@pytest.mark.parametrize('case', list(CASES) + slow_cases)
def test_euler_is_the_base_model_bitwise(case):
    """A one-stage tableau with b = (1,) and h = 1 is x + (block(x) - x), i.e. the block: restack keeps it
    unwrapped, so the model, its parameter names and its outputs are the base's exactly."""
    base, x = base_model(case).eval(), inputs(case)
    model = restacked(case, 'euler')
    assert model.restack_plan.unchanged and not any(isinstance(m, Increment) for m in model.modules())
    assert list(model.state_dict()) == list(base.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


@pytest.mark.parametrize('case', ['resnet_bottleneck', 'vit'])
def test_euler_with_a_learned_step_wraps_each_block_and_agrees_to_rounding(case):
    """With a learnable h every block becomes SchemeBlock(euler, [block(x) - x]): x + 1 * (block(x) - x) rounds
    differently from block(x), so this path agrees to fp32 round-off, not bit for bit."""
    base, x = base_model(case).eval(), inputs(case)
    model = restacked(case, 'euler', learn_step_size=True)
    assert sum(isinstance(m, SchemeBlock) for m in model.modules()) == sum(len(r.blocks) for r in
                                                                             model.restack_plan.runs)
    with torch.no_grad():
        a, b = model(x), base(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_the_builder_with_euler_and_the_base_weights_is_the_base_model():
    base = base_model('resnet_basic').eval()
    model = timm.create_model('restacked', base='resnet18', scheme='euler', num_classes=10).eval()
    model.load_state_dict(base.state_dict())
    x = inputs('resnet_basic')
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


# --- the Runge-Kutta and LM steps are the scheme's, over F_i(x) = block_i(x) - x ---

def test_a_group_computes_the_tableau_over_block_increments():
    """RK4 on four ConvNeXt blocks, written out by hand: k_i = F_i(x + sum_j a_ij k_j), y = x + sum_i b_i k_i."""
    model = restacked('convnext', 'rk4')
    group = model.stages[2].blocks[0]
    assert isinstance(group, SchemeBlock) and len(group.subnets) == 4
    blocks = [m.block for m in group.subnets]
    x = torch.randn(2, 48, 4, 4)
    F = lambda i, v: blocks[i](v) - v
    with torch.no_grad():
        k1 = F(0, x)
        k2 = F(1, x + k1 / 2)
        k3 = F(2, x + k2 / 2)
        k4 = F(3, x + k3)
        want = x + (k1 + 2 * k2 + 2 * k3 + k4) / 6
        assert torch.allclose(group(x), want, atol=1e-5)


def test_an_lm_run_mixes_in_the_previous_input():
    """u_{n+1} = u_n + F_n(u_n) + k_n (u_{n-1} - u_n), the first block of a run a plain step."""
    model = restacked('resnet_bottleneck', 'lm')
    chain = model.layer2[1]  # layer2.1-3: one LM chain
    assert [type(m).__name__ for m in chain.blocks] == ['MultistepBlock'] * 3
    assert chain.blocks[0].k is None and all(b.k is not None for b in chain.blocks[1:])
    f = [b.subnets[0].block for b in chain.blocks]
    x = torch.randn(2, 512, 8, 8)
    with torch.no_grad():
        u1 = f[0](x)
        u2 = u1 + (f[1](u1) - u1) + chain.blocks[1].k * (x - u1)
        u3 = u2 + (f[2](u2) - u2) + chain.blocks[2].k * (u1 - u2)
        assert torch.allclose(chain(x), u3, atol=1e-4)


# --- parameters and MACs equal the base's for every scheme ---

SCHEMES_DEFAULT = ['midpoint', 'rk4', 'verner8', 'lm']


def _check_counts(case, scheme, learn_step_size=False):
    name, size, _ = ALL_CASES[case]
    base = timm.create_model(name, device='meta', num_classes=10)
    try:
        model = restack(copy.deepcopy(base), scheme, learn_step_size, input_size=size)
    except RestackError as e:  # only when no run is long enough for the scheme
        assert f'{scheme} has {get_scheme(scheme).stages} stages, but the longest run' in str(e)
        longest = max(len(r.blocks) for r in plan_restack(base, 'euler', input_size=size).runs)
        assert get_scheme(scheme).stages > longest
        return
    a, b = measure_cost(base, size), measure_cost(model, size)
    plan = model.restack_plan
    if get_scheme(scheme).multistep:
        expected = sum(len(r.blocks) - 1 for r in plan.runs if len(r.blocks) > 1)
    else:
        expected = sum(len(r.groups) for r in plan.runs) if learn_step_size else 0
    assert b['params'] == a['params'] + expected == a['params'] + extra_params(model)
    assert b['macs'] == a['macs'] > 0
    assert 0 < b['combination_ops'] < 0.01 * b['macs']  # the stage combinations: below 1% of the MACs


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('scheme', SCHEMES_DEFAULT)
def test_parameters_and_macs_equal_the_base(case, scheme):
    _check_counts(case, scheme)


@pytest.mark.parametrize('case', ['resnet_bottleneck', 'vit'])
def test_a_learned_step_adds_one_parameter_per_block(case):
    _check_counts(case, 'rk4', learn_step_size=True)


@pytest.mark.slow
@pytest.mark.parametrize('case', list(ALL_CASES))
@pytest.mark.parametrize('scheme', [s for s in list_schemes() if s != 'euler'])
def test_parameters_and_macs_equal_the_base_every_scheme(case, scheme):
    _check_counts(case, scheme)
    if not get_scheme(scheme).multistep:
        _check_counts(case, scheme, learn_step_size=True)


# --- every parameter is used (DDP needs no find_unused_parameters) ---

@pytest.mark.parametrize('case,scheme,learn', [(c, None, False) for c in CASES] + [
    ('resnet_bottleneck', 'lm', False), ('convnext', 'midpoint', True), ('vit', 'lm', False)]
    + [pytest.param(c, None, False, marks=pytest.mark.slow) for c in SLOW_CASES])
def test_every_parameter_gets_a_gradient(case, scheme, learn):
    model = restacked(case, scheme, learn_step_size=learn).train()
    model(inputs(case, batch=4)).logsumexp(1).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


# --- the plan: runs, groups, remainders ---

def test_a_remainder_stays_a_plain_residual_block_and_the_plan_says_so():
    model = restacked('resnet_bottleneck', 'rk4')
    plan = model.restack_plan
    runs = {r.container: r for r in plan.runs}
    assert [(c, len(r.blocks)) for c, r in runs.items()] == [('layer1', 2), ('layer2', 3), ('layer3', 5), ('layer4', 2)]
    assert runs['layer3'].groups == (('1', '2', '3', '4'),) and runs['layer3'].remainder == ('5',)
    assert runs['layer2'].groups == () and runs['layer2'].remainder == ('1', '2', '3')
    assert [n for n, _ in model.layer3.named_children()] == ['0', '1', '5']  # a group is named after its first block
    assert isinstance(model.layer3[1], SchemeBlock) and type(model.layer3[2]).__name__ == 'Bottleneck'
    assert plan.renames == {f'layer3.{i}': f'layer3.1.subnets.{i - 1}.block' for i in range(1, 5)}
    text = plan.format()
    assert re.search(r'layer3\.1-5\s+5\s+1024x4x4\s+Bottleneck\s+layer3\.1-4\s+layer3\.5', text), text
    assert '12 blocks in 4 runs; 4 of them in 1 rk4 block, 8 left as plain residual blocks' in text
    assert 'layer1.0 (Bottleneck): it changes the shape 64x16x16 -> 256x16x16' in text


def test_tokens_restack_like_feature_maps():
    plan = restacked('vit', 'rk4').restack_plan
    assert [(r.container, r.blocks, r.shape, r.groups, r.remainder) for r in plan.runs] == [
        ('blocks', ('0', '1', '2', '3', '4', '5'), (101, 64), (('0', '1', '2', '3'),), ('4', '5'))]


def test_the_restack_command_prints_the_plan_and_the_totals(capsys):
    assert main(['restack', 'resnet50', '--scheme', 'rk4']) == 0
    out = capsys.readouterr().out
    assert 'restack resnet50 (ResNet) by rk4 (4 stages); shapes probed at 3x224x224' in out
    assert re.search(r'layer3\.1-5\s+5\s+1024x14x14\s+Bottleneck\s+layer3\.1-4\s+layer3\.5', out)
    assert re.search(r'parameters\s+25,557,032\s+25,557,032\s+1\.0000', out)
    assert re.search(r'MACs \(conv, linear, attention\)\s+([\d,]+)\s+\1\s+1\.0000', out)
    ops, share = re.search(r'stage combinations, element ops\s+([\d,]+) \(([\d.]+)% of the MACs\)', out).groups()
    assert int(ops.replace(',', '')) > 0 and 0 < float(share) < 1


# --- refusals, each with its reason ---

@pytest.mark.parametrize('name,scheme,reason', [
    ('vgg11', 'rk4', "cannot restack VGG: VGG's layers have no skip connection"),
    ('densenet121', 'rk4', 'concatenate their input to their output instead of adding it'),
    ('swin_tiny_patch4_window7_224', 'rk4', 'set_input_size'),
    ('horesnet10_rk4', 'rk4', 'already stacked by a scheme'),
    ('test_efficientnet', 'midpoint', 'none of its blocks is a residual block that keeps its shape (blocks.0.0 '
                                      '(ConvBnAct): it changes the shape'),
    ('resnet18', 'rk4', 'rk4 has 4 stages, but the longest run of residual blocks that keep their shape in this ResNet '
                        'has 2 (layer1.0-1: 2, layer2.1: 1, layer3.1: 1, layer4.1: 1), so nothing would change. '
                        'Schemes that fit: midpoint, heun, ralston, lm'),
    ('resnet18', 'nope', "unknown scheme 'nope'"),
    ('beit_base_patch16_224', 'rk4', 'cannot restack Beit (timm.models.beit): restack reads where a model keeps its '
                                     'residual blocks'),
])
def test_refused_with_the_reason(name, scheme, reason, capsys):
    model = timm.create_model(name, device='meta')
    with pytest.raises(RestackError, match=re.escape(reason)):
        restack(model, scheme)
    if scheme not in list_schemes():
        return  # the command refuses it as a usage error: test_benchmark_flags_are_checked_before_the_work
    assert main(['restack', name, '--scheme', scheme]) == 1
    err = capsys.readouterr().err
    assert err.startswith('horesnet restack: error: ') and reason in err and err.count('\n') == 1


def test_refused_arguments():
    with pytest.raises(RestackError, match="learn_step_size applies to Runge-Kutta schemes; 'lm' learns its k_n"):
        restack(timm.create_model('resnet50', device='meta'), 'lm', learn_step_size=True)
    model = restack(timm.create_model('resnet50', device='meta'), 'midpoint')
    with pytest.raises(RestackError, match='already restacked'):
        restack(model, 'rk4')
    with pytest.raises(ValueError, match='features_only'):
        timm.create_model('restacked', base='resnet50', features_only=True)
    with pytest.raises(ValueError, match="base must be a timm model name"):
        timm.create_model('restacked', base='resnet5O')


def test_a_vit_attention_mask_is_refused_by_name():
    model = restacked('vit', 'rk4')
    with pytest.raises(RestackError, match="takes one tensor, got attn_mask, is_causal: the base blocks' extra"):
        model.forward_features(inputs('vit'), attn_mask=torch.ones(101, 101, dtype=torch.bool))


def test_the_family_table_covers_the_cases():
    for case, (name, _, _) in ALL_CASES.items():
        model = timm.create_model(name, device='meta')
        assert any(cls.__name__ in FAMILIES for cls in type(model).__mro__), case


# --- the timm model: builder, API, weights, Hub, ONNX, train.py ---

def test_the_builder_is_the_base_class_with_the_timm_api():
    model = timm.create_model('restacked', base='resnet50', scheme='rk4', num_classes=10)
    assert type(model).__name__ == 'ResNet' and model.scheme == 'rk4' and model.num_classes == 10
    cfg = model.pretrained_cfg
    assert cfg['architecture'] == 'restacked' and cfg['first_conv'] == 'conv1' and cfg['classifier'] == 'fc'
    assert model._model_args == dict(num_classes=10, base='resnet50', scheme='rk4', learn_step_size=False)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 2048, 2, 2)
        assert torch.equal(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (2, 2048)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
    assert timm.create_model('restacked').restack_plan.base == 'resnet50'  # the defaults build


@pytest.mark.parametrize('case', ['resnet_bottleneck', 'vit', 'regnet', 'convnext']
                         + [pytest.param(c, marks=pytest.mark.slow) for c in ('efficientnet', 'resnetv2')])
def test_grad_checkpointing_computes_the_same(case):
    model = restacked(case).train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()  # the same statistics on both passes
    x = inputs(case)
    model(x).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, want[n], rtol=1e-4, atol=1e-6), n


def test_base_weights_load_into_the_restacked_model():
    """A base state dict (e.g. timm's pretrained weights) loads under restacked names; every block keeps its weights."""
    base = base_model('resnet_bottleneck')
    model = timm.create_model('restacked', base='resnet50', scheme='rk4', num_classes=10)
    model.load_state_dict(model.restack_plan.convert_state_dict(base.state_dict()))
    assert torch.equal(model.layer3[1].subnets[2].block.conv2.weight, base.layer3[3].conv2.weight)
    assert torch.equal(getattr(model.layer3, '5').conv1.weight, base.layer3[5].conv1.weight)  # the remainder
    converted = model.restack_plan.convert_state_dict(model.state_dict())
    assert list(converted) == list(model.state_dict())  # restacked names pass through
    lm = restacked('resnet_bottleneck', 'lm')
    missing, unexpected = lm.load_state_dict(lm.restack_plan.convert_state_dict(base.state_dict()), strict=False)
    assert not unexpected and missing == [n for n, _ in lm.named_parameters() if n.endswith('.k')]  # only the k_n


def test_pretrained_loads_the_base_weights_through_timm_then_restacks(tmp_path):
    """pretrained=True gives the base its published weights (timm's own loader and filters), then restacks;
    here the 'published' file is a local one, named as timm's pretrained_cfg_overlay names files."""
    from safetensors.torch import save_file
    base = base_model('resnet_basic')
    save_file(base.state_dict(), tmp_path / 'resnet18.safetensors')
    overlay = dict(file=str(tmp_path / 'resnet18.safetensors'), num_classes=10)  # else timm resets the head
    model = timm.create_model('restacked', base='resnet18', scheme='euler', num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=overlay).eval()
    x = inputs('resnet_basic')
    with torch.no_grad():
        assert torch.equal(model(x), base.eval()(x))
    midpoint = timm.create_model('restacked', base='resnet18', scheme='midpoint', num_classes=10, pretrained=True,
                                 pretrained_cfg_overlay=overlay)
    assert torch.equal(midpoint.layer1[0].subnets[1].block.conv1.weight, base.layer1[1].conv1.weight)


def test_loader_hub_folder_and_onnx(tmp_path):
    """loading.load_model builds it from its name and arguments; hub.stage's folder reloads through timm's
    local-dir: (its config.json names `restacked` with base and scheme) with identical outputs, and through
    our loader; export_onnx's onnxruntime check passes."""
    import json
    from horesnet_timm.hub import stage
    from horesnet_timm.loading import load_model
    from horesnet_timm.onnx_export import export_onnx
    loaded = load_model('restacked', model_args=dict(base='resnet50', scheme='rk4', num_classes=10),
                        data_args=dict(input_size=(3, 64, 64)))
    randomised(loaded.model, seed=3)
    folder = stage(loaded, str(tmp_path / 'hub'))
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'restacked'
    assert {k: config['model_args'][k] for k in ('base', 'scheme')} == dict(base='resnet50', scheme='rk4')
    assert config['num_classes'] == 10
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(x), loaded.model(x))
    again = load_model(f'local-dir:{folder}')
    assert again.model.scheme == 'rk4' and again.model.restack_plan.renames == loaded.model.restack_plan.renames
    with torch.no_grad():
        assert torch.equal(again.model(x), loaded.model(x))
    result = export_onnx(loaded.model, str(tmp_path / 'model.onnx'), batch_size=4)
    assert result['metadata']['model_name'] == 'restacked' and result['metadata']['scheme'] == 'rk4'
    assert result['checks'] and all(row['top1'] == 1.0 for row in result['checks'])


@pytest.mark.parametrize('case,scheme', [('vit', None), ('convnext', 'lm')]
                         + [pytest.param(c, None, marks=pytest.mark.slow) for c in ['resnet_basic', 'regnet']
                            + list(SLOW_CASES)])
def test_onnx_matches_pytorch(case, scheme, tmp_path):
    model = restacked(case, scheme)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=ALL_CASES[case][1])
    result = export_onnx_checked(model, tmp_path / 'model.onnx')
    assert result['checks']


def export_onnx_checked(model, path):
    from horesnet_timm.onnx_export import export_onnx
    return export_onnx(model, str(path), batch_size=2)  # raises ExportError beyond 1e-4 x max(1, |logit|)


TRAIN_PY = os.environ.get('TIMM_TRAIN_PY')


@pytest.mark.skipif(not TRAIN_PY, reason='set TIMM_TRAIN_PY=<pytorch-image-models>/train.py')
def test_train_py_trains_one_with_one_command(tmp_path):
    """The README's command: timm's unmodified train.py, --model restacked --model-kwargs base=... scheme=...;
    its checkpoint then loads through our loader as the model it was trained as."""
    import shutil
    from horesnet_timm.loading import load_model
    shutil.copy(TRAIN_PY, tmp_path / 'train.py')
    data = make_image_folder(tmp_path / 'data', size=32)
    command = (f'train.py --data-dir {data} --dataset "" --device cpu --workers 0 --no-prefetcher --model restacked '
               f'--model-kwargs base=resnet18 scheme=midpoint --device-modules horesnet_timm --num-classes 2 '
               f'--input-size 3 32 32 -b 4 --epochs 1 --output {tmp_path} --experiment run')
    result = subprocess.run([sys.executable, *shlex.split(command)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Model restacked created' in result.stdout + result.stderr
    loaded = load_model(checkpoint=str(tmp_path / 'run' / 'last.pth.tar'))
    assert loaded.architecture == 'restacked' and loaded.model.scheme == 'midpoint'
    assert isinstance(loaded.model.layer1[0], SchemeBlock)


# --- docs/restack.md ---

DOC = (ROOT / 'docs' / 'restack.md').read_text()


@pytest.mark.parametrize('command', [line.strip() for line in DOC.splitlines()
                                     if line.strip().startswith('horesnet ')])
def test_doc_commands_parse(command):
    build_parser().parse_args(shlex.split(command.split('  #')[0])[1:])


@pytest.mark.slow
def test_doc_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r'```python\n(.*?)```', DOC, re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, 'docs/restack.md', 'exec'), {})


def test_doc_output_is_what_the_command_prints(capsys):
    """The session shown in docs/restack.md, figures included, is today's output of the command."""
    shown = re.search(r'```\n\$ (horesnet restack [^\n]*)\n(.*?)```', DOC, re.S)
    assert main(shlex.split(shown.group(1))[1:]) == 0
    assert capsys.readouterr().out.strip() == shown.group(2).strip()


def test_benchmark_prints_medians_and_ratios(capsys):
    """`--benchmark` times both models the way `horesnet bench` does (horesnet_timm/measure.py)."""
    assert main(['restack', 'resnet18', '--scheme', 'midpoint', '--benchmark', '--input-size', '3', '32', '32',
                 '--batch-size', '2', '--repeats', '2', '--warmup', '1', '--threads', '1']) == 0
    out = capsys.readouterr().out
    assert 'medians of 2 interleaved repeats after 1 warm-up' in out
    for label in ('training step, wall', 'training step, CPU time', 'inference, wall'):
        base, restacked, ratio = re.search(rf'{label} +([\d.]+) \S+ +([\d.]+) \S+ +(\S+)', out).groups()
        assert float(base) > 0 and float(restacked) > 0 and abs(float(ratio) - float(restacked) / float(base)) < 0.01
    # peak memory: MiB, or '< 1 MiB' with no ratio where the growth is within the resident set's page noise
    assert re.search(r'inference, peak memory +(\d+\.\d MiB|< 1 MiB) +(\d+\.\d MiB|< 1 MiB) +(\d\.\d{3}|n/a)', out)


@pytest.mark.parametrize('argv, message', [
    (['--scheme', 'bogus'], "argument --scheme: invalid choice: 'bogus'"),
    (['--repeats', '2'], '--repeats sets the benchmark: add --benchmark, or drop --repeats'),
    (['--benchmark', '--threads', '100000'], '--threads 100000: this machine has'),
    (['--benchmark', '--batch-size', '1', '--input-size', '3', '32', '32', '--repeats', '1', '--warmup', '0'],
     'a training step with BatchNorm needs more than one value per channel'),
])
def test_benchmark_flags_are_checked_before_the_work(argv, message, capsys):
    """Once an internal error (batch 1), a silently ignored flag, and a --threads that hung the machine."""
    with pytest.raises(SystemExit) if 'invalid choice' in message else contextlib.nullcontext():
        assert main(['restack', 'resnet18', '--scheme', 'midpoint', *argv] if argv[0] != '--scheme'
                    else ['restack', 'resnet18', *argv]) == 2
    assert message in capsys.readouterr().err


def test_torch_running_out_of_memory_is_named(monkeypatch, capsys):
    import horesnet_timm.commands.restack as command

    def allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setattr(command, 'benchmark', allocate)
    assert main(['restack', 'resnet18', '--scheme', 'midpoint', '--benchmark', '--input-size', '3', '32', '32']) == 1
    assert 'out of memory: use a smaller batch or input' in capsys.readouterr().err
