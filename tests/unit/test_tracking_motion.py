"""synthesize.tracking_motion: a difficulty knob that scales how far the tracked object travels."""
import numpy as np

from stages.datasets.synthetic import make_track


def _track(motion: float, i: int):
    return make_track(np.random.default_rng([0, 1, i]), 24, 224, 168, motion)


def _path(track) -> np.ndarray:
    cx, cy = track[2], track[3]
    return np.hypot(cx - cx[0], cy - cy[0])


def test_same_draws_for_every_motion_and_scaled_travel():
    for i in range(50):
        full, half, still = _track(1.0, i), _track(0.5, i), _track(0.0, i)
        # colour, shape, sizes and the distractor come from the same random draws
        assert full[:2] == half[:2] == still[:2] and full[5] == half[5] == still[5]
        assert np.array_equal(full[4], half[4])
        assert np.array_equal(still[2], np.full(24, still[2][0])) and np.array_equal(still[3], np.full(24, still[3][0]))
        # the start is the same; travel from it is at most the full travel (clipping at the border can only shorten)
        assert still[2][0] == full[2][0] or abs(still[2][0] - full[2][0]) < 0.08 * 168
    travel = np.median([_path(_track(1.0, i)).max() for i in range(200)])
    assert 0.4 < np.median([_path(_track(0.5, i)).max() for i in range(200)]) / travel < 0.6


def test_default_keeps_the_sequences_made_before_the_knob():
    # values of the generator before tracking_motion existed (commit 87a74d3): motion 1.0 changes no byte
    t = _track(1.0, 7)
    assert (float(t[2][0]), float(t[2][-1]), float(t[3][12])) == (54.81151974741418, 79.10457025767566,
                                                                  130.0696142781298)
