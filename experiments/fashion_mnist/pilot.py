"""The measured pilot behind the evidence runs' settings: images/s of one training step (forward, backward,
SGD) of a depth-58 width-16 model at batch 128, 1x28x28, eager NCHW vs eager channels_last vs
torch.compile + channels_last. One JSON line per setting.

    python experiments/fashion_mnist/pilot.py horesnet58w16_rk4 horesnet58w16_rk8 >> experiments/fashion_mnist/pilot.jsonl
"""
import json
import platform
import sys
import time

import timm
import torch

import horesnet_timm  # noqa: F401  registers the models


def images_per_second(name: str, channels_last: bool, compile_: bool, steps: int = 12, warmup: int = 3):
    torch.manual_seed(0)
    model = timm.create_model(name, in_chans=1, num_classes=10)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    forward = torch.compile(model) if compile_ else model
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return 128 * steps / (time.perf_counter() - start)


def main():
    for name in sys.argv[1:]:
        for channels_last, compile_ in ((False, False), (True, False), (True, True)):
            rate = images_per_second(name, channels_last, compile_)
            print(json.dumps({'model': name, 'channels_last': channels_last, 'compile': compile_,
                              'images_per_s': round(rate, 1), 'threads': torch.get_num_threads(),
                              'torch': torch.__version__, 'cpu': platform.processor() or platform.machine()}),
                  flush=True)


if __name__ == '__main__':
    main()
