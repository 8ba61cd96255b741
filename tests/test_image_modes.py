"""Every PIL mode decodes to what the image shows, or is refused with the file named (issue 28.3).

One test per mode (1, L, P, PA, RGB, RGBA, CMYK, I;16, I, F, LA): the image is written to a file (PNG, or TIFF
where PNG cannot hold the mode), loaded with :func:`cutlight.data.load_image` (the one loader of every path) and
compared with what it shows; the data checks (``verify=header`` and ``full``) must accept exactly what the loader
accepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutlight.data import load_image
from cutlight.data.folder import ImageFileError
from cutlight.data.image_checks import check_image

WIDTH, HEIGHT = 16, 3
RAMP8 = np.rint(np.linspace(0, 255, WIDTH)).astype(np.uint8)  # a left-to-right gradient, 0 .. 255


def rows(values: np.ndarray) -> np.ndarray:
    """(W,) or (W, C) -> (HEIGHT, W[, C]): the same row repeated."""
    return np.repeat(values[None], HEIGHT, axis=0)


def save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    reopened = Image.open(path)
    assert reopened.mode == image.mode, (path, reopened.mode)  # the file really holds the mode under test
    return path


def pixels(path: Path, channels: int) -> np.ndarray:
    """The loaded image as (H, W) for 1 channel, (H, W, C) otherwise; both data checks must accept the file."""
    assert check_image(path, "header") is None
    assert check_image(path, "full") is None
    image = load_image(path, channels)
    assert image.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels] and image.size == (WIDTH, HEIGHT)
    return np.asarray(image)


def assert_gray(path: Path, expected_row: np.ndarray) -> None:
    """Loaded as 1, 3 and 4 channels, the image is the gray row ``expected_row`` (opaque for 4 channels)."""
    expected = rows(expected_row.astype(np.uint8))
    np.testing.assert_array_equal(pixels(path, 1), expected)
    rgb = pixels(path, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)
    rgba = pixels(path, 4)
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    assert (rgba[..., 3] == 255).all()


def on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha compositing over white, as Pillow rounds it: (..., 3) colours, (...) alphas -> (..., 3) uint8."""
    a = alpha[..., None].astype(np.float64) / 255
    return np.rint(color * a + 255 * (1 - a)).astype(np.int64)


