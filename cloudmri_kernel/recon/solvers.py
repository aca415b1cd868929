"""Iterative solvers for :math:`\\min_x \\tfrac12 \\|Ax - y\\|_2^2 + g(x)`, given the normal operator.

Every solver takes :math:`N = A^H A` (any callable, usually ``A.normal()``) and :math:`b = A^H y`, never A
itself: the data term is :math:`\\tfrac12 \\langle x, Nx\\rangle - \\mathrm{Re}\\langle x, b\\rangle` plus the
constant :math:`\\tfrac12\\|y\\|^2`, which the reported objectives leave out. Each returns a
:class:`SolverResult`. A solver that reaches ``max_iter`` before its tolerance says so (``converged=False``)
and returns its best iterate; the caller decides whether to warn. A NaN or Inf anywhere stops it with
:class:`~cloudmri_kernel.errors.InvalidDataError`.

References:
    Hestenes MR, Stiefel E. Methods of conjugate gradients for solving linear systems.
    J Res Natl Bur Stand 1952;49:409-436.
    Beck A, Teboulle M. A fast iterative shrinkage-thresholding algorithm for linear inverse problems.
    SIAM J Imaging Sci 2009;2:183-202.
    Chambolle A, Pock T. A first-order primal-dual algorithm for convex problems with applications to imaging.
    J Math Imaging Vis 2011;40:120-145.
    Condat L. A primal-dual splitting method for convex optimization involving Lipschitzian, proximable and
    linear composite terms. J Optim Theory Appl 2013;158:460-479.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cloudmri_kernel.errors import InvalidDataError
from cloudmri_kernel.recon.operators import Linop

Operator = Callable[[torch.Tensor], torch.Tensor]
#: ``prox(v, t)`` returns :math:`\\mathrm{prox}_{t g}(v)` and :math:`g` at that point.
Prox = Callable[[torch.Tensor, float], tuple[torch.Tensor, float]]


@dataclass
class SolverResult:
    """What a solver returns.

    Attributes:
        x: the best iterate (lowest objective; for CG, whose objective falls monotonically, the last).
        iterations: iterations run.
        converged: whether the stopping tolerance was met before ``max_iter``.
        residuals: per iteration, the quantity compared with ``tol``: relative residual
            :math:`\\|b - (N+\\lambda)x\\| / \\|b\\|` for CG, relative change :math:`\\|x_{k+1}-x_k\\|/\\|x_{k+1}\\|`
            for FISTA and the primal-dual solver.
        objectives: per iteration, the objective without the constant :math:`\\tfrac12\\|y\\|^2` (empty for CG).
    """

    x: torch.Tensor
    iterations: int
    converged: bool
    residuals: list[float]
    objectives: list[float] = field(default_factory=list)


def _norm(x: torch.Tensor) -> float:
    # torch's complex vector_norm is not vectorized on CPU (40x slower than on the real view).
    return float(torch.linalg.vector_norm(torch.view_as_real(x) if x.is_complex() else x))


def real_inner(x: torch.Tensor, y: torch.Tensor) -> float:
    """Re <x, y>."""
    return float(torch.vdot(x.reshape(-1), y.reshape(-1)).real)


def _check_finite(value: float, solver: str, iteration: int) -> None:
    if not math.isfinite(value):
        raise InvalidDataError(
            f"{solver} produced NaN/Inf at iteration {iteration}: the k-space, coil maps or regularization hold "
            f"non-finite or extreme values")


def _check_rhs(rhs: torch.Tensor, solver: str) -> float:
    norm = _norm(rhs)
    if not math.isfinite(norm):
        raise InvalidDataError(f"{solver}: A^H y has NaN/Inf values: check the k-space and coil maps for NaN/Inf")
    return norm


def max_eigenvalue(normal_op: Operator, shape: tuple[int, ...], iterations: int = 30,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.complex64) -> float:
    """Largest eigenvalue of a Hermitian positive semi-definite operator by power iteration.

    For :math:`N = A^H A` this is :math:`\\|A\\|^2`, the Lipschitz constant of the gradient of
    :math:`\\tfrac12\\|Ax-y\\|^2`. Starts from a fixed-seed random vector, so results are reproducible; 30
    iterations, as sigpy's ``MaxEig`` default, give it to about 1 %.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    x /= _norm(x)
    value = 0.0
    for k in range(iterations):
        y = normal_op(x)
        value = _norm(y)
        _check_finite(value, "power iteration", k + 1)
        if value == 0:
            return 0.0
        x = y / value
    return value


