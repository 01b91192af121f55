"""pyfunc.paper on a bold digit written on a margin line: the line is still found and
removed, so it does not stretch the digit's crop (a photo from the ruled-paper renderer,
with a digit drawn here)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from pyfunc.preprocess import pre_process
from training.photos import ruled_paper


def test_a_bold_digit_on_a_margin_line_keeps_the_line_out_of_its_crop() -> None:
    """Seed 623: the margin line runs down the stem of a bold "7", which joins the line's
    band over about half of its length. The lone line's direction was taken from its thin
    stretches only when they were 60 % of it, so the line was kept whole and the crop ran
    to the frame along it (0.146 from the clean digit)."""
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).line([(8, 6), (20, 6), (14, 23)], fill=255, width=4)
    digit = np.asarray(img)
    got = pre_process([ruled_paper(digit, 623)])[0, :, :, 0]
    assert np.abs(got - pre_process(digit)[0, :, :, 0]).mean() < 0.08
