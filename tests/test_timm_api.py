"""First-class timm behaviour, modelled on timm's own tests/test_models.py for the pinned version.

Structure checks run for every registered name on the meta device (no weights allocated); numeric
checks run on one representative per scheme family and layout.
"""
import copy
import fnmatch

import pytest
import timm
import torch
from timm.layers import DropPath
from timm.models import FeatureHookNet
from timm.models._manipulate import group_parameters

from horesnet_timm import get_scheme  # importing the package registers the models

ALL_MODELS = timm.list_models('horesnet*')
# one per scheme family (Euler, midpoint, RK4, Verner-8 fixed / learnable h, LM) and per layout
REPRESENTATIVES = [
    'horesnet10_euler', 'horesnet10_midpoint', 'horesnet10_rk4', 'horesnet30_rk8', 'horesnet30_rk8_adaptive',
    'horesnet58_lm', 'horesnet32i_midpoint', 'horesnet50i_lm',
]


def input_size_for(name):
    return (3, 32, 32) if 'i_' not in name else (3, 64, 64)


def make_input(name, batch=2):
    return torch.randn(batch, *input_size_for(name))


@pytest.mark.parametrize('name', ALL_MODELS)
def test_pretrained_cfg_is_complete(name):
    model = timm.create_model(name, device='meta')
    cfg = model.pretrained_cfg
    for key in ('input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'first_conv', 'classifier',
                'num_classes', 'license', 'pool_size'):
        assert cfg.get(key) is not None, f'{name}: pretrained_cfg lacks {key}'
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state and cfg['classifier'] + '.weight' in state
    assert model.num_classes == cfg['num_classes'] and model.in_chans == cfg['input_size'][0]
    assert not cfg.get('url') and not cfg.get('hf_hub_id'), 'no weights are published'
    if 'i_' in name:
        assert cfg['input_size'] == (3, 224, 224) and cfg['mean'] == timm.data.IMAGENET_DEFAULT_MEAN
    else:
        assert cfg['input_size'] == (3, 32, 32) and cfg['num_classes'] == 10


@pytest.mark.parametrize('name', ALL_MODELS)
def test_model_contract_on_meta_device(name):
    """The checks of timm's test_model_default_cfgs, at the default input size, without weights."""
    with pytest.raises(TypeError):
        timm.create_model(name, device='meta', not_a_model_arg=1)
    model = timm.create_model(name, device='meta', dtype=torch.float32).eval()
    assert all(t.device.type == 'meta' for t in [*model.parameters(), *model.buffers()])
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg['input_size'], device='meta')
    feats = model.forward_features(x)
    assert tuple(feats.shape[2:]) == cfg['pool_size'] and feats.shape[1] == model.num_features
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape[1] == model.head_hidden_size

    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > 1
    assert set(groups) == {n for n, _ in model.named_parameters()}

    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == pre.shape
    model.reset_classifier(0, '')  # keeps the spatial map
    assert tuple(model(x).shape[2:]) == cfg['pool_size']
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5 and model.global_pool.pool_type == ''

    assert timm.create_model(name, device='meta', num_classes=0)(x).shape == pre.shape
    assert timm.create_model(name, device='meta', num_classes=0, global_pool='')(x).dim() == 4

    # dtype change after a forward, and reset_classifier keeping device / dtype
    model = timm.create_model(name, device='meta').to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16
    model.reset_classifier(3)
    assert model.fc.weight.dtype == torch.bfloat16 and model.fc.weight.device.type == 'meta'


def test_construction_under_meta_device_context():
    with torch.device('meta'):
        model = timm.create_model('horesnet58_rk8_adaptive')
    assert {p.device.type for p in model.parameters()} == {'meta'}
    model = model.to_empty(device='cpu')
    model.init_weights()
    assert torch.isfinite(model.eval()(torch.randn(1, 3, 32, 32))).all()


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_drop_path_reaches_every_block_kind(name):
    model = timm.create_model(name, drop_path_rate=0.2, drop_rate=0.3)
    units = [m for m in model.modules() if hasattr(m, 'drop_path')]
    rates = [m.drop_path.drop_prob if isinstance(m.drop_path, DropPath) else 0. for m in units]
    # linear in depth from 0 to drop_path_rate (timm's rule); a one-block model gets 0
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.2 if len(units) > 1 else 0.)
    torch.manual_seed(0)
    x = make_input(name)
    model.train()
    assert not torch.equal(model(x), model(x)), 'stochastic depth / dropout inactive in train()'
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_global_pool_and_head(name):
    model = timm.create_model(name, global_pool='max', num_classes=4).eval()
    x = make_input(name)
    assert model.global_pool.pool_type == 'max'
    feats = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.amax((2, 3)))


