"""A stage: an optional transition, then blocks applied in sequence (an LM-ResNet stage also hands each block
the previous block's input). The HO-ResNet models and restacked timm networks both build them."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from timm.models import checkpoint, checkpoint_seq

__all__ = ['Stage', 'MultistepStage']


class Stage(nn.Module):
    """An optional transition, then scheme blocks applied in sequence."""

    def __init__(self, transition: Optional[nn.Module], blocks: List[nn.Module]):
        super().__init__()
        self.transition = transition if transition is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward_intermediates(
            self, x: torch.Tensor, indices: List[int], stop: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run the blocks that hold sub-networks 0..stop-1. Also return, in order, the input of each
        sub-network i listed in `indices` (numbered from 0 across the stage), 0 < i <= N, where the
        input of sub-network N is the stage's output; other numbers are ignored."""
        x = self.transition(x)
        intermediates: List[torch.Tensor] = []
        first = 0
        for block in self.blocks:
            if first < stop:
                keep = [i - first for i in indices]
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x, inputs = checkpoint(block.forward_stages, x, keep)
                else:
                    x, inputs = block.forward_stages(x, keep)
                intermediates.extend(inputs)
                if first + len(block.subnets) in indices:
                    intermediates.append(x)
            first += len(block.subnets)
        return x, intermediates

    def truncate(self, num_subnets: int):
        """Keep what the input of sub-network `num_subnets` needs; the stage then returns that input."""
        blocks, first = [], 0
        for block in self.blocks:
            if first < num_subnets < first + len(block.subnets):
                block.truncate(num_subnets - first)  # the tap is inside this block
            if first < num_subnets:
                blocks.append(block)
            first += len(block.subnets)
        self.blocks = nn.Sequential(*blocks)


class MultistepStage(Stage):
    """LM-ResNet stage: each block also sees the previous block's input."""

    def __init__(self, transition: Optional[nn.Module], blocks: List[nn.Module]):
        super().__init__(transition, [])
        self.blocks = nn.ModuleList(blocks)  # not Sequential: its blocks take and return (x, prev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x, [], len(self.blocks))[0]

    def forward_intermediates(
            self, x: torch.Tensor, indices: List[int], stop: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        x = self.transition(x)
        intermediates: List[torch.Tensor] = []
        prev: Optional[torch.Tensor] = None
        for i, block in enumerate(self.blocks):
            if i < stop:
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x, prev = checkpoint(block, x, prev)
                else:
                    x, prev = block(x, prev)
                if i + 1 in indices:
                    intermediates.append(x)
        return x, intermediates

    def truncate(self, num_subnets: int):
        self.blocks = self.blocks[:num_subnets]
