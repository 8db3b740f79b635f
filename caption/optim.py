"""The optimisation shared by every trainer: Adam, a learning rate that decays linearly to its final
value at the last step, and one step with gradient-norm clipping."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def adam_with_linear_decay(params: Iterable[torch.nn.Parameter], lr: float, lr_final: float,
                           total_steps: int, weight_decay: float = 0.0):
    """Adam over the trainable parameters and a LambdaLR going from lr to lr_final in total_steps."""
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)
    total = max(1, total_steps)
    decay = lambda i: 1 - (1 - lr_final / lr) * min(i, total) / total  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, decay)


def optimizer_step(loss: Tensor, opt: torch.optim.Optimizer, sched, params: Iterable[torch.nn.Parameter],
                   clip: float, scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward, clip the global gradient norm (clip 0: no clipping, as the authors' Adam), step the
    optimizer and the schedule. With fp16's
    `scaler` the loss is scaled up for the backward pass and the gradients unscaled before clipping;
    a step whose gradients overflowed is skipped (and the scale lowered)."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()
    sched.step()