def conjugate_gradient(normal_op: Operator, rhs: torch.Tensor, x0: torch.Tensor | None = None, max_iter: int = 30,
                       tol: float = 1e-6, lamda: float = 0.0) -> SolverResult:
    """Solve :math:`(A^H A + \\lambda I)\\,x = A^H y` by conjugate gradients.

    That is :math:`\\min_x \\tfrac12\\|Ax-y\\|^2 + \\tfrac{\\lambda}{2}\\|x\\|^2` (Tikhonov, as sigpy's
    ``LinearLeastSquares``). Stops when :math:`\\|r_k\\| \\le \\mathrm{tol}\\,\\|b\\|`. CG lowers this objective at
    every step, so the last iterate is the best one.

    Args:
        normal_op: :math:`x \\mapsto A^H A x`, Hermitian positive semi-definite.
        rhs: :math:`b = A^H y`.
        x0: start (default zeros).
        lamda: Tikhonov weight :math:`\\lambda \\ge 0`.
    """
    b_norm = _check_rhs(rhs, "conjugate gradient")
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal_op(x) - lamda * x if x0 is not None else rhs.clone()
    if b_norm == 0:
        return SolverResult(x, 0, True, [0.0])
    p = r.clone()
    rr = real_inner(r, r)
    residuals: list[float] = []
    for k in range(1, max_iter + 1):
        ap = normal_op(p)
        if lamda:
            ap = ap + lamda * p
        pap = real_inner(p, ap)
        _check_finite(pap, "conjugate gradient", k)
        if pap <= 0:
            # p is zero or N is not positive definite on it: no further progress is possible.
            return SolverResult(x, k - 1, math.sqrt(rr) <= tol * b_norm, residuals)
        alpha = rr / pap
        x.add_(p, alpha=alpha)
        r.sub_(ap, alpha=alpha)
        rr_new = real_inner(r, r)
        _check_finite(rr_new, "conjugate gradient", k)
        residuals.append(math.sqrt(rr_new) / b_norm)
        if residuals[-1] <= tol:
            return SolverResult(x, k, True, residuals)
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
    return SolverResult(x, max_iter, False, residuals)


def fista(normal_op: Operator, rhs: torch.Tensor, prox: Prox, step: float, x0: torch.Tensor | None = None,
          max_iter: int = 100, tol: float = 1e-6, keep_best: bool = True, average: int = 1) -> SolverResult:
    """Minimize :math:`\\tfrac12\\|Ax-y\\|^2 + g(x)` by FISTA (accelerated proximal gradient).

    .. math::

        x_{k+1} = \\mathrm{prox}_{t g}\\big(z_k - t\\,(N z_k - b)\\big), \\quad
        \\theta_{k+1} = \\tfrac{1 + \\sqrt{1 + 4\\theta_k^2}}{2}, \\quad
        z_{k+1} = x_{k+1} + \\tfrac{\\theta_k - 1}{\\theta_{k+1}}(x_{k+1} - x_k)

    with step :math:`t \\le 1/L`, :math:`L = \\|N\\|` (:func:`max_eigenvalue`). One application of N per
    iteration: :math:`N x_{k+1}` is computed and :math:`N z_{k+1}` follows by linearity, which also gives the
    exact objective of every iterate; FISTA is not monotone, so the iterate with the lowest objective is
    returned (``keep_best``). Stops when the relative change :math:`\\|x_{k+1}-x_k\\|/\\|x_{k+1}\\|` falls below
    ``tol``.

    A prox that changes from one iteration to the next (cycle spinning: a randomly shifted wavelet each time)
    reports each iterate's penalty under a different transform, so those objectives cannot rank the iterates:
    picking the lowest then returns an arbitrary, often early, iterate (at 128², R = 6, iteration 33 of 100 for
    one seed, 75 for another). Such callers pass ``keep_best=False`` and get the last iterate, as BART's and
    SigPy's FISTA return, or with ``average`` > 1 the mean of the last ``average`` iterates (Polyak-Ruppert
    averaging): each of those was thresholded under another shift, so their mean is closer to the
    translation-invariant (cycle-spun) estimate and has less of the shifts' noise. If ``tol`` stops the run
    before those iterations are reached, the last iterate is returned.

    Args:
        normal_op: :math:`x \\mapsto A^H A x`.
        rhs: :math:`b = A^H y`.
        prox: ``prox(v, t)`` -> (:math:`\\mathrm{prox}_{tg}(v)`, :math:`g` there).
        step: t.
        x0: start (default zeros).
        keep_best: return the iterate with the lowest objective (True) or the last one(s) (False).
        average: with ``keep_best`` False, return the mean of the last this many iterates.

    References:
        Beck A, Teboulle M. SIAM J Imaging Sci 2009;2:183-202.
        Polyak BT, Juditsky AB. Acceleration of stochastic approximation by averaging. SIAM J Control Optim
        1992;30:838-855.
        Rakhlin A, Shamir O, Sridharan K. Making gradient descent optimal for strongly convex stochastic
        optimization. ICML 2012 (suffix averaging: the mean of the last iterates only).
        Coifman RR, Donoho DL. Translation-invariant de-noising. Wavelets and Statistics, 1995.
    """
    _check_rhs(rhs, "FISTA")
    first_averaged = max_iter - min(max(1, average), max_iter) + 1 if not keep_best else max_iter + 1
    total = None
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    nx = normal_op(x)
    z, nz, theta = x, nx, 1.0
    best, best_objective = x, math.inf
    residuals: list[float] = []
    objectives: list[float] = []
    for k in range(1, max_iter + 1):
        x_new, penalty = prox(z - step * (nz - rhs), step)
        nx_new = normal_op(x_new)
        objective = 0.5 * real_inner(x_new, nx_new) - real_inner(x_new, rhs) + float(penalty)
        _check_finite(objective, "FISTA", k)
        objectives.append(objective)
        new_norm = _norm(x_new)
        residuals.append(_norm(x_new - x) / new_norm if new_norm > 0 else 0.0)
        if objective < best_objective or not keep_best:
            best, best_objective = x_new, objective
        if k >= first_averaged:
            total = x_new.clone() if total is None else total.add_(x_new)
        if residuals[-1] <= tol:
            return SolverResult(best, k, True, residuals, objectives)
        theta_new = (1 + math.sqrt(1 + 4 * theta**2)) / 2
        momentum = (theta - 1) / theta_new
        z = x_new + momentum * (x_new - x)
        nz = nx_new + momentum * (nx_new - nx)
        x, nx, theta = x_new, nx_new, theta_new
    if total is not None:
        best = total / (max_iter - first_averaged + 1)
    return SolverResult(best, max_iter, False, residuals, objectives)