def num_subnets(model):
    return sum(len(block.subnets) for stage in model.stages for block in stage.blocks)


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_features_only_and_intermediates(name):
    x = make_input(name)
    model = timm.create_model(name).eval()
    final, inter = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    info = model.feature_info
    # the CIFAR layout is flat: the stem, the input of each later sub-network, the trunk output
    assert len(info) == (num_subnets(model) + 1 if 'i_' not in name else 5)
    assert [t.shape[1] for t in inter] == [f['num_chs'] for f in info]
    assert [x.shape[-1] // t.shape[-1] for t in inter] == [f['reduction'] for f in info]
    assert len(model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)) == 2

    # default taps: a flat trunk's last 3 (as timm's ViTs), a staged trunk's stem and stages (as ResNet)
    features = timm.create_model(name, features_only=True).eval()
    features.model.load_state_dict(model.state_dict(), strict=False)  # the head was pruned away
    last = len(info) - 1
    expected = (last - 2, last - 1, last) if 'i_' not in name else (0, 1, 2, 3, 4)
    assert tuple(features.feature_info.out_indices) == expected
    for got, index in zip(features(x), expected, strict=True):
        torch.testing.assert_close(got, inter[index], rtol=0, atol=0)

    features = timm.create_model(name, features_only=True, out_indices=(-2, -1)).eval()
    features.model.load_state_dict(model.state_dict(), strict=False)
    outs = features(x)
    assert features.feature_info.channels() == [info[-2]['num_chs'], info[-1]['num_chs']]
    torch.testing.assert_close(outs[-1], final)


def hand_taps(model, x):
    """A flat model's taps from its stem, its sub-networks and the exact tableau, not its blocks' code."""
    scheme = get_scheme(model.scheme)
    a = [[float(v) for v in row] for row in scheme.a]
    b = [float(v) for v in scheme.b]
    x = stem = model.stem(x)
    inputs, prev = [], None
    for block in model.stages[0].blocks:
        if scheme.multistep:  # u_{n+1} = relu(u_n + F(u_n) + k_n (u_{n-1} - u_n)), no k_n in the first block
            inputs.append(x)
            y = x + block.subnets[0](x) + (0 if block.k is None else block.k * (prev - x))
            prev, x = x, torch.relu(y)
            continue
        h = 1. if block.step_size is None else block.step_size
        ks = []
        for i, subnet in enumerate(block.subnets):
            inputs.append(x + h * sum(a[i][j] * ks[j] for j in range(i)))
            ks.append(subnet(inputs[-1]))
        x = torch.relu(x + h * sum(bi * k for bi, k in zip(b, ks)))
    return [stem] + inputs[1:] + [x]


def small(name):
    """LM models at 6 blocks: enough for the taps, far cheaper than 28."""
    return dict(layers=(6,)) if name.endswith('_lm') and 'i_' not in name else {}


@pytest.mark.parametrize('name', [n for n in REPRESENTATIVES if 'i_' not in n])
def test_flat_taps_are_the_subnetwork_inputs(name):
    """Tap i is what sub-network i+1 reads: in an RK block x + h * sum_j a_ij k_j, else a block output.

    In float64: Verner-8's stage inputs sum terms of ~1e3 that cancel, beyond a float32 comparison.
    """
    torch.manual_seed(0)
    model = timm.create_model(name, dtype=torch.float64, **small(name)).eval()
    for block in model.stages[0].blocks:
        if getattr(block, 'step_size', None) is not None:
            block.step_size.data.fill_(0.6)  # so that a learnt h visibly enters every stage input
    x = make_input(name).double()
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        expected = hand_taps(model, x)
    assert len(taps) == len(expected) == num_subnets(model) + 1
    for i, (got, want) in enumerate(zip(taps, expected)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f'tap {i}')


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_hook_extractor_reads_the_same_taps(name):
    """feature_info names each tap's module (and hook_type) truthfully: timm's hook extractor agrees."""
    model = timm.create_model(name, **small(name)).eval()
    x = make_input(name)
    hooks = FeatureHookNet(copy.deepcopy(model), out_indices=tuple(range(len(model.feature_info)))).eval()
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        for i, (got, want) in enumerate(zip(hooks(x), taps, strict=True)):
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f'tap {i}')


