"""The measured pilot behind the evidence runs' settings, and their cost per scheme: images/s of one
training step (forward, backward, SGD) of a depth-58 width-16 model at batch 128, 1x28x28, in eager NCHW,
eager channels_last or torch.compile + channels_last. One JSON line per model and setting; every line of
one invocation carries the same `invocation` stamp, so a comparison is read from one run.

    python experiments/fashion_mnist/pilot.py horesnet58w16_rk4 horesnet58w16_rk8 >> experiments/fashion_mnist/pilot.jsonl
    python experiments/fashion_mnist/pilot.py horesnet58w16_{euler,midpoint,rk4,rk8,lm} --settings channels_last \\
        >> experiments/fashion_mnist/pilot.jsonl     # the runs' setting, every scheme: RESULTS.md's cost table
"""
import argparse
import json
import os
import platform
import resource
import statistics
import time

import timm
import torch

import horesnet_timm  # noqa: F401  registers the models

SETTINGS = {'eager': (False, False), 'channels_last': (True, False), 'compile': (True, True)}


def images_per_second(name: str, channels_last: bool, compile_: bool, steps: int, warmup: int = 3) -> float:
    """Batch size over the median step time (a step disturbed by another process does not move it)."""
    torch.manual_seed(0)
    model = timm.create_model(name, in_chans=1, num_classes=10)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    forward = torch.compile(model) if compile_ else model
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return 128 / statistics.median(seconds)


def busy_seconds():
    """(CPU seconds all processes have used, of which this one's), Linux's /proc/stat; None elsewhere."""
    try:
        fields = [int(v) for v in open('/proc/stat').readline().split()[1:]]
    except OSError:
        return None
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK'), own.ru_utime + own.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('models', nargs='+')
    parser.add_argument('--settings', nargs='+', choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument('--steps', type=int, default=20, help='timed steps per model and setting')
    args = parser.parse_args(argv)
    invocation = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    for name in args.models:
        for setting in args.settings:
            channels_last, compile_ = SETTINGS[setting]
            before, start = busy_seconds(), time.perf_counter()
            rate = images_per_second(name, channels_last, compile_, args.steps)
            after, wall = busy_seconds(), time.perf_counter() - start
            # cores the machine's other processes kept busy meanwhile: a measurement beside other work is not a cost
            others = round(((after[0] - before[0]) - (after[1] - before[1])) / wall, 2) if before and after else None
            print(json.dumps({'model': name, 'channels_last': channels_last, 'compile': compile_,
                              'images_per_s': round(rate, 1), 'steps': args.steps, 'threads': torch.get_num_threads(),
                              'torch': torch.__version__, 'cpu': platform.processor() or platform.machine(),
                              'invocation': invocation, 'other_cores_busy': others}), flush=True)


if __name__ == '__main__':
    main()
