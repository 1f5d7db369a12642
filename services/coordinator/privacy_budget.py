"""A run's privacy budget in Redis: which rounds have been charged, and ε spent.

Every opened round is charged, failed ones too, because the aggregator reports
ε for round r as the accountant's bound after r rounds. The ledger therefore
stores the highest round number charged: charging round r again (a new leader
repeating the step) changes nothing, and ε spent is the bound after that many
rounds at the run's sampling rate (0 counted as 1) and noise multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from fedmesh.services.coordinator.spec import PrivacySettings
from fedmesh.store import keys

if TYPE_CHECKING:
    from fedmesh.privacy.accountant import PrivacyLedger

# KEYS[1] budget hash. ARGV[1] round. Charges the round once: 1 when newly charged, else 0.
_CHARGE = """
local charged = tonumber(redis.call('HGET', KEYS[1], 'rounds') or '0')
if charged >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'rounds', ARGV[1])
return 1
"""


def budget_key(run_id: str) -> str:
    """Hash: the run's privacy ledger (``rounds``: the highest round charged)."""
    return f"{keys.run_tag(run_id)}:privacy"


def ledger(privacy: PrivacySettings, rounds_done: int) -> PrivacyLedger:
    """The accountant's ledger of a run's DP settings after ``rounds_done`` rounds."""
    # Loaded only for private runs: the accountant pulls in dp-accounting and SciPy.
    from fedmesh.privacy.accountant import PrivacyLedger

    return PrivacyLedger(
        privacy.epsilon_budget,
        privacy.delta,
        privacy.sampling_rate or 1.0,
        privacy.noise_multiplier,
        rounds_done,
    )


@dataclass(frozen=True)
class BudgetState:
    """What a run has spent of its budget."""

    rounds_charged: int
    epsilon_spent: float
    epsilon_budget: float
    delta: float


class PrivacyBudgets:
    """Per-run privacy ledgers in Redis, one hash each under the run's hash tag."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._charge = redis.register_script(_CHARGE)

    async def charge(self, run_id: str, round_no: int) -> bool:
        """Charge round ``round_no`` to the run; False when it (or a later one) was already."""
        return bool(await self._charge(keys=[budget_key(run_id)], args=[round_no]))

    async def rounds_charged(self, run_id: str) -> int:
        """The highest round charged to the run (0 before the first)."""
        raw = await self._redis.hget(budget_key(run_id), "rounds")
        return int(raw) if raw is not None else 0

    async def state(self, run_id: str, privacy: PrivacySettings) -> BudgetState:
        """Rounds charged and ε spent by them, with the budget and δ they are measured at."""
        rounds = await self.rounds_charged(run_id)
        return BudgetState(
            rounds_charged=rounds,
            epsilon_spent=ledger(privacy, rounds).epsilon_spent(),
            epsilon_budget=privacy.epsilon_budget,
            delta=privacy.delta,
        )
