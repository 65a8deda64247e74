"""The inference path of the blocks (no autograd: maps reused in place, a planned basis of what later
stages read) computes what the autograd path computes, holds the maps the plan says, and
`horesnet bench` measures and prints its tables."""
import copy
import json
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.blocks import MultistepBlock, SchemeBlock, _plan_reads, live_maps
from horesnet_timm.cli import main

RK_SCHEMES = [n for n in list_schemes() if not get_scheme(n).multistep]


class Sub(nn.Module):
    """A small nonlinear sub-network that keeps a copy of what it returned, to catch overwrites."""

    def __init__(self, dim, dtype, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=dtype) / dim ** 0.5)
        self.w2 = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=dtype) / dim ** 0.5)
        self.returned = []

    def forward(self, x):
        out = torch.tanh(x @ self.w1.T) @ self.w2.T
        self.returned.append((out, out.detach().clone()))
        return out


def block_of(name, dtype, learn_step_size=False, act=None):
    scheme = get_scheme(name)
    if scheme.multistep:
        return MultistepBlock(Sub(6, dtype, 0), act_layer=act, dtype=dtype)
    block = SchemeBlock(scheme, [Sub(6, dtype, i) for i in range(scheme.stages)], learn_step_size=learn_step_size,
                        act_layer=act, dtype=dtype)
    if learn_step_size:
        with torch.no_grad():
            block.step_size.fill_(0.37)
    return block


def run(block, x, prev, keep):
    if isinstance(block, MultistepBlock):
        return block(x, prev)[0], []
    return block.forward_stages(x, keep)


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-12), (torch.float32, 2e-6)], ids=['f64', 'f32'])
@pytest.mark.parametrize('learn_step_size', [False, True], ids=['h=1', 'learned-h'])
@pytest.mark.parametrize('name', list_schemes())
def test_inference_path_equals_autograd_path(name, learn_step_size, dtype, tol):
    if learn_step_size and get_scheme(name).multistep:
        pytest.skip('lm learns k_n, not a step size')
    block = block_of(name, dtype, learn_step_size, act=nn.ReLU).eval()
    if isinstance(block, MultistepBlock):
        with torch.no_grad():
            block.k.fill_(-0.3)
    x = torch.randn(5, 6, dtype=dtype) * 2
    prev = torch.randn(5, 6, dtype=dtype)
    x0, prev0 = x.clone(), prev.clone()
    keep = list(range(1, get_scheme(name).stages))
    y_grad, taps_grad = run(block, x, prev, keep)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            y, taps = run(block, x, prev, keep)
        torch.testing.assert_close(y, y_grad.detach(), rtol=tol, atol=tol * y_grad.abs().max().item())
        for got, want in zip(taps, taps_grad, strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol * want.abs().max().item())
    # in place only in buffers the block made: never x, prev, or what a sub-network returned
    assert torch.equal(x, x0) and torch.equal(prev, prev0)
    for sub in block.subnets:
        for out, copy_ in sub.returned:
            assert torch.equal(out.detach(), copy_)


def naive_step(scheme, subnets, x, h):
    """Textbook RK with every k kept, straight from the exact tableau."""
    a = [[float(v) for v in row] for row in scheme.a]
    b = [float(v) for v in scheme.b]
    ks = []
    for i, f in enumerate(subnets):
        ks.append(f(x + h * sum((a[i][j] * ks[j] for j in range(i)), torch.zeros_like(x))))
    return x + h * sum((bi * k for bi, k in zip(b, ks)), torch.zeros_like(x))


@pytest.mark.parametrize('name', RK_SCHEMES)
def test_gradients_unchanged(name):
    """The planned combinations give the textbook step's gradients (weights, h and x), float64."""
    scheme = get_scheme(name)
    block = block_of(name, torch.float64, learn_step_size=True).train()
    reference = copy.deepcopy(block)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y = block(x)
    y_ref = naive_step(scheme, reference.subnets, xr, reference.step_size)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-11, atol=1e-11)
    for (n, p), (_, q) in zip(block.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-11, atol=1e-11, msg=n)


