"""The registered family: names, the paper's parameter counts, forward/backward, errors, precision."""
import re

import numpy as np
import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor

import horesnet_timm  # noqa: F401  registers the models
from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.models.horesnet import check_input

ALL_MODELS = timm.list_models('horesnet*')

# Table 3 of Luo et al. 2021, in millions, for the layout the paper describes (Sec. 3.1). At
# depths 82 and 86 the table prints 2.87M / 3.01M, which 80 / 84 convs of 64x64x3x3 (2.95M /
# 3.10M) already exceed: those two entries are the layout's counts, not the misprints.
TABLE3_PARAMS_M = {10: 0.30, 18: 0.59, 26: 0.89, 30: 1.03, 58: 2.07, 82: 2.96, 86: 3.11}
TABLE3_MODELS = [
    'horesnet10_euler', 'horesnet10_midpoint', 'horesnet10_rk4',
    'horesnet18_euler', 'horesnet18_midpoint', 'horesnet18_rk4',
    'horesnet26_rk4',
    'horesnet30_euler', 'horesnet30_midpoint', 'horesnet30_rk8', 'horesnet30_rk8_adaptive',
    'horesnet58_euler', 'horesnet58_midpoint', 'horesnet58_rk4', 'horesnet58_rk8', 'horesnet58_rk8_adaptive',
    'horesnet82_rk4',
    'horesnet86_euler', 'horesnet86_midpoint', 'horesnet86_rk8', 'horesnet86_rk8_adaptive',
]
IMAGENET_MODELS = [f'horesnet{d}i_{s}' for d in (32, 50) for s in ('euler', 'midpoint', 'rk4', 'lm')]
WIDTH16_MODELS = [f'horesnet58w16_{s}' for s in ('euler', 'midpoint', 'rk4', 'rk8', 'lm')]


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name, **kwargs):
    return timm.create_model(name, device='meta', **kwargs)


def test_registry_lists_the_whole_family():
    expected = set(TABLE3_MODELS) | {'horesnet58_lm', 'horesnet86_lm'} | set(IMAGENET_MODELS) | set(WIDTH16_MODELS)
    assert set(ALL_MODELS) == expected  # the pretrained tags: tests/test_published.py


@pytest.mark.parametrize('name', WIDTH16_MODELS)
def test_width16_names_are_the_depth58_models_at_width_16(name):
    from horesnet_timm.checkpoint import architecture_of
    base = name.replace('w16', '')
    assert architecture_of(meta_model(name)) == architecture_of(meta_model(base, stem_width=16, channels=(16,)))
    assert meta_model(name).depth == 58 and meta_model(name).stem.conv.out_channels == 16


@pytest.mark.parametrize('name', TABLE3_MODELS)
def test_table3_parameter_counts(name):
    depth = int(name.split('_')[0][len('horesnet'):])
    model = meta_model(name)
    assert model.depth == depth
    count = num_params(model)
    euler = num_params(meta_model(f'horesnet{depth}_euler' if depth not in (26, 82) else name, scheme='euler'))
    if name.endswith('_adaptive'):
        assert count == euler + (depth - 2) // 2 // 14  # one step size per Verner-8 block ("2.07M+2")
    else:
        assert count == euler  # same weights whatever the scheme
    assert count / 1e6 == pytest.approx(TABLE3_PARAMS_M[depth], rel=0.01)


@pytest.mark.parametrize('name, blocks', [('horesnet58_lm', 28), ('horesnet86_lm', 42)])
def test_lm_adds_one_k_per_block_but_the_first(name, blocks):
    depth = int(name.split('_')[0][len('horesnet'):])
    assert num_params(meta_model(name)) == num_params(meta_model(f'horesnet{depth}_euler')) + blocks - 1


@pytest.mark.parametrize('name', ALL_MODELS)
def test_create_forward_backward(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7, drop_path_rate=0.1).train()
    size = 32 if 'i_' not in name else 64
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == [], 'unused parameters'


def test_any_scheme_on_the_paper_layout():
    model = meta_model('horesnet58_euler', scheme='gill4')
    assert model.scheme == 'gill4' and len(model.stages[0].blocks) == 7
    assert all(len(block.subnets) == 4 for block in model.stages[0].blocks)
    assert num_params(model) == num_params(meta_model('horesnet58_euler'))


