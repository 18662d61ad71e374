"""synth.disc_filter: the row-decomposed elliptical erosion and dilation equal OpenCV's bit for bit."""
import cv2
import numpy as np
import pytest

from synseg.generate import synth


@pytest.mark.parametrize("size,shape", [(3, (20, 30)), (15, (64, 48)), (31, (100, 90)), (61, (70, 130)),
                                        (101, (40, 30)), (45, (1, 80))])
def test_disc_filter_equals_opencv(size, shape):
    a = (np.random.default_rng(size).normal(size=shape) * 100).astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    for op in (cv2.erode, cv2.dilate):
        np.testing.assert_array_equal(synth.disc_filter(a, size, op), op(a, kernel))
