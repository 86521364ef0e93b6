#!/usr/bin/env python3
"""A LISTA-CP trained in PyTorch, for `examples/tests/lista.rs`.

Writes, next to this script:
- `lista_cp.safetensors`: the module's `state_dict()` as it is (`A` [20, 40],
  `W` [6, 20, 40], `theta` [6, 1]): the names unroll documents for a
  per-step parameter (one stacked tensor, step first);
- `reference.safetensors`: measurements `y` [8, 20] and their targets `x`
  [8, 40], the module's iterates `iterates` [8, 6, 40], the loss
  mean((x_6 - x)^2) and its gradients `grad.A`, `grad.W`, `grad.theta`,
  all from PyTorch in float32.

The module is trained for 300 Adam steps on the 20 x 40 problem
(Bernoulli(0.1)-Gaussian x, y = A x), so its per-step weights differ from
each other and from ISTA's. Run: python make_reference.py (torch, numpy,
safetensors); the outputs are committed, so the tests need no Python.
"""

import os

import numpy as np
import torch
from safetensors.torch import save_file

M, N, K, BATCH = 20, 40, 6, 8
HERE = os.path.dirname(os.path.abspath(__file__))


class ListaCp(torch.nn.Module):
    """x <- soft(x + W_k^T (y - A x), theta_k), x_0 = 0; samples as rows."""

    def __init__(self, a: np.ndarray, lam: float):
        super().__init__()
        lipschitz = float(np.linalg.norm(a, 2) ** 2)
        a = torch.from_numpy(a.astype(np.float32))
        self.A = torch.nn.Parameter(a.clone())
        self.W = torch.nn.Parameter((a / lipschitz).repeat(K, 1, 1))
        self.theta = torch.nn.Parameter(torch.full((K, 1), lam / lipschitz))

    def forward(self, y):
        x = torch.zeros(y.shape[0], N)
        iterates = []
        for k in range(K):
            u = x + (y - x @ self.A.T) @ self.W[k]
            x = torch.sign(u) * torch.relu(u.abs() - self.theta[k])
            iterates.append(x)
        return torch.stack(iterates, dim=1)


def problem(rng, a, batch):
    x = rng.normal(size=(batch, N)) * (rng.random((batch, N)) < 0.1)
    return torch.from_numpy((x @ a.T).astype(np.float32)), torch.from_numpy(x.astype(np.float32))


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(15)
    a = rng.normal(0.0, 1.0 / np.sqrt(M), (M, N))
    a /= np.linalg.norm(a, axis=0, keepdims=True)
    model = ListaCp(a, 0.1)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(300):
        y, x = problem(rng, a, 64)
        loss = torch.mean((model(y)[:, -1] - x) ** 2)
        adam.zero_grad()
        loss.backward()
        adam.step()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              os.path.join(HERE, "lista_cp.safetensors"))
    y, x = problem(rng, a, BATCH)
    model.zero_grad()
    iterates = model(y)
    loss = torch.mean((iterates[:, -1] - x) ** 2)
    loss.backward()
    save_file({"y": y, "x": x, "iterates": iterates.detach(), "loss": loss.detach().reshape(1),
               "grad.A": model.A.grad, "grad.W": model.W.grad, "grad.theta": model.theta.grad},
              os.path.join(HERE, "reference.safetensors"))
    print(f"loss {loss.item():.4g}")


if __name__ == "__main__":
    main()
