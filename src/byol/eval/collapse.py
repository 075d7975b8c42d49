"""Signs of collapse in a batch of representations."""

import torch
import torch.nn.functional as F


def normalized_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of the L2-normalised vectors.

    About 1/sqrt(d) when the vectors spread over the sphere, 0 when every input
    maps to the same vector (Chen and He 2021, SimSiam, section 4.1).
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()