# ------------------------------------------------------------------- 8-bit and palette modes
def test_mode_1_is_black_and_white(tmp_path):
    row = (np.arange(WIDTH) >= WIDTH // 2)  # left half black, right half white
    path = save(Image.fromarray(rows(row)).convert("1"), tmp_path / "bilevel.png")
    assert_gray(path, row * 255)


def test_mode_L_keeps_its_gray_levels(tmp_path):
    path = save(Image.fromarray(rows(RAMP8), mode="L"), tmp_path / "gray.png")
    assert_gray(path, RAMP8)


PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def palette_image(mode: str = "P") -> Image.Image:
    image = Image.new("P", (WIDTH, HEIGHT))
    image.putpalette([v for color in PALETTE for v in color])
    image.putdata([x % 4 for _ in range(HEIGHT) for x in range(WIDTH)])
    return image if mode == "P" else image.convert(mode)


def test_mode_P_shows_its_palette_colours(tmp_path):
    path = save(palette_image(), tmp_path / "palette.png")
    colours = np.array([PALETTE[x % 4] for x in range(WIDTH)])
    np.testing.assert_array_equal(pixels(path, 3), rows(colours))
    np.testing.assert_array_equal(pixels(path, 4)[..., 3], 255)
    gray = pixels(path, 1)  # ITU-R 601 luma of red, green, blue, white
    np.testing.assert_array_equal(gray[0, :4], [76, 150, 29, 255])

    transparent = palette_image()
    transparent.info["transparency"] = 1  # palette entry 1 (green) is transparent
    path = save(transparent, tmp_path / "palette_trns.png")
    rgba = pixels(path, 4)
    np.testing.assert_array_equal(rgba[0, :4, 3], [255, 0, 255, 255])  # alpha kept with 4 channels
    np.testing.assert_array_equal(pixels(path, 3)[0, :4], [(255, 0, 0), (255, 255, 255), (0, 0, 255),
                                                           (255, 255, 255)])  # green hidden: white


def test_mode_PA_keeps_alpha_or_composites_on_white(tmp_path):
    image = palette_image("PA")
    alpha = np.array([0, 85, 170, 255] * (WIDTH // 4), dtype=np.uint8)
    image.putalpha(Image.fromarray(rows(alpha), mode="L"))
    path = save(image, tmp_path / "palette_alpha.tif")  # PNG cannot hold PA
    colours = np.array([PALETTE[x % 4] for x in range(WIDTH)])
    rgba = pixels(path, 4)
    np.testing.assert_array_equal(rgba[..., :3], rows(colours))
    np.testing.assert_array_equal(rgba[..., 3], rows(alpha))
    np.testing.assert_array_equal(pixels(path, 3), rows(on_white(colours, alpha)))


def test_mode_RGB_is_unchanged(tmp_path):
    rgb = np.stack([RAMP8, RAMP8[::-1], np.full(WIDTH, 7, np.uint8)], axis=-1)  # (W, 3)
    path = save(Image.fromarray(rows(rgb), mode="RGB"), tmp_path / "rgb.png")
    np.testing.assert_array_equal(pixels(path, 3), rows(rgb))
    np.testing.assert_array_equal(pixels(path, 4)[..., 3], 255)
    np.testing.assert_array_equal(pixels(path, 1), np.asarray(Image.open(path).convert("L")))


def test_mode_RGBA_keeps_alpha_or_composites_on_white(tmp_path):
    rgb = np.stack([RAMP8, RAMP8[::-1], np.full(WIDTH, 200, np.uint8)], axis=-1)  # (W, 3)
    alpha = RAMP8[::-1]  # opaque on the left, transparent on the right
    path = save(Image.fromarray(rows(np.concatenate([rgb, alpha[:, None]], -1)), mode="RGBA"), tmp_path / "rgba.png")
    rgba = pixels(path, 4)
    np.testing.assert_array_equal(rgba[..., :3], rows(rgb))
    np.testing.assert_array_equal(rgba[..., 3], rows(alpha))
    np.testing.assert_allclose(pixels(path, 3), rows(on_white(rgb, alpha)), atol=1)
    assert (pixels(path, 3)[:, -1] == 255).all()  # alpha 0: white, not the colour hidden under it


def test_mode_LA_keeps_alpha_or_composites_on_white(tmp_path):
    gray, alpha = np.full(WIDTH, 40, np.uint8), RAMP8
    path = save(Image.fromarray(rows(np.stack([gray, alpha], -1)), mode="LA"), tmp_path / "gray_alpha.png")
    expected = on_white(np.repeat(gray[:, None], 3, -1), alpha)[:, 0]  # (W,) a gray on white
    np.testing.assert_allclose(pixels(path, 1), rows(expected), atol=1)
    assert pixels(path, 1)[0, 0] == 255 and pixels(path, 1)[0, -1] == 40
    rgba = pixels(path, 4)
    np.testing.assert_array_equal(rgba[..., :3], 40)
    np.testing.assert_array_equal(rgba[..., 3], rows(alpha))


def test_mode_CMYK_shows_its_inks(tmp_path):
    inks = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]
    image = Image.new("CMYK", (WIDTH, HEIGHT))
    image.putdata([inks[x % 5] for _ in range(HEIGHT) for x in range(WIDTH)])
    path = save(image, tmp_path / "cmyk.tif")  # PNG cannot hold CMYK
    seen = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)]  # cyan .. black, paper
    np.testing.assert_array_equal(pixels(path, 3), rows(np.array([seen[x % 5] for x in range(WIDTH)])))
    np.testing.assert_array_equal(pixels(path, 4)[..., 3], 255)
    gray = pixels(path, 1)[0, :5]
    assert gray[3] == 0 and gray[4] == 255 and 0 < gray[:3].min()


