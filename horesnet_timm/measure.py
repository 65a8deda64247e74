"""Measurement, one way for every command that measures (`horesnet tour`, `card`, `hub push`, `bench`,
`restack`): parameters, MACs and activations counted; time and peak memory timed.

Counts run on the meta device (shapes only, no weights allocated or touched), so they cost
milliseconds and need no weights.

Time: each case is called `warmup` times, then once per round for `rounds` rounds (interleaved, so load
from other processes falls on every case alike); wall and CPU seconds of the process per call, medians
reported by the callers. CPU memory: the growth of Linux's peak resident memory (VmHWM) during one call,
with the peak reset first (/proc/self/clear_refs) and glibc's mmap threshold fixed (so that a freed
tensor leaves the resident set instead of staying in malloc's cache). CUDA memory:
torch.cuda.max_memory_allocated during the call, less what was allocated before it.
"""
import ctypes
import gc
import platform
import time
from itertools import chain
from typing import Callable, Dict, List, Optional, Sequence

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['run_on_meta', 'count', 'model_stats', 'MMAP_THRESHOLD', 'MEMORY_ENV', 'cpu_name', 'vm_bytes', 'reset_peak',
           'fix_mmap_threshold', 'peak_growth', 'cuda_peak_growth', 'interleaved']


# --- counted: parameters, multiply-accumulates, activations ---

def run_on_meta(model: torch.nn.Module, x: torch.Tensor):
    """model(x) in eval mode (BatchNorm accepts a 1x1 map at batch 1) with every parameter and buffer replaced by
    a meta tensor: shapes only, whatever device the weights are on; each module's mode is restored afterwards."""
    tensors = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    state = {name: torch.empty_like(t, device='meta') for name, t in tensors}
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(model, state, (x,), tie_weights=False, strict=False)
    finally:
        for m, mode in modes:
            m.training = mode


def count(model: torch.nn.Module, input_size: Sequence[int], activations: bool = False) -> Dict[str, int]:
    """Parameters and multiply-accumulates (conv, linear, attention: torch.utils.flop_counter) of `model` for
    one image of `input_size`. `activations` adds the output elements of every conv and linear layer, the
    quantity timm's model cards report as "Activations (M)"."""
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel())) for m in model.modules()
             if activations and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with FlopCounterMode(display=False) as counter:
            run_on_meta(model, torch.empty(1, *input_size, device='meta'))
    finally:
        for hook in hooks:
            hook.remove()
    counts = dict(params=sum(p.numel() for p in model.parameters()), macs=counter.get_total_flops() // 2)
    if activations:
        counts['activations'] = sum(outputs)
    return counts


def model_stats(name: str, input_size: Optional[Sequence[int]] = None, activations: bool = False, **kwargs) -> Dict:
    """`count` of `timm.create_model(name, **kwargs)` at `input_size` (default: the model's configured size),
    in the units of timm's model cards (millions of parameters, GMACs, millions of activations)."""
    model = timm.create_model(name, device='meta', **kwargs)
    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    counts = count(model, input_size, activations)
    row = dict(
        model=name, scheme=getattr(model, 'scheme', ''), depth=getattr(model, 'depth', None),
        params_m=counts['params'] / 1e6, gmacs=counts['macs'] / 1e9, input_size='x'.join(map(str, input_size[1:])),
    )
    if activations:
        row['activations_m'] = counts['activations'] / 1e6
    return row


# --- timed: wall and CPU seconds, peak memory ---

MMAP_THRESHOLD = 64 * 1024  # bytes: glibc mmaps (and unmaps on free) every allocation above it
MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': str(MMAP_THRESHOLD)}  # the same setting for a fresh process


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vm_bytes(key: str) -> Optional[int]:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in bytes; None off Linux."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current resident memory (Linux >= 4.0); False where that is not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def fix_mmap_threshold() -> None:
    """MEMORY_ENV's setting for this process (glibc's mallopt); nothing where there is no glibc."""
    try:
        ctypes.CDLL('libc.so.6').mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def peak_growth(fn: Callable[[], None]) -> Optional[int]:
    """Bytes by which one call of `fn` raised the process's peak resident memory above what was resident before
    it; None where Linux's counters are missing. Where the peak cannot be reset, above the earlier peak (a
    lower bound)."""
    gc.collect()
    rss, earlier_peak = vm_bytes('VmRSS'), vm_bytes('VmHWM')
    reset = reset_peak()
    fn()
    peak = vm_bytes('VmHWM')
    if peak is None or rss is None or earlier_peak is None:
        return None
    return max(peak - (rss if reset else earlier_peak), 0)


def cuda_peak_growth(fn: Callable[[], None]) -> int:
    """Bytes of CUDA memory allocated at the peak of one call of `fn`, above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def interleaved(cases: Dict[str, Callable[[], None]], rounds: int, warmup: int, cuda: bool = False,
                log: Callable[[str], None] = lambda text: None) -> Dict[str, Dict[str, List[float]]]:
    """{case: {'wall': [seconds per call], 'cpu': [CPU seconds of the process per call]}}: `warmup` calls of
    each case, then `rounds` rounds of one call each. `cuda` waits for the device around each call."""
    sync = torch.cuda.synchronize if cuda else lambda: None
    for key, fn in cases.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        sync()
        log(f'  warm-up {key}: {time.perf_counter() - start:.1f} s')
    times = {key: {'wall': [], 'cpu': []} for key in cases}
    for r in range(rounds):
        for key, fn in cases.items():
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[key]['wall'].append(time.perf_counter() - wall)
            times[key]['cpu'].append(time.process_time() - cpu)
        log(f'  round {r + 1}/{rounds} done')
    return times