@pytest.mark.parametrize('name', [
    'horesnet18_midpoint',  # taps at block boundaries and inside blocks
    'horesnet30_rk8_adaptive',  # one Verner-8 block: a cut before each of its 14 stages
    'horesnet58_lm',
    'horesnet32i_rk4',
])
def test_stop_early_and_pruning_end_at_each_tap(name):
    """timm's test_prune_intermediate_layers_contract, and: pruning keeps exactly what the tap needs."""
    model = timm.create_model(name, drop_rate=0.5, **small(name)).eval()
    per_block = get_scheme(model.scheme).stages
    x = make_input(name)
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
    for i in range(len(taps)):
        with torch.no_grad():
            got = model.forward_intermediates(x, indices=[i], stop_early=True, intermediates_only=True)
            torch.testing.assert_close(got[0], taps[i], rtol=0, atol=0, msg=f'stop_early tap {i}')
        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers([i]) == [i]
        if model.flat:  # the blocks that hold sub-networks 0..i-1, the last one cut before sub-network i
            blocks = pruned.stages[0].blocks if i else []
            assert len(blocks) == -(-i // per_block)
            assert not i or len(blocks[-1].subnets) == (i % per_block or per_block)
        else:
            assert len(pruned.stages) == i
        assert pruned.num_classes == 0 and pruned.num_features == model.feature_info[i]['num_chs']
        with torch.no_grad():
            torch.testing.assert_close(pruned.forward_features(x), taps[i], rtol=0, atol=0, msg=f'features {i}')
            got = pruned.forward_intermediates(x, indices=[i], intermediates_only=True)
            torch.testing.assert_close(got[0], taps[i], rtol=0, atol=0, msg=f'pruned tap {i}')
        pruned.train()
        sum(t.sum() for t in pruned.forward_intermediates(x, indices=[i], intermediates_only=True)).backward()
        unused = [n for n, p in pruned.named_parameters() if p.grad is None]
        assert not unused, f'pruned to {i}: unused {unused}'
    pruned = copy.deepcopy(model)
    pruned.prune_intermediate_layers([len(taps) - 1], prune_head=False)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize('name', ['horesnet18_midpoint', 'horesnet58_lm', 'horesnet32i_rk4'])
def test_features_only_torchscript(name):
    model = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, -1), **small(name)).eval()
    x = make_input(name)
    with torch.no_grad():
        for got, want in zip(torch.jit.script(model)(x), model(x), strict=True):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize('name', ['horesnet18_midpoint', 'horesnet58_lm'])
def test_intermediates_with_grad_checkpointing(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **small(name)).train()
    x = make_input(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = []
    for checkpointing in (False, True):
        model.load_state_dict(state)
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        final, taps = model.forward_intermediates(x)
        (final.sum() + sum(t.square().sum() for t in taps)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) == {n for n, _ in model.named_parameters() if not n.startswith('fc.')}
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_grad_checkpointing_same_outputs_and_grads(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3).train()
    x = make_input(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.load_state_dict(state)  # undo the BN running-stat update
    model.zero_grad()
    model.set_grad_checkpointing()
    out = model(x)
    out.sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_torchscript(name):
    model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = make_input(name)
    torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize('name', REPRESENTATIVES)
def test_channels_last(name):
    model = timm.create_model(name).eval()
    x = make_input(name)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-4)


def _compile_check(name):
    torch._dynamo.reset()
    model = timm.create_model(name).eval()
    x = make_input(name)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break is an error
    with torch.no_grad():
        expected, got = model(x), compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize('name', ['horesnet30_rk8_adaptive', 'horesnet58_lm'])
def test_torch_compile_fullgraph(name):
    _compile_check(name)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in ALL_MODELS if not fnmatch.fnmatch(n, 'horesnet*_rk8_adaptive')])
def test_torch_compile_fullgraph_all(name):
    _compile_check(name)
