"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^256 + 297)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

FIELD_PRIME = 2**256 + 297
"""The smallest prime above 2^256, so every 32-byte secret is a field element."""

SECRET_BYTES = 32
SHARE_BYTES = 33


@dataclass(frozen=True)
class ShamirShare:
    """The point (x, f(x)) of a sharing polynomial f with f(0) = secret."""

    x: int
    y: int

    def y_bytes(self) -> bytes:
        """f(x) as 33 big-endian bytes."""
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_y_bytes(cls, x: int, value: bytes) -> ShamirShare:
        """Parse a share whose f(x) arrived as 33 big-endian bytes."""
        if len(value) != SHARE_BYTES:
            raise ValueError(f"a share value is {SHARE_BYTES} bytes, got {len(value)}")
        y = int.from_bytes(value, "big")
        if y >= FIELD_PRIME:
            raise ValueError("share value is not a field element (>= the field prime)")
        return cls(x, y)


def split_secret(secret: bytes, threshold: int, xs: Sequence[int]) -> tuple[ShamirShare, ...]:
    """Shares of `secret` at the points `xs`; any `threshold` of them determine it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if len(set(xs)) != len(xs):
        raise ValueError("share points must be distinct")
    if any(not 0 < x < FIELD_PRIME for x in xs):
        raise ValueError("share points must be in [1, p): x = 0 would reveal the secret")
    if not 1 <= threshold <= len(xs):
        raise ValueError(
            f"threshold must be in [1, {len(xs)}] for {len(xs)} shares, got {threshold}"
        )
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(FIELD_PRIME) for _ in range(threshold - 1)]
    return tuple(ShamirShare(x, _evaluate(coefficients, x)) for x in xs)


def interpolate_at_zero(shares: Sequence[ShamirShare]) -> int:
    """Lagrange interpolation of the unique polynomial of degree < len(shares) at 0.

    With fewer shares than the threshold this is a field element unrelated to
    the secret; it is only the secret when at least `threshold` shares are given.
    """
    return _interpolate(shares, 0)


def reconstruct_secret(shares: Sequence[ShamirShare], threshold: int) -> bytes:
    """The 32-byte secret from at least `threshold` shares.

    Shares beyond the threshold are checked against the polynomial through the
    first `threshold`: a wrong share is detected whenever more than `threshold`
    shares are given (with exactly `threshold`, nothing can be checked).
    """
    if len(shares) < threshold:
        raise ValueError(f"need at least {threshold} shares to reconstruct, got {len(shares)}")
    basis = shares[:threshold]
    if any(_interpolate(basis, extra.x) != extra.y for extra in shares[threshold:]):
        raise ValueError("shares are inconsistent: at least one share is wrong")
    value = _interpolate(basis, 0)
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ValueError("shares are inconsistent: the interpolated value is not a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def _interpolate(shares: Sequence[ShamirShare], at: int) -> int:
    xs = [share.x for share in shares]
    if not shares or len(set(xs)) != len(xs):
        raise ValueError("interpolation needs at least one share and distinct points")
    total = 0
    for share in shares:
        numerator, denominator = 1, 1
        for other in xs:
            if other != share.x:
                numerator = numerator * (at - other) % FIELD_PRIME
                denominator = denominator * (share.x - other) % FIELD_PRIME
        total += share.y * numerator * pow(denominator, -1, FIELD_PRIME)
    return total % FIELD_PRIME


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % FIELD_PRIME
    return value