def test_scheme_that_does_not_divide_the_depth_says_which_depths_work():
    with pytest.raises(ValueError) as err:
        timm.create_model('horesnet58_euler', scheme='huta6')
    message = str(err.value)
    assert "'huta6' has 8 stages" in message and 'stage 1 has 28' in message
    assert 'layers=(24,) (depth 50) or layers=(32,) (depth 66)' in message
    ok = meta_model('horesnet58_euler', scheme='huta6', layers=(32,))
    assert ok.depth == 66 and len(ok.stages[0].blocks) == 4


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(scheme='rk5'), ValueError, 'unknown scheme'),
    (dict(subnet='dense'), ValueError, 'unknown subnet'),
    (dict(stem='deep'), ValueError, "unknown stem 'deep'; valid: 'cifar', 'imagenet'"),
    (dict(scheme='lm', learn_step_size=True), ValueError, 'learns its k_n'),
    (dict(in_chans=0), ValueError, r'in_chans must be an integer >= 1 \(3 for RGB, 1 for grayscale\), got 0'),
    (dict(in_chans=3.0), TypeError, r'in_chans must be an integer >= 1 .*got 3.0'),
    (dict(layers=4), TypeError, r'layers must be a tuple of integers, one per stage \(e.g. layers=\(28,\)\), got 4$'),
    (dict(layers=(4.0,)), TypeError, r'layers must be a tuple of integers, .*got \(4.0,\)'),
    (dict(layers=()), ValueError, r'layers must have one integer per stage .*got \(\)'),
    (dict(layers=(0,)), ValueError,
     r'stage 1 has no sub-networks and no transition block .* \(layers=\(0,\)\). Use layers=\(1,\) \(depth 4\)\.'),
    (dict(layers=(-4,)), ValueError,
     r'stage 1 has -4 sub-networks, and a count cannot be negative \(layers=\(-4,\)\)\. '
     r'Use layers=\(4,\) \(depth 10\)'),
    (dict(layers=(-6,), scheme='rk4'), ValueError, r'Use layers=\(4,\) \(depth 10\) or layers=\(8,\) \(depth 18\)\.'),
    (dict(channels=64), TypeError, r'channels must be a tuple of integers, .*got 64'),
    (dict(channels=(0,)), ValueError, r'channels must have one integer >= 1 per stage .*got \(0,\)'),
    (dict(stem_width=-64), ValueError, r'stem_width must be an integer >= 1, got -64'),
    (dict(num_classes=-1), ValueError, r'num_classes must be an integer >= 0 \(0 for no classifier\), got -1'),
    (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be a probability, 0 <= drop_path_rate < 1, got 1.5'),
    (dict(drop_path_rate=-0.5), ValueError, r'0 <= drop_path_rate < 1, got -0.5'),
    (dict(drop_rate=1.5), ValueError, r'drop_rate must be a probability, 0 <= drop_rate < 1, got 1.5'),
    (dict(drop_rate=1.0), ValueError, r'0 <= drop_rate < 1, got 1.0'),
    (dict(drop_rate='0.1'), TypeError, r"drop_rate must be a probability, a number with 0 <= drop_rate < 1, got '0.1'"),
    (dict(learn_step_size='no'), TypeError, r"learn_step_size must be True or False, got 'no'"),
    (dict(block_act='no'), TypeError, r"block_act must be True or False, got 'no'"),
    (dict(zero_init_last=1), TypeError, r'zero_init_last must be True or False, got 1'),
])
def test_bad_arguments_name_the_problem(kwargs, error, message):
    with pytest.raises(error, match=message):
        timm.create_model('horesnet10_euler', device='meta', **kwargs)


def test_a_new_stem_is_a_table_entry(monkeypatch):
    from horesnet_timm.models import horesnet
    monkeypatch.setitem(horesnet.STEMS, 'coarse', (5, 4, False))  # kernel 5, stride 4, no pool
    model = timm.create_model('horesnet10_euler', stem='coarse', num_classes=3).eval()
    assert model.stem.conv.kernel_size == (5, 5) and isinstance(model.stem_pool, torch.nn.Identity)
    assert model.feature_info[0]['reduction'] == 4 and model.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 8


