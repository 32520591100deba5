import pytest
import torch

from clusteralign.eval.color_histogram import color_histogram_features


def test_single_colour_image_fills_one_bin():
    img = torch.zeros(1, 3, 4, 2, dtype=torch.uint8)
    img[:, 0] = 255  # pure red -> r bin 7, g bin 0, b bin 0
    h = color_histogram_features(img, bins=8)
    assert h.shape == (1, 512)
    assert h[0, 7 * 64] == 1.0 and h.sum() == 1.0


def test_half_and_half():
    img = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    img[0, :, 0] = 200  # top row grey, bottom row black
    h = color_histogram_features(img, bins=4)
    grey = (3 * 4 + 3) * 4 + 3
    assert h[0, grey] == 0.5 and h[0, 0] == 0.5


def test_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        color_histogram_features(torch.zeros(1, 3, 2, 2))
