"""An unrolled deep reconstruction network (MoDL) whose data consistency is this package's SENSE operator.

MoDL alternates a learned denoiser :math:`D_w` with an exact data-consistency step, K times, with the weights
shared across the unrolls:

.. math::

    z_k = D_w(x_k), \\qquad
    x_{k+1} = \\arg\\min_x \\|A x - y\\|_2^2 + \\lambda \\|x - z_k\\|_2^2
            = (A^H A + \\lambda I)^{-1} (A^H y + \\lambda z_k),

with :math:`A = M F S` the Cartesian multi-coil model (:class:`~cloudmri_kernel.recon.operators.SenseOperator`,
whose fused :meth:`normal` gives :math:`A^H A`) and the inverse applied by a fixed number of conjugate-gradient
steps, through which gradients flow. :math:`\\lambda` is learned (through its logarithm, so it stays positive).
The denoiser is a residual CNN on the real and imaginary parts, without batch normalization so that federated
averaging of the weights is well defined (Flower's FedAvg averages every array of the state).

Inputs are scaled by the 99th percentile of :math:`|A^H y|` so that one set of weights serves data of any
intensity; the output is scaled back.

References:
    Aggarwal HK, Mani MP, Jacob M. MoDL: model-based deep learning architecture for inverse problems.
    IEEE TMI 2019;38:394-405.
    Pruessmann KP et al. SENSE: sensitivity encoding for fast MRI. MRM 1999;42:952-962.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from cloudmri_kernel.recon.operators import SenseOperator

#: Percentile of the adjoint image's magnitude that becomes 1 after input scaling.
SCALE_PERCENTILE = 0.99


@dataclass(frozen=True)
class MoDLConfig:
    """Architecture of :class:`MoDL` (stored in every model card, so a file alone rebuilds its network)."""

    unrolls: int = 5
    cg_iterations: int = 8
    features: int = 32
    depth: int = 5
    lamda: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)


class Denoiser(nn.Module):
    """Residual CNN: ``depth`` 3x3 convolutions with ReLU between them, on (real, imaginary) channels."""

    def __init__(self, features: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2, features, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(features, 2, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: complex (batch, y, x)."""
        channels = torch.view_as_real(x).permute(0, 3, 1, 2)
        residual = self.body(channels).permute(0, 2, 3, 1).contiguous()
        return x + torch.view_as_complex(residual)


def _conjugate_gradient(normal, rhs: torch.Tensor, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """A fixed number of CG steps for ``normal(x) = rhs`` per batch element, differentiable throughout."""
    r = rhs - normal(x)
    p = r
    rr = torch.sum(r.conj() * r, dim=(-2, -1)).real
    for _ in range(iterations):
        ap = normal(p)
        alpha = rr / torch.sum(p.conj() * ap, dim=(-2, -1)).real.clamp_min(1e-20)
        x = x + alpha[:, None, None] * p
        r = r - alpha[:, None, None] * ap
        rr_new = torch.sum(r.conj() * r, dim=(-2, -1)).real
        p = r + (rr_new / rr.clamp_min(1e-20))[:, None, None] * p
        rr = rr_new
    return x


class MoDL(nn.Module):
    """MoDL (see the module). ``forward(kspace, mask, maps)`` returns the complex image, shape (batch, y, x)."""

    def __init__(self, config: MoDLConfig | None = None):
        super().__init__()
        self.config = config or MoDLConfig()
        self.denoiser = Denoiser(self.config.features, self.config.depth)
        self.log_lamda = nn.Parameter(torch.tensor(math.log(self.config.lamda)))

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """kspace, maps: complex (batch, coils, y, x); mask: (batch, y) acquired phase-encoding lines."""
        operators = [SenseOperator(maps[b], mask[b][:, None].float()) for b in range(kspace.shape[0])]
        normals = [op.normal() for op in operators]
        adjoint = torch.stack([op.adjoint(kspace[b]) for b, op in enumerate(operators)])
        scale = torch.quantile(adjoint.abs().flatten(1), SCALE_PERCENTILE, dim=1).clamp_min(1e-12)
        rhs0 = adjoint / scale[:, None, None]
        lamda = self.log_lamda.exp()

        def normal(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([n(x[b]) for b, n in enumerate(normals)]) + lamda * x

        x = rhs0
        for _ in range(self.config.unrolls):
            z = self.denoiser(x)
            x = _conjugate_gradient(normal, rhs0 + lamda * z, x, self.config.cg_iterations)
        return x * scale[:, None, None]
