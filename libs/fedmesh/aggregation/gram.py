"""Pairwise geometry of the updates from one pass, and outputs assembled from coefficients.

Every rule that needs distances between updates (Krum, Multi-Krum, Bulyan's
selection) or iterates in their span (Weiszfeld, centered clipping) reads the
n×n Gram matrix G = X Xᵀ, built from one BLAS product per block and summed in
float64, then writes its output as a linear combination of the rows of X.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedmesh.aggregation.source import TensorSource, UpdateSource, require_finite

_WIDE_BLOCK = 1 << 18


@dataclass(frozen=True)
class Geometry:
    """Inner products of the updates (and of a reference vector r, when given), float64 on CPU.

    `gram[i, j]` = ⟨x_i, x_j⟩, `cross[i]` = ⟨x_i, r⟩, `reference_norm2` = ⟨r, r⟩.
    Without `pairwise`, only the diagonal (the squared norms) was computed, which
    is all that distances to multiples of r need.
    """

    gram: torch.Tensor
    cross: torch.Tensor | None = None
    reference_norm2: float = 0.0
    pairwise: bool = True

    def squared_distances(self) -> torch.Tensor:
        """The n×n matrix of ‖x_i − x_j‖², clamped at 0 against rounding."""
        diagonal = self.gram.diagonal()
        distances = diagonal[:, None] + diagonal[None, :] - 2.0 * self.gram
        distances.clamp_(min=0.0)
        distances.fill_diagonal_(0.0)
        return distances

    def distances_to(self, coefficients: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        """‖x_i − z‖ for every i, where z = offset·r + Σ_j coefficients_j x_j."""
        if bool(coefficients.any()):
            if not self.pairwise:
                raise ValueError("distances to a point in the span need the pairwise geometry")
            g_c = self.gram @ coefficients
        else:
            g_c = torch.zeros_like(coefficients)
        z_norm2 = float(coefficients @ g_c)
        inner = g_c
        if offset != 0.0:
            if self.cross is None:
                raise ValueError("a reference offset needs the geometry built with a reference")
            inner = g_c + offset * self.cross
            z_norm2 += 2.0 * offset * float(coefficients @ self.cross)
            z_norm2 += offset * offset * self.reference_norm2
        squared = self.gram.diagonal() - 2.0 * inner + z_norm2
        return squared.clamp_(min=0.0).sqrt_()


def geometry(
    source: UpdateSource,
    block_size: int,
    reference: torch.Tensor | None = None,
    pairwise: bool = True,
) -> Geometry:
    """Build the `Geometry` of a source in one pass over its blocks.

    `pairwise=False` computes the squared norms alone (a memory pass instead of
    an n²·m product); the off-diagonal entries are then NaN.
    """
    gram = torch.zeros(source.n, source.n, dtype=torch.float64, device=source.device)
    squares = torch.zeros(source.n, dtype=torch.float64, device=source.device)
    if isinstance(source, TensorSource):
        # In memory, wider blocks cost nothing and make fewer, better-threaded BLAS
        # calls; the float64 sum across blocks still bounds the rounding.
        block_size = max(block_size, _WIDE_BLOCK)
    cross = None
    reference_norm2 = 0.0
    if reference is not None:
        cross = torch.zeros(source.n, dtype=torch.float64, device=source.device)
        reference_norm2 = float(reference.double().square().sum())
    for start, block in source.iter_blocks(block_size):
        if pairwise:
            gram += (block @ block.T).double()
        else:
            squares += torch.linalg.vector_norm(block, dim=1).double().square()
        if cross is not None and reference is not None:
            cross += (block @ reference[start : start + block.shape[1]]).double()
    if pairwise:
        # BLAS need not round (i, j) and (j, i) alike; exact symmetry keeps ties exact.
        gram = (gram + gram.T) / 2
    else:
        gram.fill_(float("nan")).diagonal().copy_(squares)
    require_finite(gram.diagonal(), "the squared norm of an update")
    if cross is not None:
        require_finite(cross, "the inner product of an update with the reference")
        return Geometry(gram.cpu(), cross.cpu(), reference_norm2, pairwise)
    return Geometry(gram.cpu(), pairwise=pairwise)


def combine(
    source: UpdateSource,
    coefficients: torch.Tensor,
    block_size: int,
    reference: torch.Tensor | None = None,
    offset: float = 0.0,
) -> torch.Tensor:
    """Σ_i coefficients_i x_i (+ offset·reference), assembled block by block, float32."""
    out = torch.empty(source.m, dtype=torch.float32, device=source.device)
    weights = coefficients.to(device=source.device, dtype=torch.float32)
    if isinstance(source, TensorSource):
        # A product that reads every value once gains nothing from blocks in memory.
        block_size = source.m
    for start, block in source.iter_blocks(block_size):
        target = out[start : start + block.shape[1]]
        torch.mv(block.T, weights, out=target)
        if reference is not None and offset != 0.0:
            target.add_(reference[start : start + block.shape[1]], alpha=offset)
    return out
