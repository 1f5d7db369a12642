from typing import Any

import pytest

from fedmesh.errors import FailedPrecondition
from fedmesh.privacy.accountant import BudgetStatus, PrivacyBudgetExceeded, PrivacyLedger

# q = 1, z = 2, δ = 1e-5: ε after r rounds is 2.1657, 3.1890, 4.0113, 4.7285, 5.3777 (r = 1..5).
LEDGER = PrivacyLedger(epsilon_budget=5.0, delta=1e-5, sampling_rate=1.0, noise_multiplier=2.0)


def test_a_round_within_the_budget_fits_with_its_numbers() -> None:
    decision = LEDGER.check_next_round()

    assert decision.fits is True
    assert decision.rounds_done == 0
    assert decision.epsilon_now == 0.0
    assert decision.epsilon_after == pytest.approx(2.165715659029443)
    assert decision.epsilon_budget == 5.0
    assert decision.fraction_after == pytest.approx(0.4331431318)
    assert decision.status is BudgetStatus.WITHIN


def test_recording_rounds_is_pure_and_accumulates_epsilon() -> None:
    ledger = LEDGER.record_round().record_round()

    assert LEDGER.rounds_done == 0
    assert ledger.rounds_done == 2
    assert ledger.epsilon_spent() == pytest.approx(3.1889915626335874)


def test_the_round_reaching_eighty_percent_is_flagged_near_limit() -> None:
    ledger = PrivacyLedger(5.0, 1e-5, 1.0, 2.0, rounds_done=3)

    decision = ledger.check_next_round()

    assert decision.fits is True
    assert decision.fraction_used == pytest.approx(4.011321708510026 / 5.0)
    assert decision.fraction_after == pytest.approx(4.728507067217623 / 5.0)
    assert decision.status is BudgetStatus.NEAR_LIMIT


def test_the_round_that_would_overshoot_is_refused_with_the_numbers() -> None:
    ledger = PrivacyLedger(5.0, 1e-5, 1.0, 2.0, rounds_done=4)

    decision = ledger.check_next_round()
    with pytest.raises(PrivacyBudgetExceeded) as refused:
        ledger.record_round()

    assert decision.fits is False
    assert decision.status is BudgetStatus.EXHAUSTED
    assert decision.epsilon_after == pytest.approx(5.377728336819822)
    assert refused.value.decision == decision
    assert isinstance(refused.value, FailedPrecondition)
    assert str(refused.value) == (
        "round 5 would exceed the privacy budget: ε 4.729 → 5.378 at δ=1e-05, "
        "budget ε=5 (107.6% after the round)"
    )


def test_a_custom_alert_fraction_moves_the_warning() -> None:
    ledger = PrivacyLedger(5.0, 1e-5, 1.0, 2.0, alert_fraction=0.4)

    assert ledger.check_next_round().status is BudgetStatus.NEAR_LIMIT


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epsilon_budget": 0.0}, "epsilon_budget must be finite and > 0, got 0.0"),
        ({"rounds_done": -1}, "rounds_done must be >= 0, got -1"),
        ({"alert_fraction": 1.5}, r"alert_fraction must be in \(0, 1\], got 1.5"),
        ({"sampling_rate": 2.0}, r"sampling_rate must be in \(0, 1\], got 2.0"),
    ],
)
def test_invalid_ledgers_are_refused(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "epsilon_budget": 5.0,
        "delta": 1e-5,
        "sampling_rate": 1.0,
        "noise_multiplier": 2.0,
    } | changes

    with pytest.raises(ValueError, match=message):
        PrivacyLedger(**fields)


def test_affordable_rounds_is_the_last_round_count_within_the_budget() -> None:
    assert LEDGER.affordable_rounds(50) == 4
    assert LEDGER.affordable_rounds(3) == 3
    assert PrivacyLedger(2.0, 1e-5, 1.0, 2.0).affordable_rounds(50) == 0


def test_the_design_defaults_refuse_the_first_round_at_full_participation() -> None:
    # C = 1.0, z = 1.1, δ = 1e-5, ε budget 1.0 (DESIGN §8): one round at q = 1 costs ε ≈ 4.24.
    ledger = PrivacyLedger(epsilon_budget=1.0, delta=1e-5, sampling_rate=1.0, noise_multiplier=1.1)

    assert ledger.affordable_rounds(10) == 0
    assert ledger.check_next_round().epsilon_after == pytest.approx(4.239640834979211)