def test_good_arguments_at_the_edges_build():
    assert meta_model('horesnet10_euler', num_classes=0).num_classes == 0  # timm's "no classifier"
    assert meta_model('horesnet10_euler', drop_rate=0., drop_path_rate=0.99, layers=[np.int64(4)]).depth == 10
    assert meta_model('horesnet32i_euler', layers=(4, 4, 4, 0)).depth == 32  # the last stage is its transition
    # train.py passes its unset options as None; timm's create_model drops them before the model sees them
    model = meta_model('horesnet10_euler', drop_block_rate=None, bn_momentum=None, bn_eps=None, scriptable=None)
    assert model.num_classes == 10


def test_unknown_model_is_timms_error():
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('horesnet11_rk4')


@pytest.mark.parametrize('shape, message', [
    ((3, 32, 32), r'got shape \[3, 32, 32\]; this is one CHW image: add a batch dimension with x\.unsqueeze\(0\)'),
    ((2, 32, 32, 3), r'got shape \[2, 32, 32, 3\]; this is an NHWC .*: permute it with x\.permute\(0, 3, 1, 2\)'),
    ((2, 1, 32, 32), r'the model takes 3 channels \(in_chans\) but the input has 1: create the model with '
                     r'in_chans=1 or convert the images'),
    ((1, 2, 3, 32, 32), r'got shape \[1, 2, 3, 32, 32\]; expected a 4-D NCHW batch, the input is 5-D'),
    ((1, 32, 32), r'expected a 4-D NCHW batch, the input is 3-D'),  # a CHW image, but of the wrong channel count
    ((32, 32), r'the input is 2-D'),
])
def test_bad_input_shape_names_the_problem(shape, message):
    model = timm.create_model('horesnet10_rk4').eval()
    x = torch.randn(*shape)
    with pytest.raises(ValueError, match=message):
        model(x)
    with pytest.raises(ValueError, match=message):
        model.forward_intermediates(x)


def test_input_check_survives_fx_and_torchscript():
    """The check is one call in an FX graph (not traced through), so a traced model still runs it."""
    model = timm.create_model('horesnet10_rk4').eval()
    nhwc = torch.randn(2, 32, 32, 3)
    traced = create_feature_extractor(model, ['fc'], tracer_kwargs=dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    assert any(node.target is check_input for node in traced.graph.nodes)
    with pytest.raises(ValueError, match='NHWC'):
        traced(nhwc)
    with pytest.raises(torch.jit.Error, match='NHWC'):
        torch.jit.script(model)(nhwc)


def test_in_chans_one():
    model = timm.create_model('horesnet10_rk4', in_chans=1).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize('name', [
    'horesnet58_rk8', 'horesnet58_rk8_adaptive',
    pytest.param('horesnet86_rk8', marks=pytest.mark.slow), pytest.param('horesnet58_rk4', marks=pytest.mark.slow),
])
def test_bf16_autocast_stays_finite_and_close_to_fp32(name):
    """Stated tolerance: relative L2 error of the logits under 2% (measured about 0.3-0.6%)."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    assert ((low.float() - ref).norm() / ref.norm()).item() < 2e-2
    assert (low.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize('name', list_schemes())
def test_every_scheme_trains_every_parameter(name):
    """One SGD step of the paper's layout, at least 4 sub-networks deep, for every scheme."""
    stages = get_scheme(name).stages
    torch.manual_seed(0)
    model = timm.create_model('horesnet10_euler', scheme=name, layers=(-(-4 // stages) * stages,))
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('kwargs, message', [
    (dict(global_pool=''), "global_pool '': choose one of"), (dict(global_pool='mean'), "global_pool 'mean'"),
    (dict(act_layer='bogus'), "unknown act_layer 'bogus'"), (dict(norm_layer='bogus'), "unknown norm_layer 'bogus'"),
])
def test_arguments_that_cannot_build_a_classifier_are_named(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        meta_model('horesnet10_rk4', **kwargs)
    assert meta_model('horesnet10_rk4', global_pool='', num_classes=0).num_features == 64  # features only: fine
