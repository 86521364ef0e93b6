"""Reference values for the projected LSTM (`lstm(proj_size = P)`),
computed by PyTorch's nn.LSTM(proj_size = P).

Writes one safetensors file per case next to this file, read by
`tests/projection.rs` (which needs no Python). Each file holds:

- the weights, by PyTorch's state_dict names (`weight_hr_l0`, ...);
- the inputs `x` [B, T, I], `seq_len` [B] (int64), `h0` [L*D, B, P] and
  `c0` [L*D, B, H];
- the outputs `y` [B, T, P*D] (zero past each length), `h_n`, `c_n`;
- the seeds `gy`, `gh`, `gc` of the loss
  sum(y * gy) + sum(h_n * gh) + sum(c_n * gc), so that they are the
  loss's gradients with respect to the outputs;
- `grad_<name>` for every weight, `x`, `h0` and `c0`.

Weights and inputs are drawn in float32 (PyTorch's own initialisation for
the weights) and the run is in float64, so the expected values carry no
float32 rounding of their own. Rerun with any PyTorch 2.x to regenerate:

    python tests/data/lstm_proj/make_reference.py
"""

import json
import pathlib
import struct

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CASES = [
    # name, input, hidden, proj_size, layers, bidirectional, lengths, seed
    ("one_layer", 4, 6, 3, 1, False, [6, 3, 1, 5], 14),
    ("bidirectional_two_layers", 3, 5, 2, 2, True, [5, 2, 6, 4, 1], 1414),
]


def save_safetensors(path, tensors):
    """Writes `tensors` (name -> float32 or int64 tensor) as safetensors,
    without the safetensors package."""
    header = {}
    blobs = []
    offset = 0
    for name, tensor in tensors.items():
        flat = tensor.detach().reshape(-1).tolist()
        if tensor.dtype == torch.int64:
            dtype, blob = "I64", struct.pack(f"<{len(flat)}q", *flat)
        else:
            dtype, blob = "F32", struct.pack(f"<{len(flat)}f", *flat)
        header[name] = {
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"generator": f"torch {torch.__version__} nn.LSTM(proj_size)"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def case(name, input_size, hidden, proj, layers, bidirectional, lengths, seed):
    torch.manual_seed(seed)
    directions = 2 if bidirectional else 1
    batch, steps = len(lengths), max(lengths)
    lstm = torch.nn.LSTM(
        input_size,
        hidden,
        num_layers=layers,
        bidirectional=bidirectional,
        proj_size=proj,
        batch_first=True,
    )
    x = torch.randn(batch, steps, input_size)
    h0 = torch.randn(layers * directions, batch, proj)
    c0 = torch.randn(layers * directions, batch, hidden)
    gy = torch.randn(batch, steps, proj * directions)
    gh = torch.randn(layers * directions, batch, proj)
    gc = torch.randn(layers * directions, batch, hidden)
    tensors = {name: p.detach().clone() for name, p in lstm.state_dict().items()}
    tensors.update(x=x, seq_len=torch.tensor(lengths, dtype=torch.int64), h0=h0, c0=c0)

    lstm = lstm.double()
    leaves = {"x": x.double(), "h0": h0.double(), "c0": c0.double()}
    for leaf in leaves.values():
        leaf.requires_grad_()
    packed = pack_padded_sequence(leaves["x"], torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, (h_n, c_n) = lstm(packed, (leaves["h0"], leaves["c0"]))
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
    loss = (y * gy.double()).sum() + (h_n * gh.double()).sum() + (c_n * gc.double()).sum()
    loss.backward()

    tensors.update(y=y.float(), h_n=h_n.float(), c_n=c_n.float(), gy=gy, gh=gh, gc=gc)
    for param_name, param in lstm.named_parameters():
        tensors[f"grad_{param_name}"] = param.grad.float()
    for leaf_name, leaf in leaves.items():
        tensors[f"grad_{leaf_name}"] = leaf.grad.float()
    path = pathlib.Path(__file__).with_name(f"{name}.safetensors")
    save_safetensors(path, tensors)
    print(f"{path.name}: {len(tensors)} tensors, y {list(y.shape)}, h_n {list(h_n.shape)}, c_n {list(c_n.shape)}")


for spec in CASES:
    case(*spec)
