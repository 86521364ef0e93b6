"""The fixed benchmark workloads W1-W5v (see shared/WORKLOADS.md), as plain data.

Pure Python (no numpy) so that the table printer can import it anywhere.
Every other bench script takes its shapes, lengths, FLOP counts and reporting
units from here, so there is exactly one place that defines a workload.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Repository root (bench/ lives directly under it) and the data directory.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, "target", "bench-data")


@dataclass(frozen=True)
class Workload:
    name: str
    cell: str  # "lstm" or "gru" (GRU is PyTorch-style: reset applied after the matmul)
    input_size: int
    hidden: int
    layers: int
    bidirectional: bool
    batch: int
    steps: int
    varlen: bool  # lengths follow len[i] = 10 + (i*37 % length_modulus); otherwise all full
    train: bool  # forward + backward of the loss (see loss_count)
    unit: str  # the figure WORKLOADS.md asks for
    seed: int
    length_modulus: int = 91  # m in len[i] = 10 + (i*37 % m): 91 for W2, 41 for W5v

    @property
    def gates(self) -> int:
        return 4 if self.cell == "lstm" else 3

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def lengths(self) -> list[int]:
        if self.varlen:
            return [10 + (i * 37 % self.length_modulus) for i in range(self.batch)]
        return [self.steps] * self.batch

    def loss_count(self) -> int:
        """The divisor of the training loss: valid steps x output width.

        loss = (sum over valid (b, t) of sum_j y[b, t, j]^2) / (sum(lengths) * D*H),
        i.e. the mean of y^2 over the valid steps only; padded steps count
        neither in the sum nor in the divisor. With all lengths full (W5) this
        is mean(y^2) over the whole [B, T, D*H] output.
        """
        return sum(self.lengths()) * self.hidden * self.directions

    def layer_input(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden * self.directions

    def useful_flops(self) -> float:
        """2*G*H*(I+H) per sequence, per valid step, per layer and direction.

        A training step (forward + backward) counts three forwards.
        """
        valid_steps = sum(self.lengths())
        per_step = sum(
            2 * self.gates * self.hidden * (self.layer_input(l) + self.hidden) * self.directions
            for l in range(self.layers)
        )
        return per_step * valid_steps * (3 if self.train else 1)

    def param_names(self) -> list[str]:
        """PyTorch state_dict names, in PyTorch's parameter order."""
        names = []
        for l in range(self.layers):
            for suffix in ([""] + (["_reverse"] if self.bidirectional else [])):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    names.append(f"{kind}_l{l}{suffix}")
        return names

    def to_unit(self, ms: float) -> float:
        """Convert a time per call (one batch, or one fwd+bwd) to this workload's unit."""
        if self.unit == "ms/seq":
            return ms / self.batch
        if self.unit == "seq/s":
            return self.batch * 1000.0 / ms
        if self.unit == "µs/batch":
            return ms * 1000.0
        return ms  # "ms/batch" and "ms/fwd+bwd"

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "seq/s"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("W1", "lstm", 64, 128, 1, False, 1, 1000, False, False, "ms/seq", 1001),
        Workload("W2", "lstm", 128, 256, 1, False, 64, 100, True, False, "seq/s", 1002),
        Workload("W3", "gru", 32, 64, 1, False, 16, 32, False, False, "µs/batch", 1003),
        Workload("W4", "lstm", 80, 256, 2, True, 32, 200, False, False, "ms/batch", 1004),
        Workload("W5", "lstm", 64, 128, 1, False, 32, 50, False, True, "ms/fwd+bwd", 1005),
        # W5v: W5 with variable lengths. The same seed on purpose: the same
        # weights and inputs as W5, so that the two differ only in seq_len.
        Workload("W5v", "lstm", 64, 128, 1, False, 32, 50, True, True, "ms/fwd+bwd", 1005,
                 length_modulus=41),
    ]
}


def data_path(name: str, suffix: str = ".safetensors") -> str:
    return os.path.join(DATA_DIR, name + suffix)
