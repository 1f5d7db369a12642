"""Privacy accounting: an RDP accountant for the Poisson-sampled Gaussian and a per-run ledger.

The accountant is `dp_accounting`'s `RdpAccountant` (pinned at 0.6.0) under
the add-or-remove-one-node relation. One round is a
`PoissonSampledDpEvent(q, GaussianDpEvent(z))`; r rounds compose as
`SelfComposedDpEvent(event, r)`, which adds the RDP curves. RDP is evaluated at
`RDP_ORDERS` and converted to (ε, δ) with Canonne–Kamath–Steinke 2020, Prop. 12:
ε = min over α of  RDP(α) + log1p(−1/α) − log(δ·α) / (α − 1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from enum import Enum

from dp_accounting import dp_event, mechanism_calibration
from dp_accounting.rdp import rdp_privacy_accountant

from fedmesh.errors import FailedPrecondition

RDP_ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *(float(order) for order in range(11, 64)),
    128.0,
    256.0,
    512.0,
    1024.0,
)
"""Rényi orders α: 1.1 … 10.9 by 0.1, 11 … 63, then 128, 256, 512, 1024 (the library's defaults).

Orders at which the library's series for the sampled Gaussian does not converge
are excluded by `dp_accounting` itself (it logs a warning on the `absl` logger).
"""

DEFAULT_ALERT_FRACTION = 0.8


def _round_event(sampling_rate: float, noise_multiplier: float) -> dp_event.DpEvent:
    return dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier))


def _validate(sampling_rate: float, noise_multiplier: float, delta: float) -> None:
    if not 0.0 < sampling_rate <= 1.0:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0.0:
        raise ValueError(f"noise_multiplier must be finite and > 0, got {noise_multiplier}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


class SampledGaussianAccountant:
    """ε spent after r rounds of DP-FedAvg: Poisson sampling at rate q, noise multiplier z, at δ."""

    def __init__(self, sampling_rate: float, noise_multiplier: float, delta: float) -> None:
        _validate(sampling_rate, noise_multiplier, delta)
        self.sampling_rate = sampling_rate
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self._spent: dict[int, tuple[float, float]] = {}

    def __repr__(self) -> str:
        return (
            f"SampledGaussianAccountant(q={self.sampling_rate}, z={self.noise_multiplier}, "
            f"delta={self.delta})"
        )

    def epsilon_spent(self, rounds: int) -> float:
        """ε at this accountant's δ after `rounds` rounds (0.0 for no rounds)."""
        return self._epsilon_and_order(rounds)[0]

    def optimal_order(self, rounds: int) -> float:
        """The Rényi order α at which the (ε, δ) conversion was tightest (inf for no rounds)."""
        return self._epsilon_and_order(rounds)[1]

    def _epsilon_and_order(self, rounds: int) -> tuple[float, float]:
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if rounds == 0:
            return 0.0, math.inf
        if rounds not in self._spent:
            accountant = rdp_privacy_accountant.RdpAccountant(list(RDP_ORDERS))
            event = _round_event(self.sampling_rate, self.noise_multiplier)
            accountant.compose(dp_event.SelfComposedDpEvent(event, rounds))
            epsilon, order = accountant.get_epsilon_and_optimal_order(self.delta)
            self._spent[rounds] = (float(epsilon), float(order))
        return self._spent[rounds]


def calibrate_noise_multiplier(
    target_epsilon: float, sampling_rate: float, rounds: int, delta: float
) -> float:
    """The smallest noise multiplier z (to 1e-4) whose `rounds` rounds stay within ε at δ."""
    if not math.isfinite(target_epsilon) or target_epsilon <= 0.0:
        raise ValueError(f"target_epsilon must be finite and > 0, got {target_epsilon}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    _validate(sampling_rate, 1.0, delta)
    noise_multiplier = mechanism_calibration.calibrate_dp_mechanism(
        lambda: rdp_privacy_accountant.RdpAccountant(list(RDP_ORDERS)),
        lambda z: dp_event.SelfComposedDpEvent(_round_event(sampling_rate, z), rounds),
        target_epsilon,
        delta,
        bracket_interval=mechanism_calibration.LowerEndpointAndGuess(0.05, 1.0),
        tol=1e-4,
    )
    return float(noise_multiplier)


class BudgetStatus(Enum):
    """Where a run's budget stands once the next round is counted."""

    WITHIN = "within"
    NEAR_LIMIT = "near_limit"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class BudgetDecision:
    """Whether one more round fits the ε budget, with the numbers behind the answer."""

    fits: bool
    rounds_done: int
    epsilon_now: float
    epsilon_after: float
    epsilon_budget: float
    delta: float
    alert_fraction: float

    @property
    def fraction_used(self) -> float:
        """ε spent so far as a fraction of the budget."""
        return self.epsilon_now / self.epsilon_budget

    @property
    def fraction_after(self) -> float:
        """ε after the next round as a fraction of the budget."""
        return self.epsilon_after / self.epsilon_budget

    @property
    def status(self) -> BudgetStatus:
        """EXHAUSTED if the round is refused, NEAR_LIMIT if it reaches the alert fraction."""
        if not self.fits:
            return BudgetStatus.EXHAUSTED
        if self.fraction_after >= self.alert_fraction:
            return BudgetStatus.NEAR_LIMIT
        return BudgetStatus.WITHIN

    @property
    def reason(self) -> str:
        """A sentence stating the decision and its numbers."""
        verdict = "fits within" if self.fits else "would exceed"
        return (
            f"round {self.rounds_done + 1} {verdict} the privacy budget: "
            f"ε {self.epsilon_now:.4g} → {self.epsilon_after:.4g} at δ={self.delta:g}, "
            f"budget ε={self.epsilon_budget:g} ({self.fraction_after:.1%} after the round)"
        )


class PrivacyBudgetExceeded(FailedPrecondition):
    """The next round would spend more ε than the run's budget."""

    def __init__(self, decision: BudgetDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True)
class PrivacyLedger:
    """A run's privacy budget and the rounds already charged to it; pure and immutable."""

    epsilon_budget: float
    delta: float
    sampling_rate: float
    noise_multiplier: float
    rounds_done: int = 0
    alert_fraction: float = DEFAULT_ALERT_FRACTION

    def __post_init__(self) -> None:
        if not math.isfinite(self.epsilon_budget) or self.epsilon_budget <= 0.0:
            raise ValueError(f"epsilon_budget must be finite and > 0, got {self.epsilon_budget}")
        _validate(self.sampling_rate, self.noise_multiplier, self.delta)
        if self.rounds_done < 0:
            raise ValueError(f"rounds_done must be >= 0, got {self.rounds_done}")
        if not 0.0 < self.alert_fraction <= 1.0:
            raise ValueError(f"alert_fraction must be in (0, 1], got {self.alert_fraction}")

    @property
    def accountant(self) -> SampledGaussianAccountant:
        """The accountant for this run's q, z and δ."""
        return _accountant(self.sampling_rate, self.noise_multiplier, self.delta)

    def epsilon_spent(self) -> float:
        """ε spent by the rounds already recorded."""
        return self.accountant.epsilon_spent(self.rounds_done)

    def affordable_rounds(self, limit: int) -> int:
        """How many rounds in total (done ones included, at most `limit`) fit the budget.

        For StartRun: a run whose planned rounds exceed this cannot finish; 0
        means not even one round fits. ε grows with rounds, so this bisects.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        accountant = self.accountant
        low, high = 0, limit
        while low < high:
            middle = (low + high + 1) // 2
            if accountant.epsilon_spent(middle) <= self.epsilon_budget:
                low = middle
            else:
                high = middle - 1
        return low

    def check_next_round(self) -> BudgetDecision:
        """Decide whether one more round stays within the budget."""
        accountant = self.accountant
        epsilon_after = accountant.epsilon_spent(self.rounds_done + 1)
        return BudgetDecision(
            fits=epsilon_after <= self.epsilon_budget,
            rounds_done=self.rounds_done,
            epsilon_now=accountant.epsilon_spent(self.rounds_done),
            epsilon_after=epsilon_after,
            epsilon_budget=self.epsilon_budget,
            delta=self.delta,
            alert_fraction=self.alert_fraction,
        )

    def record_round(self) -> PrivacyLedger:
        """This ledger with one more round charged; raises `PrivacyBudgetExceeded` if over."""
        decision = self.check_next_round()
        if not decision.fits:
            raise PrivacyBudgetExceeded(decision)
        return replace(self, rounds_done=self.rounds_done + 1)


@functools.lru_cache(maxsize=64)
def _accountant(
    sampling_rate: float, noise_multiplier: float, delta: float
) -> SampledGaussianAccountant:
    # Ledgers are rebuilt from stored state every round; sharing the accountant keeps its ε cache.
    return SampledGaussianAccountant(sampling_rate, noise_multiplier, delta)
