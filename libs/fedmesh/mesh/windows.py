"""Train, validation and held-out test windows in time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimeWindows:
    """Consecutive step ranges: training first, then validation, then the held-out test.

    Graphs built for a later window leave unscored every node labelled by a fault that
    began in an earlier window, so test faults are instances never seen in training.
    """

    train: range
    validation: range
    test: range


def split_windows(
    num_steps: int, validation_fraction: float = 0.2, test_fraction: float = 0.2
) -> TimeWindows:
    """Cut ``num_steps`` into train / validation / test windows by the given fractions."""
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must each be in (0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "validation_fraction + test_fraction must be < 1 to leave steps for training; "
            f"got {validation_fraction} + {test_fraction}"
        )
    test_start = num_steps - round(num_steps * test_fraction)
    validation_start = test_start - round(num_steps * validation_fraction)
    if not 0 < validation_start < test_start < num_steps:
        raise ValueError(
            f"{num_steps} steps are too few for three non-empty windows at these fractions"
        )
    return TimeWindows(
        train=range(0, validation_start),
        validation=range(validation_start, test_start),
        test=range(test_start, num_steps),
    )
