"""W8A8 linear layer for SmoothQuant: int8 weights per output channel x int8 activations per token, int32 accumulate.

Kept apart from :mod:`studylib.methods.smoothquant` because it imports torch at module level (the method registry
imports family modules without torch). See that module's docstring for what is real int8 compute and what is not.
"""

from __future__ import annotations

import torch


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: (int8 weight, float32 scale per row), ``scale = absmax / 127``."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per token (row of a 2-D input): (int8, float32 scale per row), ``scale = absmax / 127``."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / 127.0).clamp(min=1e-8)
    return torch.round(xf / scale).clamp_(-127, 127).to(torch.int8), scale


def int8_matmul(xq: torch.Tensor, weight: torch.Tensor, mode: str) -> torch.Tensor:
    """``xq @ weight.T`` as int32 through ``torch._int_mm``; mode 'pad' pads 16 or fewer rows to 32 (cuBLASLt wants
    more than 16)."""
    m = xq.shape[0]
    if mode == "pad" and m <= 16:
        return torch._int_mm(torch.nn.functional.pad(xq, (0, 0, 0, 32 - m)), weight.t())[:m]
    return torch._int_mm(xq, weight.t())


def int_mm_mode(device, in_features: int, out_features: int) -> str | None:
    """How ``torch._int_mm`` takes (tokens, in) x (in, out) on ``device``: 'direct', 'pad' (few rows padded), or None.

    Probed once per shape with random int8 values at 1, 17 and 40 rows and compared with an exact float64 product:
    cuBLASLt's int8 GEMM has shape rules (more than 16 rows, multiples of 8 inside) and has had wrong-result bugs
    for some shapes (pytorch#107671), so a mode is used only if it computes these exactly.
    """
    if not hasattr(torch, "_int_mm"):
        return None
    gen = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (out_features, in_features), generator=gen, dtype=torch.int8).to(device)
    xs = [torch.randint(-127, 128, (rows, in_features), generator=gen, dtype=torch.int8).to(device)
          for rows in (1, 17, 40)]
    for mode in ("direct", "pad"):
        try:
            exact = all(torch.equal(int8_matmul(x, w, mode).double(), x.double() @ w.double().t()) for x in xs)
        except (RuntimeError, NotImplementedError):
            continue
        if exact:
            return mode
    return None


class W8A8Linear(torch.nn.Module):
    """A linear layer computing ``(Xq Wqᵀ) * sx * swᵀ + b`` with int8 ``Xq`` (per token) and ``Wq`` (per channel).

    ``mode`` 'direct' / 'pad': ``torch._int_mm`` (int32 accumulation; 'pad' pads the token rows to what the kernel
    takes). ``None``: simulated -- the same int8 values multiplied in float32.
    """

    def __init__(self, linear: torch.nn.Linear, mode: str | None):
        super().__init__()
        q, scale = quantize_per_channel(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(q.to(linear.weight.device), requires_grad=False)
        self.register_buffer("weight_scale", scale.to(linear.weight.device))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.mode = mode
        self.fallbacks = 0

    @property
    def kernel(self) -> str:
        return "torch._int_mm" if self.mode else "simulated"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, xs = quantize_per_token(x.reshape(-1, shape[-1]))
        acc = None
        if self.mode:
            try:
                acc = int8_matmul(xq, self.weight, self.mode).float()
            except RuntimeError:  # a shape the probe did not cover: simulated from now on, counted
                self.mode, self.fallbacks = None, self.fallbacks + 1
        if acc is None:
            acc = xq.float() @ self.weight.float().t()
        y = (acc * xs * self.weight_scale[None, :]).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"
