from recipes.tracking_localisation import centre_errors


def test_centre_errors_by_hand():
    gold = [[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]]  # the object moves from the top-left to the bottom-right
    # frame 0 copied from the prompt; frame 1 answered at the top-right quarter: centre (0.75, 0.25)
    text = "<answer>[[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5]]</answer>"
    out = centre_errors([text, "no answer"], gold + gold, width=200.0, height=100.0)
    assert out["answers"] == 2 and out["unparsed"] == 1
    assert out["first_box_median_px"] == 0.0
    assert out["model_median_px"] == 50.0            # (0.75, 0.25) vs (0.75, 0.75): 0.5 x 100 px
    assert abs(out["static_median_px"] - (100.0**2 + 50.0**2) ** 0.5) < 1e-9  # (0.25, 0.25) vs (0.75, 0.75)