def test_drop_path_in_training_mode_without_grad_is_applied():
    """no_grad in train mode (e.g. an EMA update) still drops the step per sample, as with grad."""
    block = SchemeBlock(get_scheme('rk4'), [Sub(6, torch.float64, i) for i in range(4)], drop_path=0.5,
                        act_layer=None, dtype=torch.float64).train()
    x = torch.randn(64, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(0)
        y = block(x)
    torch.manual_seed(0)
    torch.testing.assert_close(y, block(x).detach())
    assert (y == x).all(dim=1).any()  # some samples kept only their skip connection


# --- the maps a block holds ------------------------------------------------------------------

class LiveMaps(TorchDispatchMode):
    """Counts the distinct buffers of the block's shape that ops made and that are still alive."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.refs, self.inside, self.between = shape, [], False, 0

    def live(self):
        return len({r().untyped_storage().data_ptr() for r in self.refs if r() is not None})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.refs += [weakref.ref(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.shape == self.shape]
        if not self.inside:
            self.between = max(self.between, self.live())
        return out


class Counter(nn.Module):
    """A sub-network that logs how many block-made maps are alive when it starts (its input included)."""

    def __init__(self, mode, log):
        super().__init__()
        self.mode, self.log = mode, log

    def forward(self, x):
        self.log.append(self.mode.live())
        self.mode.inside = True
        out = torch.tanh(x) + 0.1
        self.mode.inside = False
        return out


def count_maps(scheme, grad):
    log, mode = [], LiveMaps((8, 16))
    block = SchemeBlock(scheme, [Counter(mode, log) for _ in range(scheme.stages)], act_layer=None)
    x = torch.randn(8, 16)  # made outside: the block's input is not the block's
    with mode, torch.set_grad_enabled(grad):
        block(x)
    return log, mode.between


# Maps held while each sub-network runs (its input included). Before the plan, the block held every
# k_j until its last reader plus the running sum, the partial input and the input: midpoint 3, rk4 4,
# verner8 up to 12 (counted the same way on the previous blocks.py).
CLAIMED = {'euler': [0], 'midpoint': [0, 1], 'rk4': [0, 2, 2, 2],
           'verner8': [0, 2, 2, 3, 3, 3, 3, 4, 5, 6, 5, 4, 3, 2]}
BEFORE = {'midpoint': 3, 'rk4': 4, 'verner8': 12}


@pytest.mark.parametrize('grad', [False, True], ids=['no-grad', 'autograd'])
@pytest.mark.parametrize('name', RK_SCHEMES)
def test_live_maps_are_what_the_plan_claims_and_the_least_possible(name, grad):
    scheme = get_scheme(name)
    plan = live_maps(scheme.a, scheme.b)
    counted, between = count_maps(scheme, grad)
    assert counted == plan
    if name in CLAIMED:
        assert plan == CLAIMED[name]
    if name in BEFORE:
        assert max(plan) < BEFORE[name]
    # the least possible: while F_t runs, its input plus a basis of the later rows of (A, b) on k_0..k_{t-1}
    a = np.array([[float(v) for v in row] for row in scheme.a])
    b = np.array([float(v) for v in scheme.b])
    bound = [0] + [1 + np.linalg.matrix_rank(np.vstack([a[t + 1:, :t], b[None, :t]]), tol=1e-9)
                   for t in range(1, scheme.stages)]
    assert plan == bound
    # between sub-networks (no sub-network's internals alive): at most two more (k_t and one new sum)
    assert between <= max(plan) + 2
    # each input is formed from maps of only the k_j its row reads (what `truncate` relies on)
    block = SchemeBlock(scheme, [nn.Identity() for _ in range(scheme.stages)])
    assert _plan_reads(block.plan) == [list(r) for r in scheme.reads]


# --- horesnet bench ----------------------------------------------------------------------------

def test_bench_quick_prints_machine_versions_and_ratios(capsys, tmp_path):
    assert main(['bench', '--quick', '--output', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    machine = out.splitlines()[0]
    for part in ('CPUs', 'threads', 'python ', 'torch ', 'timm ', 'horesnet-timm '):
        assert part in machine
    assert 'median of 2 interleaved rounds' in out
    assert 'mode: eager' in out
    header = next(line for line in out.splitlines() if line.startswith('model'))
    for column in ('train ms', 'train xE', 'infer ms', 'infer xE', 'infer img/s', 'infer mem xE'):
        assert column in header
    euler = next(line for line in out.splitlines() if line.startswith('horesnet10_euler'))
    assert euler.split()[3] == '1.000'  # Euler against itself
    assert next(line for line in out.splitlines() if line.startswith('horesnet10_rk4'))
    saved = json.loads((tmp_path / 'bench-cpu.json').read_text())
    assert [r['model'] for r in saved['rows']] == ['horesnet10_euler', 'horesnet10_rk4']
    assert len(saved['rows'][1]['times']['train']) == 2
    assert '| model |' in (tmp_path / 'bench-cpu.md').read_text()
    assert (tmp_path / 'bench-cpu.png').read_bytes()[:4] == b'\x89PNG'


def test_bench_memory_probe_runs_in_a_fresh_process(capsys):
    """One model, one probe kind each: the growth is measured and is at least the maps it must hold."""
    assert main(['bench', '--quick', '--models', 'horesnet10_euler', '--memory', '--infer-batch', '16',
                 '--repeats', '1', '--warmup', '0']) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('horesnet10_euler'))
    train_mib, infer_mib = float(row.split()[8]), float(row.split()[10])
    assert train_mib > 1 and infer_mib >= 2 * 16 * 64 * 32 * 32 * 4 / 2 ** 20  # input and output of a conv


def test_bench_onnxruntime_mode(capsys):
    pytest.importorskip('onnxruntime')
    assert main(['bench', '--quick', '--models', 'horesnet10_euler', '--modes', 'onnxruntime', 'ort:raw',
                 '--repeats', '1']) == 0
    out = capsys.readouterr().out
    assert 'mode: onnxruntime' in out and 'mode: ort:raw' in out and 'vs eager' in out


def test_bench_refuses_unknown_models_and_modes(capsys):
    assert main(['bench', '--models', 'resnet50']) == 2
    assert main(['bench', '--modes', 'tensorrt']) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet50'" in err and "unknown mode 'tensorrt'" in err


@pytest.mark.parametrize('flag', [['--repeats', '0'], ['--train-batch', '0'], ['--infer-batch', '-1'],
                                  ['--ort-batch', '0'], ['--warmup', '-1']])
def test_bench_refuses_counts_out_of_range_rather_than_using_defaults(flag, capsys):
    """0 is a value given, not "unset": it must not quietly start the hour-long default run."""
    assert main(['bench', *flag]) == 2
    assert f'{flag[0]} must be at least' in capsys.readouterr().err


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, capsys):
    out = tmp_path / 'results'
    assert main(['bench', '--models', 'horesnet10_nope', '--output', str(out)]) != 0
    assert not out.exists()
    (tmp_path / 'file').write_text('x')
    assert main(['bench', '--quick', '--output', str(tmp_path / 'file')]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err
