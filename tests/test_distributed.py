"""DistributedDataParallel, two processes over gloo on CPU, for every scheme family: no
find_unused_parameters, every parameter (step sizes and LM k_n included) gets a gradient, and the
replicas stay identical while each trains on its own data."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import timm
from torch.nn.parallel import DistributedDataParallel

import horesnet_timm  # noqa: F401
from conftest import ONE_PER_FAMILY

WORLD_SIZE = 2


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _train(rank, name, size, kwargs):
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = DistributedDataParallel(timm.create_model(name, num_classes=5, **kwargs),
                                    find_unused_parameters=False)
    scalars = [n for n, p in model.named_parameters() if p.ndim == 0]  # step sizes, k_n
    assert ('adaptive' in name or '_lm' in name) == bool(scalars), scalars
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(rank)  # each rank its own data
    for _ in range(3):  # DDP reports a parameter without gradient at the step after it happened
        images = torch.randn(2, 3, size, size, generator=generator)
        targets = torch.randint(0, 5, (2,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f'{name}: no gradient for {missing}'
        optimizer.step()
    # at the first step zero-init residual branches make every LM state equal, so dL/dk_n = 0 there
    zero = [n for n, p in model.named_parameters() if p.ndim == 0 and p.grad == 0]
    assert not zero, f'{name}: zero gradient for {zero}'
    mine = _flat(model.parameters())
    replicas = [torch.empty_like(mine) for _ in range(WORLD_SIZE)]
    dist.all_gather(replicas, mine)
    assert all(torch.equal(r, replicas[0]) for r in replicas), f'{name}: replicas differ'


def _worker(rank, store):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=WORLD_SIZE)
    try:
        for name in ONE_PER_FAMILY:  # the ImageNet layout at 64x64, with stochastic depth
            imagenet = 'i_' in name
            _train(rank, name, 64 if imagenet else 32, {'drop_path_rate': 0.1} if imagenet else {})
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_every_family(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / 'store'),), nprocs=WORLD_SIZE, join=True)
