"""The compression detector and the information plane over training, on hand-made trajectories.

Trajectories are written down, so every verdict and drop is known exactly; drops are
compared to 1e-12 bits (float subtraction).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from layerlens.analyses.mutual_information.dynamics import TOLERANCE_BITS, compression
from layerlens.analyses.mutual_information.figures import information_plane_over_epochs_figure
from layerlens.report.plots import plt

EXACT = 1e-12


def test_rise_then_fall_is_compression() -> None:
    """Fitting to 6.0 bits at step 20, then compression to 4.5: drop 1.5 bits."""
    result = compression([0, 10, 20, 40, 80], [3.0, 5.0, 6.0, 5.2, 4.5])
    assert result["peak_step"] == 20 and result["compressed"]
    assert result["drop_bits"] == pytest.approx(1.5, abs=EXACT)


def test_monotone_rise_is_not_compression() -> None:
    result = compression([0, 1, 2, 3], [1.0, 2.0, 2.5, 2.75])
    assert result == {"peak_step": 3, "drop_bits": 0.0, "compressed": False}


def test_fall_within_the_tolerance_is_not_compression() -> None:
    """Jitter of +-0.04 bits around a plateau: the fall after the peak stays below 0.1 bits."""
    rng = np.random.default_rng(0)
    values = 5.0 + rng.uniform(-0.04, 0.04, 30)
    result = compression(list(range(30)), values.tolist())
    assert TOLERANCE_BITS == 0.1
    assert not result["compressed"]
    assert result["drop_bits"] == pytest.approx(values.max() - values[-1], abs=EXACT)
    assert result["peak_step"] == int(np.argmax(values))


def test_the_tolerance_is_a_strict_threshold_and_can_be_set() -> None:
    steps, values = [0, 1, 2], [1.0, 2.0, 1.75]  # drop 0.25 bits, exact in binary
    assert compression(steps, values, tolerance_bits=0.25)["compressed"] is False
    assert compression(steps, values, tolerance_bits=0.2)["compressed"] is True
    assert compression(steps, values)["compressed"] is True  # default 0.1


def test_a_dip_that_recovers_is_not_compression() -> None:
    """The drop is measured to the last step: a fall that is undone by the end does not count."""
    result = compression([0, 1, 2, 3], [2.0, 4.0, 2.0, 3.95])
    assert result["peak_step"] == 1 and not result["compressed"]
    assert result["drop_bits"] == pytest.approx(0.05, abs=EXACT)


def test_the_first_of_equal_peaks_is_the_peak() -> None:
    assert compression([5, 10, 15], [2.0, 2.0, 1.0])["peak_step"] == 5


def test_missing_estimates_are_left_out() -> None:
    """None and NaN (a skipped layer at that step) are no points; all missing: no verdict."""
    result = compression([0, 1, 2, 3], [None, 4.0, math.nan, 3.0])
    assert result["peak_step"] == 1 and result["compressed"]
    assert result["drop_bits"] == pytest.approx(1.0, abs=EXACT)
    assert compression([0, 1], [None, None]) == {"peak_step": None, "drop_bits": None,
                                                 "compressed": None}


@pytest.mark.parametrize(("steps", "values", "tolerance", "message"), [
    ([0, 1], [1.0], 0.1, "same length"),
    ([0, 0], [1.0, 2.0], 0.1, "strictly increasing"),
    ([2, 1], [1.0, 2.0], 0.1, "strictly increasing"),
    ([0.5, 1], [1.0, 2.0], 0.1, "integers"),
    ([0, 1], [1.0, math.inf], 0.1, "infinite"),
    ([0, 1], [1.0, 2.0], -0.1, "tolerance_bits"),
    ([0, 1], [1.0, 2.0], math.nan, "tolerance_bits"),
])
def test_bad_input_is_a_clear_error(steps, values, tolerance, message) -> None:
    with pytest.raises(ValueError, match=message):
        compression(steps, values, tolerance_bits=tolerance)


def _trajectories(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]


def test_over_epochs_figure_draws_one_trajectory_per_layer_coloured_by_step() -> None:
    steps = [0, 10, 30]
    i_xt = [[6.0, 3.0], [7.0, 3.5], [6.5, None]]  # layer 1 skipped at the last step
    i_ty = [[0.2, 0.1], [0.5, 0.6], [0.7, 0.9]]
    fig = information_plane_over_epochs_figure(steps, ["conv", "fc"], i_xt, i_ty,
                                               log2_n=12.0, h_y=1.0, estimator="kde")
    ax = fig.axes[0]
    points = _trajectories(ax)
    assert len(points) == 2
    np.testing.assert_array_equal(points[0].get_offsets(), [[6.0, 0.2], [7.0, 0.5], [6.5, 0.7]])
    np.testing.assert_array_equal(points[1].get_offsets(), [[3.0, 0.1], [3.5, 0.6]])
    np.testing.assert_array_equal(points[0].get_array(), steps)  # colour = step
    np.testing.assert_array_equal(points[1].get_array(), [0, 10])
    grey = [line for line in ax.get_lines() if line.get_color() == "0.6"]
    assert [len(line.get_xdata()) for line in grey] == [3, 2]  # the two trajectories
    assert ax.get_xlabel() == "I(X;T) [bits]"
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "0: conv" in legend and "1: fc" in legend
    plt.close(fig)


def test_over_epochs_figure_without_i_xt_draws_i_ty_against_step() -> None:
    """ksg has no I(X;T): each layer's I(T;Y) over the steps instead."""
    fig = information_plane_over_epochs_figure([1, 2], ["a"], [[None], [None]], [[0.1], [0.4]])
    ax = fig.axes[0]
    (points,) = _trajectories(ax)
    np.testing.assert_array_equal(points.get_offsets(), [[1.0, 0.1], [2.0, 0.4]])
    assert ax.get_xlabel() == "step"
    plt.close(fig)


def test_over_epochs_figure_checks_the_shape() -> None:
    with pytest.raises(ValueError, match="one row per step"):
        information_plane_over_epochs_figure([0, 1], ["a"], [[1.0]], [[0.1], [0.2]])
