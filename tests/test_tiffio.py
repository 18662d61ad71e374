"""tiffio.py: pixel size and axes survive a round trip; bad files are named."""
import numpy as np
import pytest
import tifffile

from synseg import tiffio


@pytest.mark.parametrize("dtype,axes,shape", [(np.uint8, "YX", (20, 30)), (np.uint16, "TYX", (3, 20, 30)),
                                              (np.float32, "ZYX", (2, 10, 12))])
def test_round_trip_keeps_pixel_size_and_axes(tmp_path, dtype, axes, shape):
    data = (np.arange(np.prod(shape)) % 200).astype(dtype).reshape(shape)
    path = tmp_path / "a.tif"
    tiffio.write_tiff(path, data, pixel_size_um=0.156, axes=axes)
    back, meta = tiffio.read_image(path)
    np.testing.assert_array_equal(back, data)
    assert meta["axes"] == axes
    assert meta["pixel_size_um"] == pytest.approx(0.156, rel=1e-5)
    with tifffile.TiffFile(path) as tif:  # what Fiji reads
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"


def test_no_pixel_size_reads_as_none(tmp_path):
    path = tmp_path / "b.tif"
    tifffile.imwrite(path, np.zeros((5, 5), np.uint16))
    assert tiffio.read_image(path)[1]["pixel_size_um"] is None


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"definitely not a tiff")
    with pytest.raises(ValueError, match="broken.tif"):
        tiffio.read_image(bad)
    with pytest.raises(ValueError, match=r"unsupported extension \.bmp"):
        tiffio.read_image(tmp_path / "x.bmp")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with tiffio.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
