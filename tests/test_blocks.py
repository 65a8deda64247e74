"""The generic block: against the Runge-Kutta update written out independently (float64); its inference
path (no autograd: maps reused in place, a planned basis of what later stages read) against its autograd
path; the maps it holds against the plan and the least possible; truncation, LM-ResNet's step, bf16."""
import copy
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.blocks import MultistepBlock, SchemeBlock
from horesnet_timm.stage_plan import HOLD, plan_reads, stage_plan

RK_SCHEMES = [n for n in list_schemes() if not get_scheme(n).multistep]


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x @ self.weight.T


def textbook_rk(scheme, subnets, x, h):
    """Textbook RK from the exact tableau: keep every k, then combine (no memory tricks). Returns (y, stage
    inputs)."""
    a = [[float(v) for v in row] for row in scheme.a]
    b = [float(v) for v in scheme.b]
    ks, inputs = [], []
    for i, f in enumerate(subnets):
        inputs.append(x + h * sum((a[i][j] * ks[j] for j in range(i)), torch.zeros_like(x)))
        ks.append(f(inputs[-1]))
    return x + h * sum((b[i] * k for i, k in enumerate(ks)), torch.zeros_like(x)), inputs


def linear_maps(weights):
    return [Linear(w) for w in weights]


def linear_block(scheme, seed=0, learn_step_size=False):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(5, 5, generator=gen, dtype=torch.float64) / 5 for _ in range(scheme.stages)]
    block = SchemeBlock(scheme, [Linear(w.clone()) for w in weights], learn_step_size=learn_step_size,
                        act_layer=None, dtype=torch.float64)
    return block, weights, torch.randn(3, 5, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize('name', RK_SCHEMES)
@pytest.mark.parametrize('learn_step_size', [False, True])
def test_block_matches_rk_update_for_linear_f(name, learn_step_size):
    scheme = get_scheme(name)
    block, weights, x = linear_block(scheme, learn_step_size=learn_step_size)
    h = 0.37 if learn_step_size else 1.0
    if learn_step_size:
        with torch.no_grad():
            block.step_size.fill_(h)
    torch.testing.assert_close(block(x), textbook_rk(scheme, linear_maps(weights), x, h)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name', RK_SCHEMES)
def test_stage_inputs_are_the_rk_stage_states(name):
    scheme = get_scheme(name)
    block, weights, x = linear_block(scheme, learn_step_size=True)
    with torch.no_grad():
        block.step_size.fill_(0.37)
    y, expected = textbook_rk(scheme, linear_maps(weights), x, 0.37)
    out, inputs = block.forward_stages(x, list(range(scheme.stages)))
    torch.testing.assert_close(out, y, rtol=1e-12, atol=1e-12)
    assert len(inputs) == scheme.stages - 1  # stage 0 reads x itself, which the caller has
    for got, want in zip(inputs, expected[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # only the stages asked for, in stage order; other numbers are ignored
    picked = block.forward_stages(x, [scheme.stages, scheme.stages - 1, 1, -1, 0])[1]
    torch.testing.assert_close(picked, inputs[:1] + inputs[-1:] if scheme.stages > 2 else inputs, rtol=0, atol=0)
    assert block.forward_stages(x, [])[1] == []


@pytest.mark.parametrize('name', [n for n in RK_SCHEMES if get_scheme(n).stages > 1])
def test_truncated_block_returns_the_stage_input_and_uses_all_it_keeps(name):
    """A model pruned to a tap inside a block keeps the block up to that stage and ends there."""
    scheme = get_scheme(name)
    for stages in range(1, scheme.stages):
        block, weights, x = linear_block(scheme, learn_step_size=True)
        block.drop_path = nn.Dropout(0.5)  # a full step's stochastic depth must not reach the stage input
        with torch.no_grad():
            block.step_size.fill_(0.37)
        block.truncate(stages)
        expected = textbook_rk(scheme, linear_maps(weights), x, 0.37)[1][stages]
        torch.testing.assert_close(block.train()(x), expected, rtol=1e-12, atol=1e-12)
        block(x).sum().backward()
        unused = [n for n, p in block.named_parameters() if p.grad is None]
        assert not unused, f'{name} cut before stage {stages}: unused {unused}'
        # what the stage input depends on, read off the exact tableau
        needed = {j for j in range(stages) if scheme.a[stages][j] != 0}
        for i in reversed(range(stages)):
            if i in needed:
                needed |= {j for j in range(i) if scheme.a[i][j] != 0}
        kept = {i for i, m in enumerate(block.subnets) if isinstance(m, Linear)}
        assert len(block.subnets) == stages and kept == needed


def test_truncation_drops_a_stage_the_cut_does_not_read():
    """Kutta-Nystrom's sixth stage reads k_1..k_4 but not k_5: cut there, F_5 goes."""
    block, _, _ = linear_block(get_scheme('kutta_nystrom5'))
    block.truncate(5)
    assert [type(m).__name__ for m in block.subnets] == ['Linear'] * 4 + ['Identity']
    with pytest.raises(ValueError, match='before stage 1..5, not 6'):
        linear_block(get_scheme('kutta_nystrom5'))[0].truncate(6)


class Recorder(nn.Module):
    """A sub-network that records how many earlier stage outputs are still alive when it runs."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, x):
        self.log['alive'].append(sum(ref() is not None for ref in self.log['refs']))
        out = torch.tanh(x) + 0.1
        self.log['refs'].append(weakref.ref(out))
        return out


@pytest.mark.parametrize('name, most_alive', [('rk4', 1), ('midpoint', 0), ('euler', 0), ('verner8', None)])
def test_block_frees_stage_outputs_early(name, most_alive):
    """A stage output is kept as it is only while it is one of the maps the plan keeps (RK4: k_1 until
    k_2 arrives; midpoint: never, its one reader's input is built at once); see
    test_live_maps_are_what_the_plan_claims_and_the_least_possible for every map the block holds."""
    scheme = get_scheme(name)
    log = {'alive': [], 'refs': []}
    block = SchemeBlock(scheme, [Recorder(log) for _ in range(scheme.stages)], act_layer=None)
    with torch.no_grad():
        block(torch.randn(2, 4))
    held = [count - (i > 0) for i, count in enumerate(live_maps(scheme))]  # less the stage input
    assert all(alive <= kept for alive, kept in zip(log['alive'], held, strict=True))
    if most_alive is not None:
        assert max(log['alive']) == most_alive
    assert max(log['alive']) < scheme.stages - 1 or scheme.stages <= 2


def test_block_rejects_wrong_number_of_subnets():
    with pytest.raises(ValueError, match='rk4.*4 stages, got 3'):
        SchemeBlock(get_scheme('rk4'), [nn.Identity() for _ in range(3)])


def test_multistep_block_formula():
    w = torch.randn(4, 4, dtype=torch.float64) / 4
    first = MultistepBlock(Linear(w.clone()), first=True, act_layer=None, dtype=torch.float64)
    block = MultistepBlock(Linear(w.clone()), act_layer=None, dtype=torch.float64)
    assert first.k is None and -0.1 <= block.k.item() <= 0.0  # Lu et al.'s initialisation
    u0 = torch.randn(2, 4, dtype=torch.float64)
    u1, prev = first(u0, None)
    torch.testing.assert_close(u1, u0 + u0 @ w.T)  # the first step is Euler
    torch.testing.assert_close(prev, u0)
    k = block.k.item()
    u2, _ = block(u1, prev)
    torch.testing.assert_close(u2, (1 - k) * u1 + k * u0 + u1 @ w.T)


def test_bf16_combination_runs_in_fp32():
    """Verner-8 weights reach ~600 with cancellation: the block must not combine stages in bf16."""
    scheme = get_scheme('verner8')
    torch.manual_seed(0)
    weights = [torch.randn(16, 16) / 8 for _ in range(scheme.stages)]
    ref = SchemeBlock(scheme, [Linear(w.double()) for w in weights], act_layer=None, dtype=torch.float64)
    x = torch.randn(8, 16)
    expected = ref(x.double())
    block = SchemeBlock(scheme, [Linear(w.clone()) for w in weights], act_layer=None).to(torch.bfloat16)
    got = block(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    rel = ((got.double() - expected).norm() / expected.norm()).item()
    assert rel < 2e-2, rel


# --- the inference path against the autograd path ---------------------------------------------

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


def run_block(block, x, prev, keep):
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
    y_grad, taps_grad = run_block(block, x, prev, keep)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            y, taps = run_block(block, x, prev, keep)
        torch.testing.assert_close(y, y_grad.detach(), rtol=tol, atol=tol * y_grad.abs().max().item())
        for got, want in zip(taps, taps_grad, strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol * want.abs().max().item())
    # in place only in buffers the block made: never x, prev, or what a sub-network returned
    assert torch.equal(x, x0) and torch.equal(prev, prev0)
    for sub in block.subnets:
        for out, copy_ in sub.returned:
            assert torch.equal(out.detach(), copy_)


@pytest.mark.parametrize('name', RK_SCHEMES)
def test_gradients_unchanged(name):
    """The planned combinations give the textbook step's gradients (weights, h and x), float64."""
    scheme = get_scheme(name)
    block = block_of(name, torch.float64, learn_step_size=True).train()
    reference = copy.deepcopy(block)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y = block(x)
    y_ref = textbook_rk(scheme, reference.subnets, xr, reference.step_size)[0]
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

def live_maps(scheme):
    """The maps the plan holds while each sub-network runs, that sub-network's input included (0 for the
    first, which reads the block's input x)."""
    live, counts = 0, [0]
    for step in stage_plan(tuple(tuple(row) for row in scheme.a), tuple(scheme.b))[:-1]:
        live += sum(op.kind == HOLD for op in step) - sum(sl >= 0 for op in step for sl in op.release)
        counts.append(live + 1)
    return counts

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
    plan = live_maps(scheme)
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
    assert plan_reads(block.plan) == [list(r) for r in scheme.reads]
