"""The generic block against the RK update written out independently, in float64."""
import weakref

import pytest
import torch
import torch.nn as nn

from horesnet_timm import get_scheme, list_schemes
from horesnet_timm.blocks import MultistepBlock, SchemeBlock

RK_SCHEMES = [n for n in list_schemes() if not get_scheme(n).multistep]


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x @ self.weight.T


def naive_rk_stages(scheme, weights, x, h):
    """Textbook RK: keep every k, then combine (no memory tricks). Returns (y, stage inputs)."""
    a = [[float(v) for v in row] for row in scheme.a]
    b = [float(v) for v in scheme.b]
    ks, inputs = [], []
    for i, w in enumerate(weights):
        inputs.append(x + h * sum((a[i][j] * ks[j] for j in range(i)), torch.zeros_like(x)))
        ks.append(inputs[-1] @ w.T)
    return x + h * sum((b[i] * k for i, k in enumerate(ks)), torch.zeros_like(x)), inputs


def naive_rk_step(scheme, weights, x, h):
    return naive_rk_stages(scheme, weights, x, h)[0]


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
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(5, 5, generator=gen, dtype=torch.float64) / 5 for _ in range(scheme.stages)]
    block = SchemeBlock(scheme, [Linear(w.clone()) for w in weights], learn_step_size=learn_step_size,
                        act_layer=None, dtype=torch.float64)
    h = 1.0
    if learn_step_size:
        h = 0.37
        with torch.no_grad():
            block.step_size.fill_(h)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(block(x), naive_rk_step(scheme, weights, x, h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name', RK_SCHEMES)
def test_stage_inputs_are_the_rk_stage_states(name):
    scheme = get_scheme(name)
    block, weights, x = linear_block(scheme, learn_step_size=True)
    with torch.no_grad():
        block.step_size.fill_(0.37)
    y, expected = naive_rk_stages(scheme, weights, x, 0.37)
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
        expected = naive_rk_stages(scheme, weights, x, 0.37)[1][stages]
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
    k_2 arrives; midpoint: never, its one reader's input is built at once); see tests/test_bench.py
    for the count of every map the block holds."""
    from horesnet_timm.blocks import live_maps
    scheme = get_scheme(name)
    log = {'alive': [], 'refs': []}
    block = SchemeBlock(scheme, [Recorder(log) for _ in range(scheme.stages)], act_layer=None)
    with torch.no_grad():
        block(torch.randn(2, 4))
    held = [count - (i > 0) for i, count in enumerate(live_maps(scheme.a, scheme.b))]  # less the stage input
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
