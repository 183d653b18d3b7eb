"""Per-rollout gradient norms for GVM-RAFT's allocation (arXiv 2505.02391), without a backward pass.

GVM-RAFT needs, per sampled answer, ``‖∇_W (−Σ_t log π(y_t | x, y_<t))‖`` restricted to one weight
matrix. For the output head ``W`` (vocab × width) the gradient of the summed negative log-likelihood
is ``Σ_t g_t h_tᵀ`` with ``g_t = softmax(z_t) − e_{y_t}`` and ``h_t`` the final hidden state, so

    ‖Σ_t g_t h_tᵀ‖²_F = Σ_{t,s} (g_t·g_s)(h_t·h_s),

computed for every rollout at once. (TinyGPT ties the head to the token embedding; only the head's
share of that matrix's gradient is measured — the paper's code uses the input embedding of an untied
model; which matrix is used is a proxy choice either way.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cadence.labs.rl.policy import Rollouts
from cadence.labs.tinygpt import TinyGPT


@torch.no_grad()
def head_grad_norms(model: TinyGPT, rollouts: Rollouts) -> np.ndarray:
    """The Frobenius norm of each rollout's summed-NLL gradient w.r.t. the output head."""
    tokens = rollouts.tokens[:, :-1]
    x = model.tok(tokens) + model.pos(torch.arange(tokens.shape[1]))
    for block in model.blocks:
        x = block(x)
    h = model.ln_f(x)[:, rollouts.prompt_width - 1:, :]
    g = F.softmax(model.head(h), dim=-1) - F.one_hot(rollouts.responses, model.head.out_features)
    keep = rollouts.mask[..., None]
    g, h = g * keep, h * keep
    squared = (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(h, h.transpose(1, 2))).sum((1, 2))
    return squared.clamp_min(0).sqrt().numpy().astype(np.float64)
