import numpy as np
import pytest

from fedmesh.mesh import RadioConstants
from fedmesh.mesh.queueing import mean_queue_frames, overflow_probability
from fedmesh.mesh.radio import capacity_mbps, frame_loss, link_range_m, mean_rssi_dbm

RADIO = RadioConstants()


def test_rssi_follows_log_distance_path_loss() -> None:
    rssi = mean_rssi_dbm(np.array([1.0, 10.0, 100.0]), np.zeros(3), RADIO)

    # 20 dBm - 40 dB at 1 m, then 30 dB per decade with exponent 3.
    np.testing.assert_allclose(rssi, [-20.0, -50.0, -80.0])


def test_shadowing_subtracts_and_rssi_stays_in_range() -> None:
    rssi = mean_rssi_dbm(np.array([100.0, 0.1, 1e6]), np.array([5.0, -10.0, 0.0]), RADIO)

    np.testing.assert_allclose(rssi, [-85.0, RADIO.max_rssi_dbm, RADIO.rssi_floor_dbm])


def test_link_range_reaches_the_threshold() -> None:
    reach = link_range_m(RADIO, margin_db=0.0)

    assert mean_rssi_dbm(np.array([reach]), np.zeros(1), RADIO)[0] == pytest.approx(
        RADIO.link_threshold_dbm
    )


def test_frame_loss_is_half_at_the_midpoint_and_falls_with_snr() -> None:
    loss = frame_loss(np.array([-20.0, 6.0, 15.0, 40.0]), RADIO)

    assert loss[1] == pytest.approx(0.5)
    assert np.all(np.diff(loss) < 0)
    assert loss[0] > 0.99
    assert loss[3] < 1e-9


def test_capacity_is_a_share_of_shannon_and_capped() -> None:
    rate = capacity_mbps(np.array([10.0 * np.log10(3.0), 80.0]), RADIO)

    # log2(1 + 3) = 2 bit/s/Hz over 20 MHz at efficiency 0.5 gives 20 Mbps.
    assert rate[0] == pytest.approx(20.0)
    assert rate[1] == RADIO.max_rate_mbps


def test_overflow_probability_limits() -> None:
    drop = overflow_probability(np.array([0.0, 0.5, 1.0, 2.0, 1000.0]), 50)

    assert drop[0] == 0.0
    assert drop[1] == pytest.approx(0.5**50 * 0.5 / (1 - 0.5**51))
    assert drop[2] == pytest.approx(1 / 51)
    # Above capacity the queue drops what it cannot serve: 1 - 1/rho.
    assert drop[3] == pytest.approx(0.5, rel=1e-9)
    assert drop[4] == pytest.approx(0.999, rel=1e-6)


def test_queue_length_stays_between_empty_and_full() -> None:
    queued = mean_queue_frames(np.array([0.0, 0.5, 1.0, 3.0, 1000.0]), 50)

    assert queued[0] == 0.0
    assert queued[1] == pytest.approx(1.0, rel=1e-9)
    assert queued[2] == pytest.approx(25.0)
    assert queued[3] == pytest.approx(50.0 - 0.5, rel=1e-9)
    assert np.all(np.diff(queued) > 0)
    assert queued[4] == pytest.approx(50.0, abs=0.01)
