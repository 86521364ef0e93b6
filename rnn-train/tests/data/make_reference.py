"""Reference values for rnn-train's tests, computed by PyTorch.

Writes torch_reference.json next to this file: optimizer trajectories
(SGD, momentum, Nesterov, Adam, Adam with L2, AdamW), clip_grad_norm_,
learning-rate schedules, masked losses and truncated BPTT (k1 = k2, and
k2 < k1 with all but the last k2 steps of each update run without
gradient). The tests read the JSON and need no Python; rerun this script
(any PyTorch 2.x) to regenerate it:

    python rnn-train/tests/data/make_reference.py
"""

import json
import pathlib

import torch
import torch.nn.functional as F

torch.manual_seed(0)


def values(tensor):
    return {"shape": list(tensor.shape), "data": tensor.detach().reshape(-1).tolist()}


def optimizers():
    params0 = [torch.randn(3, 4), torch.randn(4)]
    grads = [[torch.randn(3, 4), torch.randn(4)] for _ in range(5)]
    configs = {
        "sgd": (torch.optim.SGD, dict(lr=0.1)),
        "sgd_momentum": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
        "sgd_nesterov": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        "adam": (torch.optim.Adam, dict(lr=0.01)),
        "adam_l2": (torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
        "adamw": (torch.optim.AdamW, dict(lr=0.01)),
    }
    cases = {}
    for name, (cls, kwargs) in configs.items():
        params = [p.clone().requires_grad_() for p in params0]
        opt = cls(params, foreach=False, **kwargs)
        trajectory = []
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
            trajectory.append([values(p) for p in params])
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        cases[name] = {"hyper": kwargs, "trajectory": trajectory}
    return {
        "params": [values(p) for p in params0],
        "grads": [[values(g) for g in step] for step in grads],
        "cases": cases,
    }


def clipping():
    grads = [torch.randn(3, 4) * 2, torch.randn(5)]
    cases = []
    for max_norm in [1.0, 100.0]:
        params = [torch.zeros_like(g, requires_grad=True) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        cases.append({"max_norm": max_norm, "norm": norm.item(), "clipped": [values(p.grad) for p in params]})
    return {"grads": [values(g) for g in grads], "cases": cases}


def schedule(make, steps):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


def schedules():
    S = torch.optim.lr_scheduler
    return {
        "step": schedule(lambda o: S.StepLR(o, step_size=3, gamma=0.5), 10),
        "cosine": schedule(lambda o: S.CosineAnnealingLR(o, T_max=8, eta_min=0.001), 9),
        "warmup_cosine": schedule(
            lambda o: S.SequentialLR(
                o,
                [S.LinearLR(o, start_factor=0.1, total_iters=4), S.CosineAnnealingLR(o, T_max=6, eta_min=0.0)],
                milestones=[4],
            ),
            10,
        ),
    }


def losses():
    logits = torch.randn(3, 4, 5, requires_grad=True)
    targets = torch.randint(0, 5, (3, 4))
    lengths = [4, 2, 0]
    mask = torch.tensor([[t < n for t in range(4)] for n in lengths])
    every = F.cross_entropy(logits[mask], targets[mask])
    every.backward()
    every_grad = logits.grad.clone()
    logits.grad = None

    last_lengths = [4, 2, 1]
    last_targets = torch.randint(0, 5, (3,))
    last_logits = torch.stack([logits[b, n - 1] for b, n in enumerate(last_lengths)])
    last = F.cross_entropy(last_logits, last_targets)
    last.backward()
    last_grad = logits.grad.clone()

    y = torch.randn(3, 4, 2, requires_grad=True)
    target = torch.randn(3, 4, 2)
    mse = ((y - target) ** 2)[mask].mean()
    mse.backward()
    return {
        "logits": values(logits),
        "targets": targets.reshape(-1).tolist(),
        "lengths": lengths,
        "every": {"loss": every.item(), "grad": values(every_grad)},
        "last_lengths": last_lengths,
        "last_targets": last_targets.tolist(),
        "last": {"loss": last.item(), "grad": values(last_grad)},
        "y": values(y),
        "target": values(target),
        "mse": {"loss": mse.item(), "grad": values(y.grad)},
    }


def tbptt():
    """Truncated BPTT by hand: an LSTM cell stepped with lengths masking,
    the state detached at every window boundary; each window's gradients
    of sum(y * dy) over its steps."""
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(2, 3)
    x = torch.randn(2, 7, 2)
    dy = torch.randn(2, 7, 3)
    lengths = [7, 4]
    window = 3
    h = torch.zeros(2, 3)
    c = torch.zeros(2, 3)
    windows = []
    for start in range(0, 7, window):
        h, c = h.detach(), c.detach()
        loss = 0.0
        for t in range(start, min(start + window, 7)):
            valid = torch.tensor([[float(t < n)] for n in lengths])
            h_new, c_new = cell(x[:, t], (h, c))
            loss = loss + (valid * h_new * dy[:, t]).sum()
            h = valid * h_new + (1 - valid) * h
            c = valid * c_new + (1 - valid) * c
        cell.zero_grad()
        loss.backward()
        windows.append([values(p.grad) for p in (cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh)])
    return {
        "weights": {
            "weight_ih_l0": values(cell.weight_ih),
            "bias_ih_l0": values(cell.bias_ih),
            "weight_hh_l0": values(cell.weight_hh),
            "bias_hh_l0": values(cell.bias_hh),
        },
        "x": values(x),
        "dy": values(dy),
        "lengths": lengths,
        "window": window,
        "grads": windows,
    }


def tbptt_k2():
    """TBPTT(k1, k2) with k2 < k1, by hand: each update takes k1 new steps
    (the last update the rest), runs all but its last k2 under no_grad
    carrying the state, then the last k2 (all of them if fewer) with
    gradient from the detached state; the loss is the MSE over the valid
    elements of those steps, and SGD steps the cell after each update.
    Records each update's loss, gradients before the step, and the state
    after the update."""
    torch.manual_seed(2)
    cell = torch.nn.LSTMCell(2, 3)
    weights = {
        "weight_ih_l0": values(cell.weight_ih),
        "bias_ih_l0": values(cell.bias_ih),
        "weight_hh_l0": values(cell.weight_hh),
        "bias_hh_l0": values(cell.bias_hh),
    }
    x = torch.randn(3, 9, 2)
    target = torch.randn(3, 9, 3)
    lengths = [9, 5, 3]
    k1, k2, lr = 4, 2, 0.1
    sgd = torch.optim.SGD(cell.parameters(), lr=lr)

    def step(t, h, c):
        valid = torch.tensor([[float(t < n)] for n in lengths])
        h_new, c_new = cell(x[:, t], (h, c))
        return valid * h_new, valid * h_new + (1 - valid) * h, valid * c_new + (1 - valid) * c

    h = torch.zeros(3, 3)
    c = torch.zeros(3, 3)
    updates = []
    for start in range(0, 9, k1):
        end = min(start + k1, 9)
        split = max(start, end - k2)
        with torch.no_grad():
            for t in range(start, split):
                _, h, c = step(t, h, c)
        h, c = h.detach(), c.detach()
        ys = []
        for t in range(split, end):
            y, h, c = step(t, h, c)
            ys.append(y)
        y = torch.stack(ys, 1)
        mask = torch.tensor([[t < n for t in range(split, end)] for n in lengths])
        loss = ((y - target[:, split:end]) ** 2)[mask].mean()
        sgd.zero_grad()
        loss.backward()
        updates.append(
            {
                "warm": [start, split],
                "train": [split, end],
                "loss": loss.item(),
                "grads": [values(p.grad) for p in (cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh)],
                "h": values(h),
                "c": values(c),
            }
        )
        sgd.step()
    return {
        "weights": weights,
        "x": values(x),
        "target": values(target),
        "lengths": lengths,
        "k1": k1,
        "k2": k2,
        "lr": lr,
        "updates": updates,
    }


reference = {
    "torch": torch.__version__,
    "optimizers": optimizers(),
    "clipping": clipping(),
    "schedules": schedules(),
    "losses": losses(),
    "tbptt": tbptt(),
    "tbptt_k2": tbptt_k2(),
}
out = pathlib.Path(__file__).with_name("torch_reference.json")
out.write_text(json.dumps(reference, indent=1) + "\n")
print(f"wrote {out}")