# ------------------------------------------------------------------- deeper than 8 bits
@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_mode_I16_is_scaled_by_its_16_bit_range(tmp_path, suffix):
    values = np.rint(np.linspace(0, 65535, WIDTH)).astype(np.uint16)
    path = save(Image.fromarray(rows(values)), tmp_path / f"gray16.{suffix}")
    assert Image.open(path).mode == "I;16"
    assert_gray(path, values // 256)  # 256 equal bins: 0 .. 255, a gradient, not clipped to white
    dark = save(Image.fromarray(rows(values // 16)), tmp_path / f"dark16.{suffix}")
    assert_gray(dark, values // 16 // 256)  # a dark 16-bit image stays dark (0 .. 15)


def test_mode_I_beyond_16_bits_is_scaled_by_its_own_range(tmp_path):
    """The issue's file: 32-bit values 84670 .. 2147359256 loaded as all 255 before; now a full gradient."""
    values = np.linspace(84670, 2147359256, WIDTH).astype(np.int32)
    path = save(Image.fromarray(rows(values)), tmp_path / "gray32.tif")  # PNG cannot hold I
    lo, hi = int(values.min()), int(values.max())
    assert_gray(path, (values.astype(np.int64) - lo) * 256 // (hi - lo + 1))
    gray = pixels(path, 1)[0]
    assert gray[0] == 0 and gray[-1] == 255 and (np.diff(gray.astype(int)) > 0).all()

    signed = np.linspace(-1000, 1000, WIDTH).astype(np.int32)  # e.g. a signed 16-bit TIFF: below the convention
    assert_gray(save(Image.fromarray(rows(signed)), tmp_path / "signed.tif"), (signed + 1000) * 256 // 2001)


def test_mode_I_within_16_bits_reads_as_16_bit_data(tmp_path):
    """Older Pillow versions open 16-bit PNGs as I: the same values give the same image as I;16."""
    values = np.rint(np.linspace(0, 40000, WIDTH)).astype(np.int32)
    path = save(Image.fromarray(rows(values)), tmp_path / "gray32_in16.tif")
    assert_gray(path, values // 256)
    sixteen = save(Image.fromarray(rows(values.astype(np.uint16))), tmp_path / "gray16.png")
    np.testing.assert_array_equal(pixels(path, 3), pixels(sixteen, 3))


@pytest.mark.parametrize("value, shown", [(100_000, 255), (2**31 - 1, 255), (-5, 0), (300, 1)])
def test_mode_I_constant_image_does_not_divide_by_zero(tmp_path, value, shown):
    path = save(Image.fromarray(np.full((HEIGHT, WIDTH), value, np.int32)), tmp_path / "flat.tif")
    with np.errstate(all="raise"):
        assert_gray(path, np.full(WIDTH, shown))


def test_mode_F_in_0_1_is_scaled_by_255(tmp_path):
    values = np.linspace(0, 1, WIDTH, dtype=np.float32)
    path = save(Image.fromarray(rows(values)), tmp_path / "float.tif")  # PNG cannot hold F
    assert_gray(path, np.rint(values.astype(np.float64) * 255))
    dim = values * 0.5  # a dim float image stays dim
    assert_gray(save(Image.fromarray(rows(dim)), tmp_path / "dim.tif"), np.rint(dim.astype(np.float64) * 255))


def test_mode_F_beyond_0_1_is_scaled_by_its_own_range(tmp_path):
    values = np.linspace(-3.5, 1200.0, WIDTH, dtype=np.float32)  # e.g. a depth map
    path = save(Image.fromarray(rows(values)), tmp_path / "depth.tif")
    v = values.astype(np.float64)
    assert_gray(path, np.rint((v - v.min()) * 255 / (v.max() - v.min())))


@pytest.mark.parametrize("value, shown", [(5.0, 255), (-1.0, 0), (0.5, 128)])
def test_mode_F_constant_image_does_not_divide_by_zero(tmp_path, value, shown):
    path = save(Image.fromarray(np.full((HEIGHT, WIDTH), value, np.float32)), tmp_path / "flat.tif")
    with np.errstate(all="raise"):
        assert_gray(path, np.full(WIDTH, shown))


# ------------------------------------------------------------------- refused, with the file named, by all three
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mode_F_with_nan_or_infinity_is_refused_by_loader_and_both_checks(tmp_path, bad):
    values = np.linspace(0, 1, WIDTH * HEIGHT, dtype=np.float32).reshape(HEIGHT, WIDTH)
    values[1, 2] = bad
    path = save(Image.fromarray(values), tmp_path / "holes.tif")
    with pytest.raises(ImageFileError, match=r"holes\.tif.*mode 'F' \(32-bit float\) with 1 NaN or infinite"):
        load_image(path, 3)
    for verify in ("header", "full"):
        reason = check_image(path, verify)
        assert reason is not None and "1 NaN or infinite pixel value(s) of 48" in reason, (verify, reason)


def test_unsupported_mode_is_refused_by_loader_and_both_checks(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (WIDTH, HEIGHT)).save(path)
    assert Image.open(path).mode == "LAB"
    with pytest.raises(ImageFileError, match=r"lab\.tif.*mode 'LAB' is not supported"):
        load_image(path, 3)
    for verify in ("header", "full"):
        assert "mode 'LAB' is not supported" in check_image(path, verify)
