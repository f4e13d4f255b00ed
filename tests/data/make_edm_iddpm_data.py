"""EDM's iDDPMPrecond (NVlabs/edm @ 0a2ff34, training/networks.py) on a small DhariwalUNet with seeded weights:
D(x; sigma) for sdeflow's test, on edm_reference.npz's inputs, written to edm_iddpm_reference.npz.

Not a test: kept for provenance. It runs the reference code itself, from a checkout that sdeflow never imports:

    python tests/data/make_edm_iddpm_data.py <edm checkout> tests/data
"""

import json
import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])  # EDM's checkout
from training.networks import iDDPMPrecond  # noqa: E402

ref = np.load(f"{sys.argv[2]}/edm_reference.npz")
kwargs = {
    "img_resolution": 8,
    "img_channels": 3,
    "label_dim": 10,
    "model_type": "DhariwalUNet",
    "model_channels": 64,
    "channel_mult": [1],
    "channel_mult_emb": 1,
    "num_blocks": 1,
    "attn_resolutions": [8],
    "dropout": 0.0,
}
net = iDDPMPrecond(**kwargs).eval()
g = torch.Generator().manual_seed(7)
state = net.state_dict()
for key, value in state.items():
    if key == "u":
        continue
    w = torch.randn(value.shape, generator=g, dtype=torch.float64)
    w = (
        w / np.sqrt(np.prod(value.shape[1:]))
        if value.ndim >= 2
        else 0.2 * w + (1.0 if "norm" in key and key.endswith("weight") else 0.0)
    )
    state[key] = w.float()
net.load_state_dict(state)
x, sigma, y = (torch.from_numpy(ref[k]) for k in ("x", "sigma", "y"))
onehot = torch.nn.functional.one_hot(y.clamp_min(0), 10).float() * (y >= 0)[:, None]  # label -1: no class (zeros)
with torch.no_grad():
    out = net(x, sigma, onehot)
meta = {
    "source": "NVlabs/edm training/networks.py (commit 0a2ff34): iDDPMPrecond(**init_kwargs) "
    "with the state-dict tensors other than "
    "u drawn in order from torch.Generator().manual_seed(7) (float64 randn; rank >= 2: / sqrt(fan_in); else 0.2 randn, "
    "+ 1 for norm weights); output D(x; sigma, y) on edm_reference.npz's x, sigma and y",
    "init_kwargs": kwargs,
    "tensors": [[k, list(v.shape)] for k, v in state.items()],
}
np.savez_compressed(
    f"{sys.argv[2]}/edm_iddpm_reference.npz", output=out.numpy(), u=net.u.numpy(), meta=np.array(json.dumps(meta))
)
print(out.abs().mean(), net.sigma_min, net.sigma_max, sigma)
