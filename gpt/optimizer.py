"""AdamW with weight decay on some parameters only.

minigrad's AdamW takes one weight_decay for all its parameters.  GPT-2 (and nanoGPT) decay
the 2-D weights but not the biases and LayerNorm gains, whose size is not what overfits.
This subclass keeps one optimizer (one learning rate, one step count, one state dict, so
it works with minigrad.jit and checkpoints) and switches the decay off for the second group.
"""
from typing import Sequence

from minigrad import Tensor
from minigrad.optim import AdamW


class DecayGroupsAdamW(AdamW):
    def __init__(self, decay: Sequence[Tensor], no_decay: Sequence[Tensor], lr=1e-3, betas=(0.9, 0.999),
                 eps=1e-8, weight_decay=0.1):
        super().__init__(list(decay) + list(no_decay), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.num_decay = len(decay)

    def _update(self, i, p, g):
        if i < self.num_decay:
            return super()._update(i, p, g)
        decay, self.weight_decay = self.weight_decay, 0.0    # the no-decay group
        try:
            return super()._update(i, p, g)
        finally:
            self.weight_decay = decay