def primal_dual_l1(normal_op: Operator, rhs: torch.Tensor, transform: Linop, lamda: float, lipschitz: float,
                   transform_norm2: float, x0: torch.Tensor | None = None, max_iter: int = 100,
                   tol: float = 1e-6) -> SolverResult:
    """Minimize :math:`\\tfrac12\\|Ax-y\\|^2 + \\lambda \\|Kx\\|_1` by the Condat-Vu primal-dual method.

    The Chambolle-Pock iteration with the smooth data term taken by its gradient (Condat 2013), so each
    iteration needs one :math:`A^H A`, one K and one :math:`K^H` and no k-space-sized dual variable:

    .. math::

        x_{k+1} = x_k - \\tau\\,(N x_k - b + K^H q_k), \\qquad
        q_{k+1} = \\Pi_{\\|\\cdot\\|_\\infty \\le \\lambda}\\big(q_k + \\sigma K(2x_{k+1} - x_k)\\big)

    where :math:`\\Pi` clips every complex entry to modulus λ (the dual of the entrywise complex L1 norm). It
    converges for :math:`1/\\tau - \\sigma\\|K\\|^2 \\ge L/2`; here :math:`\\sigma\\|K\\|^2 = L/2` and
    :math:`\\tau = 1/L`. The objective of every iterate, :math:`x_0` included, is exact (``objectives[i]``
    belongs to :math:`x_i`) and the iterate with the lowest is returned.

    Args:
        normal_op: :math:`x \\mapsto A^H A x`.
        rhs: :math:`b = A^H y`.
        transform: K, e.g. :class:`~cloudmri_kernel.recon.operators.FiniteDifference` for total variation.
        lamda: λ.
        lipschitz: L, an upper bound of :math:`\\|A^H A\\|`.
        transform_norm2: an upper bound of :math:`\\|K\\|^2` (8 for 2D circular finite differences).

    References:
        Chambolle A, Pock T. J Math Imaging Vis 2011;40:120-145.
        Condat L. J Optim Theory Appl 2013;158:460-479.
    """
    _check_rhs(rhs, "primal-dual")
    if lipschitz <= 0:
        return SolverResult(torch.zeros_like(rhs), 0, True, [0.0])
    tau = 1.0 / lipschitz
    sigma = lipschitz / (2 * transform_norm2)
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    kx = transform(x)
    q = torch.zeros_like(kx)
    best, best_objective = x, math.inf
    residuals: list[float] = []
    objectives: list[float] = []

    def record(x: torch.Tensor, nx: torch.Tensor, kx: torch.Tensor, k: int) -> None:
        nonlocal best, best_objective
        objective = 0.5 * real_inner(x, nx) - real_inner(x, rhs) + lamda * float(kx.abs().sum())
        _check_finite(objective, "primal-dual", k)
        objectives.append(objective)
        if objective < best_objective:
            best, best_objective = x, objective

    converged = False
    k = 0
    nx = normal_op(x)
    while k < max_iter and not converged:
        k += 1
        record(x, nx, kx, k)
        x_new = x - tau * (nx - rhs + transform.adjoint(q))
        kx_new = transform(x_new)
        q = q + sigma * (2 * kx_new - kx)
        q = q / torch.clamp(q.abs() / lamda, min=1.0) if lamda > 0 else torch.zeros_like(q)
        new_norm = _norm(x_new)
        residuals.append(_norm(x_new - x) / new_norm if new_norm > 0 else 0.0)
        converged = residuals[-1] <= tol
        x, kx = x_new, kx_new
        nx = normal_op(x)
    record(x, nx, kx, k)
    return SolverResult(best, k, converged, residuals, objectives)
