"""Decoding as a viewer shows: EXIF orientation, draft-scaled JPEGs, the pixel limit, the resize policies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlzoo import images as datamod
from tlzoo.images.decode import ImageTooLarge, available_cores, image_suffixes, load_image, recipe, resize_array
from tlzoo.errors import DataError
from tlzoo.specs import TORCHVISION_IMAGENET, Preprocessing

# What a camera stores for each EXIF orientation, given the upright picture: the inverse of what a viewer applies.
T = Image.Transpose
STORED = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90,
          7: T.TRANSVERSE, 8: T.ROTATE_270}  # fmt: skip


def upright_photo(w: int = 60, h: int = 40) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()).resize((w, h), Image.Resampling.BILINEAR))


def save_oriented(up: np.ndarray, orientation: int, path, **kw) -> None:
    image = Image.fromarray(up)
    stored = image.transpose(STORED[orientation]) if STORED[orientation] is not None else image
    if path.suffix == ".tiff":
        stored.save(path, tiffinfo={0x0112: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(path, exif=exif.tobytes(), **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_decodes_upright(tmp_path, orientation):
    up = upright_photo()
    for suffix in (".png", ".tiff"):  # lossless: exactly the upright pixels
        path = tmp_path / f"o{orientation}{suffix}"
        save_oriented(up, orientation, path)
        np.testing.assert_array_equal(load_image(path, (40, 60)), up)
    jpeg = tmp_path / f"o{orientation}.jpg"
    save_oriented(up, orientation, jpeg, quality=100, subsampling=0)
    assert np.abs(load_image(jpeg, (40, 60)).astype(int) - up).mean() < 1.0
    if orientation != 1:  # the raw stored pixels are another picture altogether
        raw = np.asarray(Image.open(tmp_path / f"o{orientation}.png").convert("RGB").resize((60, 40)))
        assert np.abs(raw.astype(int) - up).mean() > 10


def test_a_large_jpeg_is_drafted_down_and_still_upright(tmp_path):
    big = Image.fromarray(upright_photo(1200, 900))
    exif = Image.Exif()
    exif[0x0112] = 6
    big.transpose(T.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    big.save(tmp_path / "upright.png")
    for policy in ("squash", "crop", "pad"):
        prep = TORCHVISION_IMAGENET.with_resize(policy, crop_fraction=0.875)
        drafted = load_image(tmp_path / "rotated.jpg", (56, 56), prep)
        exact = load_image(tmp_path / "upright.png", (56, 56), prep)
        assert np.abs(drafted.astype(int) - exact).mean() < 2.0, policy


def test_the_pixel_limit_counts_decoded_pixels(tmp_path, monkeypatch):
    photo = Image.fromarray(upright_photo(800, 600))
    photo.save(tmp_path / "big.png")
    photo.save(tmp_path / "big.jpg", quality=90)
    monkeypatch.setenv("TLZOO_MAX_IMAGE_PIXELS", "100000")
    with pytest.raises(ImageTooLarge, match=r"800x600 pixels decoded, over the limit of 100,000 \(TLZOO_MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png", (32, 32))
    # A JPEG that draft brings down (1/8 scale: 100x75) is under the limit: accepted.
    assert load_image(tmp_path / "big.jpg", (32, 32)).shape == (32, 32, 3)
    # Over the limit is skipped and listed like an unreadable file; --strict stops on it.
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    photo.save(tmp_path / "d" / "a" / "big.png")
    Image.fromarray(upright_photo(40, 30)).save(tmp_path / "d" / "a" / "small.png")
    Image.fromarray(upright_photo(40, 30)).save(tmp_path / "d" / "b" / "small.png")
    files = datamod.labelled(datamod.scan(tmp_path / "d"))
    [batch] = list(datamod.decode_batches(files.paths, (16, 16), batch_size=8))
    assert [p for p, _ in batch.skipped] == [str(tmp_path / "d" / "a" / "big.png")]
    assert "over the limit" in batch.skipped[0][1]
    with pytest.raises(DataError, match="big.png.*over the limit"):
        list(datamod.decode_batches(files.paths, (16, 16), batch_size=8, strict=True))
    monkeypatch.setenv("TLZOO_MAX_IMAGE_PIXELS", "500000")  # raised: accepted
    assert load_image(tmp_path / "big.png", (32, 32)).shape == (32, 32, 3)


def _prep(policy: str, fraction: float = 1.0) -> Preprocessing:
    return TORCHVISION_IMAGENET.with_resize(policy, crop_fraction=fraction)


def test_squash_stretches_the_whole_image():
    source = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(source).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize_array(source, (32, 32), _prep("squash")), expected)


def test_crop_keeps_the_aspect_and_takes_the_centre():
    source = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    # 48x32 to 32x32 at fraction 1: scale 1, the centre 32 columns (8..40), untouched.
    np.testing.assert_array_equal(resize_array(source, (32, 32), _prep("crop")), source[:, 8:40])
    square = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # 64x64 to 32x32 at fraction 0.5: covers 64 px, so no scaling, and the centre 32x32 (16..48).
    np.testing.assert_array_equal(resize_array(square, (32, 32), _prep("crop", 0.5)), square[16:48, 16:48])
    # Resize(256) + CenterCrop(224) as torchvision writes it: 512x256 -> short side 256 -> 224x224 from the middle.
    wide = np.zeros((256, 512, 3), np.uint8)
    wide[:, 256 - 112 : 256 + 112] = 200  # exactly the part a 224/256 centre crop keeps
    out = resize_array(wide, (224, 224), _prep("crop", 224 / 256))
    assert out.min() == 200


def test_pad_fits_inside_and_fills_with_the_mean_colour():
    source = np.full((32, 64, 3), (10, 200, 30), np.uint8)
    out = resize_array(source, (32, 32), _prep("pad"))
    fill = (124, 116, 104)  # ImageNet's mean, 0.485/0.456/0.406 x 255
    assert _prep("pad").pad_colour() == fill
    # 64x32 fits as 32x16, centred: rows 8..24 are the image, the rest the mean colour.
    np.testing.assert_array_equal(out[8:24], np.broadcast_to(np.array((10, 200, 30), np.uint8), (16, 32, 3)))
    np.testing.assert_array_equal(out[:8], np.broadcast_to(np.array(fill, np.uint8), (8, 32, 3)))
    np.testing.assert_array_equal(out[24:], np.broadcast_to(np.array(fill, np.uint8), (8, 32, 3)))


def test_bicubic_is_pillows_bicubic():
    source = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(source).resize((24, 24), Image.Resampling.BICUBIC))
    prep = TORCHVISION_IMAGENET.with_resize("squash", interpolation="bicubic")
    np.testing.assert_array_equal(resize_array(source, (24, 24), prep), expected)


@pytest.mark.parametrize("policy", ["squash", "crop", "pad"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_greyscale_file_decodes_to_exactly_its_rgb_conversions_pixels(tmp_path, policy, interpolation):
    grey = np.random.default_rng(4).integers(0, 256, (37, 53), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).convert("RGB").save(tmp_path / "rgb.png")  # what decoding it used to resample
    prep = TORCHVISION_IMAGENET.with_resize(policy, crop_fraction=0.875, interpolation=interpolation)
    out = load_image(tmp_path / "grey.png", (45, 30), prep)
    assert out.shape == (45, 30, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, load_image(tmp_path / "rgb.png", (45, 30), prep))
    if policy != "pad":  # the mean colour around a padded image is not grey
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_a_float_tiff_with_nan_and_inf_keeps_its_picture(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (16, 1))
    ramp[3, 3], ramp[5, 5], ramp[7, 7] = np.nan, np.inf, -np.inf
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tiff")
    out = load_image(tmp_path / "float.tiff", (16, 16))[..., 0]
    assert out[0, 0] == 0 and out[0, 15] == 255 and out[0, 8] == round(8 / 15 * 255)
    assert out[5, 5] == 255 and out[3, 3] == 0 and out[7, 7] == 0


def test_the_recipe_names_everything_that_decides_the_pixels():
    squash, crop = recipe(_prep("squash")), recipe(_prep("crop", 0.875))
    assert squash["exif"] == "transpose" and squash["decoder"].startswith("pillow ") and squash != crop
    assert recipe(_prep("crop", 0.9)) != crop
    assert recipe(TORCHVISION_IMAGENET.with_resize("crop", crop_fraction=0.875, interpolation="bicubic")) != crop


def test_what_counts_as_an_image_is_what_pillow_opens():
    suffixes = image_suffixes()
    assert {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".webp", ".tif"} <= suffixes
    assert ".txt" not in suffixes and ".svg" not in suffixes and ".pdf" not in suffixes  # PDF: Pillow writes only
    assert available_cores() >= 1
