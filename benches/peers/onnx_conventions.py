"""Shows that the ONNX fixtures bite: the reference Gram with torch's conventions (ReLU'(0) = 0; a
max-pool window with tied maxima sends its gradient to the first one in row-major order) against
the same model with another convention swapped in (ReLU'(0) = 1; the last tied maximum, an even
split, or the whole gradient to every tied maximum), in cosine units. A Rust implementation that
picked the other convention would miss the reference by about that much."""
import copy

import torch
import torch.nn.functional as F
from torch import nn

import onnx_models as om


class StepReLU(nn.Module):
    """ReLU whose derivative at 0 is 1 (the same forward values as nn.ReLU)."""

    def forward(self, x):
        return x * (x >= 0).to(x.dtype)


class WindowMaxPool(nn.Module):
    """Max-pool over explicit windows with a chosen tie rule for the gradient: `first` (torch's),
    `last`, `split` (shared evenly among the tied elements) or `all` (each tied element gets all)."""

    def __init__(self, pool, mode):
        super().__init__()
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        self.k, self.s, self.p = pair(pool.kernel_size), pair(pool.stride), pair(pool.padding)
        self.mode = mode

    def forward(self, x):
        n, c, h, w = x.shape
        ph, pw = self.p
        xp = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
        oh = (h + 2 * ph - self.k[0]) // self.s[0] + 1
        ow = (w + 2 * pw - self.k[1]) // self.s[1] + 1
        cols = F.unfold(xp, self.k, stride=self.s).reshape(n, c, self.k[0] * self.k[1], oh * ow)
        if self.mode == "first":
            out = cols.max(dim=2).values
        elif self.mode == "last":
            out = cols.flip(2).max(dim=2).values
        elif self.mode == "all":
            # The max in the forward; the backward gives every tied element the whole gradient
            # (what a mask `input == upsampled max` does).
            top = cols.detach().amax(dim=2, keepdim=True)
            mask = cols.detach() == top
            out = top.squeeze(2) + torch.where(mask, cols - cols.detach(), torch.zeros_like(cols)).sum(dim=2)
        else:
            out = cols.amax(dim=2)
        return out.reshape(n, c, oh, ow)


def swapped(model, relu=False, pool=None):
    """A copy of model with every nn.ReLU replaced by StepReLU (relu=True) and every nn.MaxPool2d
    by WindowMaxPool(mode=pool)."""
    m = copy.deepcopy(model)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if relu and isinstance(child, nn.ReLU):
                setattr(parent, name, StepReLU())
            if pool and isinstance(child, nn.MaxPool2d):
                setattr(parent, name, WindowMaxPool(child, pool))
    return m


def cos_units(a, b):
    d = torch.sqrt(torch.diagonal(b).clamp_min(1e-300))
    return float(((a - b).abs() / torch.outer(d, d)).max())


def sensitivity(model, x, y, ref, per_ref):
    """{convention: (max |K' - K| / sqrt(K_ii K_jj) on the whole Gram, the same on the worst
    parameter's own Gram, that parameter)} over the f64 Grams; `maxpool_first_unfold`
    re-implements torch's own rule and must agree to rounding (it checks the machinery)."""
    has_pool = any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    has_relu = any(isinstance(m, nn.ReLU) for m in model.modules())
    variants = {}
    if has_pool:
        for mode in ("first", "last", "split", "all"):
            variants[f"maxpool_{mode}_unfold"] = swapped(model, pool=mode)
    if has_relu:
        variants["relu_derivative_1_at_0"] = swapped(model, relu=True)
    out = {}
    for key, m in variants.items():
        total, per = om.reference_grams(m, x, y)
        worst = max(per, key=lambda k: cos_units(per[k], per_ref[k]))
        out[key] = {"total": cos_units(total, ref), "worst_param": cos_units(per[worst], per_ref[worst]),
                    "param": worst}
    return out
