"""Adam for the solver, on the update function `torch.optim.Adam.step` itself calls
(`torch.optim.adam.adam`), with the same state, so the numbers are identical
(tests/test_solver.py compares them step by step).

Why not `torch.optim.Adam`: its constructor and `zero_grad` import `torch._dynamo` on first use,
3 s on these CPUs, which every new process (a CLI run, each Ray actor, each Serve replica) paid
before its first step. The solver needs none of what that machinery is for.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam


class Adam:
    """Adam over a fixed list of tensors with one learning rate (`lr` may change between steps)."""

    def __init__(
        self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # torch keeps the step count on the CPU in the default float type (its _get_scalar_dtype)
        step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        self.steps = [torch.tensor(0.0, dtype=step_dtype) for _ in self.params]

    def take(self, params: list[torch.Tensor], rows: torch.Tensor) -> None:
        """Continue on `params`, the given rows of the tensors optimised so far (their moments
        go with them): round 0 drops the starts it prunes."""
        self.params = list(params)
        self.exp_avgs = [m[rows] for m in self.exp_avgs]
        self.exp_avg_sqs = [v[rows] for v in self.exp_avg_sqs]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # as torch: no gradient, no update
        if not live:
            return
        params = [self.params[i] for i in live]
        adam(
            params,
            [p.grad for p in params],
            [self.exp_avgs[i] for i in live],
            [self.exp_avg_sqs[i] for i in live],
            [],
            [self.steps[i] for i in live],
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=None,
            grad_scale=None,
            found_inf=None,
            has_complex=any(torch.is_complex(p) for p in params),
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
        )
