"""Image files: every format and bit depth round-trips; damaged files give one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aprrd_cli.data.images import read_image, write_image
from aprrd_cli.data.tensors import from_float, to_float
from aprrd_cli.errors import InputError
from tests.helpers import png_header

RANGES = {"uint8": 255, "uint16": 65535, "float32": 1.0}


def random_image(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * RANGES[dtype]).astype(dtype)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(".png", "uint8"), (".png", "uint16"), (".tif", "uint8"), (".tif", "uint16"), (".tiff", "float32")],
)
def test_lossless_round_trip(tmp_path: Path, suffix: str, dtype: str, channels: int) -> None:
    a = random_image((13, 21, channels), dtype)
    p = tmp_path / f"x{suffix}"
    write_image(p, a)
    b, info = read_image(p)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert np.array_equal(a, b)
    assert info.channels == channels and info.dtype == dtype
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left behind


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close(tmp_path: Path, channels: int) -> None:
    yy, xx = np.mgrid[0:32, 0:48]
    a = np.repeat(((xx * 4 + yy * 2) % 256).astype(np.uint8)[:, :, None], channels, axis=2)
    p = tmp_path / "x.jpg"
    write_image(p, a)
    b, info = read_image(p)
    assert info.format == "jpeg" and b.shape == a.shape
    assert np.abs(b.astype(int) - a).mean() < 3


def test_palette_and_cmyk_decode_to_rgb(tmp_path: Path) -> None:
    from PIL import Image

    a = random_image((10, 12, 3), "uint8")
    Image.fromarray(a).convert("P").save(tmp_path / "p.png")
    b, info = read_image(tmp_path / "p.png")
    assert b.shape == (10, 12, 3) and info.channels == 3
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg")
    c, info = read_image(tmp_path / "c.jpg")
    assert c.shape == (10, 12, 3) and c.dtype == np.uint8


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    a = random_image((8, 8, 3), "uint8")
    write_image(tmp_path / "x.png", a)
    (tmp_path / "x.png").rename(tmp_path / "x.jpg")
    b, info = read_image(tmp_path / "x.jpg")
    assert info.format == "png" and np.array_equal(a, b)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"hello, I am text", "is not a PNG, TIFF, JPEG, HEIC, WebP or AVIF image"),
        ("bomb", "more than the 250 MP limit"),
        ("truncated", "damaged or truncated"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, content, message: str) -> None:
    p = tmp_path / "bad.png"
    if content == "bomb":
        content = png_header(100_000, 100_000)
    elif content == "truncated":
        write_image(p, random_image((64, 64, 3), "uint8"))
        content = p.read_bytes()[:300]
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_image(p)
    assert message in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)


def test_truncated_16bit_png_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    write_image(p, random_image((64, 64, 3), "uint16"))
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(InputError, match="damaged or truncated"):
        read_image(p)


def test_nan_is_refused_and_out_of_range_is_clipped() -> None:
    a = np.array([[[0.5, 1.5, -0.2]]], dtype=np.float32)
    f, clipped = to_float(a)
    assert clipped == 2 and f.min() == 0.0 and f.max() == 1.0
    with pytest.raises(InputError, match="NaN or infinite"):
        to_float(np.array([[[np.nan, 0, 0]]], dtype=np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        to_float(np.array([[[np.inf, 0, 0]]], dtype=np.float32))


def test_writing_a_format_that_cannot_hold_the_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="JPEG holds only 8 bits"):
        write_image(tmp_path / "x.jpg", random_image((4, 4, 3), "uint16"))
    with pytest.raises(InputError, match="PNG holds 8 or 16 bits"):
        write_image(tmp_path / "x.png", random_image((4, 4, 3), "float32"))
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    channels=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from(["uint8", "uint16", "float32"]),
    suffix=st.sampled_from([".png", ".tif"]),
)
def test_reader_property(tmp_path: Path, h: int, w: int, channels: int, dtype: str, suffix: str) -> None:
    """Any size, dtype and channel count: an exact round trip, or a clean refusal."""
    a = random_image((h, w, channels), dtype, seed=h * 100 + w)
    p = tmp_path / f"p_{h}_{w}_{channels}_{dtype}{suffix}"
    try:
        write_image(p, a)
    except InputError as e:
        assert suffix == ".png" and dtype == "float32" and "PNG holds" in str(e)
        return
    b, _ = read_image(p)
    assert np.array_equal(a, b)
    assert np.array_equal(from_float(to_float(b)[0], dtype), a) or dtype == "float32"
