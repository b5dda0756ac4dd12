"""The image pipeline on tiny folders built here: decoding odd files, folder errors, the cifar
cache, the transforms against per-image references, and the threaded BatchLoader."""
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import data.images as images_mod
from data import transforms as T
from data.images import (BadImageError, BatchLoader, ImageSizeError, decode_image,
                         find_image_root, image_dataset, scan_split, spaced_indices)

EXIF_ORIENTATION = 0x0112


# ---- helpers ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """No test writes a cache into the project's data/cache."""
    monkeypatch.setenv("TINYHW_CACHE", str(tmp_path / "default-cache"))


def _save(path, img, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def _solid(color, size=(32, 32), mode="RGB"):
    return Image.new(mode, size, color)


def _noise(seed, size=(32, 32)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size[::-1] + (3,),
                                                                  dtype=np.uint8))


def _make_split(root, split="train", per_class=(("cat", 3), ("dog", 2)), size=(32, 32),
                fmt="PNG"):
    """root/split/<class>/<i>.png; image i of class c is filled with a colour encoding (c, i)."""
    for c, (name, count) in enumerate(per_class):
        for i in range(count):
            ext = "png" if fmt == "PNG" else "jpg"
            _save(root / split / name / f"{i:03d}.{ext}", _solid((40 * c, 10 * i, 7), size), fmt)
    return root


def _loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("tinyhw-loader")]


def _wait_threads_gone(timeout=10.0):
    end = time.monotonic() + timeout
    while _loader_threads() and time.monotonic() < end:
        time.sleep(0.01)
    return _loader_threads()


# ---- decoding odd files -------------------------------------------------------------------
def _cmyk_red():
    return _solid((0, 255, 255, 0), mode="CMYK")


def _palette():
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 200, 30, 60] + [0] * 762)
    return img


@pytest.mark.parametrize("name, make, fmt, expected, tol", [
    ("gray.jpg", lambda: _solid(90, mode="L"), "JPEG", (90, 90, 90), 2),
    ("cmyk.jpg", _cmyk_red, "JPEG", (255, 0, 0), 8),
    ("palette.png", _palette, "PNG", (200, 30, 60), 0),
    ("rgba.png", lambda: _solid((10, 20, 30, 128), mode="RGBA"), "PNG", (10, 20, 30), 0),
    ("gray16.png", lambda: Image.fromarray(np.full((32, 32), 40000, np.uint16)), "PNG",
     (40000 >> 8,) * 3, 0),
])
def test_odd_modes_decode_to_rgb(tmp_path, name, make, fmt, expected, tol):
    path = _save(tmp_path / name, make(), fmt)
    assert Image.open(path).mode != "RGB"      # the file really is in the odd mode
    img = decode_image(path)
    assert img.mode == "RGB" and img.size == (32, 32)
    pixels = np.asarray(img).astype(int)
    assert np.abs(pixels - expected).max() <= tol


def test_exif_orientation_is_applied(tmp_path):
    # 16 wide x 8 high: left half red, right half blue. Orientation 6 means "rotate 90 degrees
    # clockwise to display", so the upright image is 8 wide x 16 high, red on top.
    a = np.zeros((8, 16, 3), np.uint8)
    a[:, :8] = (255, 0, 0)
    a[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = _save(tmp_path / "rot.jpg", Image.fromarray(a), "JPEG", exif=exif, quality=95)
    assert Image.open(path).size == (16, 8)
    upright = np.asarray(decode_image(path)).astype(int)
    assert upright.shape == (16, 8, 3)
    expected = np.rot90(a, k=-1).astype(int)   # clockwise
    assert np.abs(upright[2:6] - expected[2:6]).max() < 40       # away from the JPEG seam
    assert np.abs(upright[10:14] - expected[10:14]).max() < 40
    assert upright[3, 4, 0] > 200 and upright[12, 4, 2] > 200


def test_folder_of_odd_files_gives_rgb_batches(tmp_path):
    root = tmp_path / "odd"
    _save(root / "train" / "a" / "gray.jpg", _solid(90, mode="L"), "JPEG")
    _save(root / "train" / "a" / "cmyk.jpg", _cmyk_red(), "JPEG")
    _save(root / "train" / "b" / "palette.png", _palette(), "PNG")
    _save(root / "train" / "b" / "rgba.png", _solid((10, 20, 30, 128), mode="RGBA"), "PNG")
    ds = image_dataset(root, "train", preset="cifar", train=False, cache_dir=False)
    assert ds.images.shape == (4, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.files == ["a/cmyk.jpg", "a/gray.jpg", "b/palette.png", "b/rgba.png"]
    assert list(ds.labels) == [0, 0, 1, 1]
    assert tuple(ds.images[2, 0, 0]) == (200, 30, 60)
    big = image_dataset(root, "train", preset="imagenet", train=True)
    x, y = big.batch(np.arange(4), np.random.default_rng(0))
    assert x.shape == (4, 3, 224, 224) and x.dtype == np.float32 and list(y) == [0, 0, 1, 1]


# ---- bad files and bad folders ----------------------------------------------------------
@pytest.fixture
def with_corrupt(tmp_path):
    root = _make_split(tmp_path / "ds")
    (root / "train" / "cat" / "001b.jpg").write_bytes(b"this is not a JPEG")
    return root


def test_corrupt_file_error_names_it(with_corrupt):
    with pytest.raises(BadImageError, match=r"cat/001b\.jpg"):
        image_dataset(with_corrupt, "train", cache_dir=False)


def test_corrupt_file_skipped_and_counted(with_corrupt, tmp_path):
    ds = image_dataset(with_corrupt, "train", cache_dir=tmp_path / "cache", skip_bad=True)
    assert ds.skipped == 1 and ds.skipped_files == ["cat/001b.jpg"]
    assert len(ds) == 5 and "cat/001b.jpg" not in ds.files
    # The cache remembers what it left out: skip_bad again reuses it, without skip_bad raises.
    again = image_dataset(with_corrupt, "train", cache_dir=tmp_path / "cache", skip_bad=True)
    assert again.skipped == 1 and np.array_equal(again.images, ds.images)
    with pytest.raises(BadImageError, match="001b"):
        image_dataset(with_corrupt, "train", cache_dir=tmp_path / "cache")


def test_corrupt_file_imagenet_preset(with_corrupt):
    # Found when the dataset is built, not by a loader thread in the middle of training.
    with pytest.raises(BadImageError, match=r"cat/001b\.jpg: not a readable image"):
        image_dataset(with_corrupt, "train", preset="imagenet")
    skipping = image_dataset(with_corrupt, "train", preset="imagenet", skip_bad=True)
    assert skipping.skipped == 1 and len(skipping) == 5
    assert skipping.skipped_files == ["cat/001b.jpg"]


def test_every_bad_file_is_counted_in_the_imagenet_error(with_corrupt):
    (with_corrupt / "train" / "dog" / "zz.png").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"cat/001b\.jpg: .*\(and 1 more bad files\)$"):
        image_dataset(with_corrupt, "train", preset="imagenet")


def _truncated_split(root, fmt):
    """root/val/k/{0,1,2}.<fmt> with file 1 cut in half: its header is intact."""
    ext = fmt.lower()
    for i in range(3):
        _save(root / "val" / "k" / f"{i}.{ext}", _noise(i, (64, 48)), fmt)
    path = root / "val" / "k" / f"1.{ext}"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return root


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_found_when_the_imagenet_dataset_is_built(tmp_path, fmt):
    root = _truncated_split(tmp_path / "ds", fmt)
    with pytest.raises(BadImageError, match=rf"k/1\.{fmt.lower()}: .*truncated"):
        image_dataset(root, "val", preset="imagenet", train=False)
    ds = image_dataset(root, "val", preset="imagenet", train=False, skip_bad=True)
    assert ds.skipped_files == [f"k/1.{fmt.lower()}"] and len(ds) == 2


def test_bytes_after_the_end_marker_are_not_an_error(tmp_path):
    root = _make_split(tmp_path / "ds", fmt="JPEG")
    path = root / "train" / "cat" / "000.jpg"
    path.write_bytes(path.read_bytes() + b"camera maker's trailer" * 10)
    ds = image_dataset(root, "train", preset="imagenet", train=False)
    assert ds.skipped == 0 and len(ds) == 5


def test_file_damaged_after_the_check_is_replaced_by_next_in_imagenet_preset(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        _save(root / "val" / "k" / f"{i}.jpg", _noise(i, (64, 48)), "JPEG")
    ds = image_dataset(root, "val", preset="imagenet", train=False, skip_bad=True)
    strict = image_dataset(root, "val", preset="imagenet", train=False)
    assert ds.skipped == 0 and len(ds) == 3
    whole = (root / "val" / "k" / "1.jpg").read_bytes()
    (root / "val" / "k" / "1.jpg").write_bytes(whole[: len(whole) // 2])  # damaged since
    with pytest.warns(UserWarning, match="1.jpg"):
        x, _ = ds.batch(np.array([1, 2]), None)
    assert np.array_equal(x[0], x[1]) and ds.skipped == 1
    with pytest.raises(BadImageError, match=r"k/1\.jpg: cannot decode"):
        strict.batch(np.array([1, 2]), None)


def test_empty_class_folder_is_named(tmp_path):
    root = _make_split(tmp_path / "ds")
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*train/empty contains no images"):
        image_dataset(root, "train", cache_dir=False)


def test_empty_split_is_named(tmp_path):
    (tmp_path / "ds" / "val").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"split folder .*ds/val has no class subfolders"):
        image_dataset(tmp_path / "ds", "val", cache_dir=False)
    _save(tmp_path / "ds" / "val" / "loose.png", _solid((1, 2, 3)))
    with pytest.raises(ValueError, match="1 images lie directly in it"):
        scan_split(tmp_path / "ds", "val")


def test_missing_root_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*root/<split>/<class>/<image>"):
        image_dataset(tmp_path / "nowhere", "train")
    _make_split(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match=r"ds/val does not exist.*\['train'\]"):
        image_dataset(tmp_path / "ds", "val")
    with pytest.raises(ValueError, match="preset"):
        image_dataset(tmp_path / "ds", "train", preset="mnist")


def test_find_image_root(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    monkeypatch.setenv("TINYHW_DATA", str(tmp_path))
    assert find_image_root("cifar10") == tmp_path / "cifar10"
    assert find_image_root(str(tmp_path / "cifar10")) == tmp_path / "cifar10"
    with pytest.raises(FileNotFoundError, match=r"not-here.*TINYHW_DATA"):
        find_image_root("not-here")


# ---- classes, labels, presets -------------------------------------------------------------
def test_classes_sorted_and_labels_match_files(tmp_path):
    root = _make_split(tmp_path / "ds", per_class=(("b", 2), ("a", 1), ("c10", 2), ("c2", 1)))
    ds = image_dataset(root, "train", cache_dir=False)
    assert ds.classes == ["a", "b", "c10", "c2"] and ds.num_classes == 4 and len(ds) == 6
    assert ds.image_size == 32
    for i, (f, label) in enumerate(zip(ds.files, ds.labels)):
        assert ds.classes[label] == f.split("/")[0]
        # _make_split painted class position c (in per_class order) into the red channel
        order = ["b", "a", "c10", "c2"].index(ds.classes[label])
        assert ds.images[i, 0, 0, 0] == 40 * order
    assert ds.labels.dtype == np.int64


def test_auto_preset(tmp_path):
    small = image_dataset(_make_split(tmp_path / "s", size=(40, 40)), "train", preset="auto",
                          cache_dir=False)
    assert small.preset == "cifar" and small.image_size == 40
    big = image_dataset(_make_split(tmp_path / "b", size=(100, 80)), "train", preset="auto")
    assert big.preset == "imagenet" and big.image_size == 224


def test_cifar_preset_needs_one_size(tmp_path):
    root = _make_split(tmp_path / "ds")
    _save(root / "train" / "dog" / "z.png", _solid((0, 0, 0), (1, 1)))
    with pytest.raises(ImageSizeError) as info:
        image_dataset(root, "train", cache_dir=False)
    # Both files are named: when the odd one is the first, the message points at it too.
    assert info.value.problem.endswith("dog/z.png: is 1x1 but " + str(
        root / "train" / "cat" / "000.png") + ", the first image, is 32x32")
    assert "preset='imagenet'" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# ---- limit ------------------------------------------------------------------------------------
def test_spaced_indices():
    assert list(spaced_indices(10, None)) == list(range(10))
    assert list(spaced_indices(10, 10)) == list(range(10))
    assert list(spaced_indices(10, 50)) == list(range(10))
    assert list(spaced_indices(10, 1)) == [0]
    assert list(spaced_indices(10, 4)) == [0, 3, 6, 9]
    for n in range(2, 40):
        for limit in range(2, n + 1):     # exactly `limit` distinct positions, both ends kept
            chosen = spaced_indices(n, limit)
            assert len(chosen) == limit and (chosen[0], chosen[-1]) == (0, n - 1)


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_limit_keeps_evenly_spaced_files_of_every_class(tmp_path, preset):
    root = _make_split(tmp_path / "ds", per_class=(("a", 5), ("b", 5), ("c", 5)))
    ds = image_dataset(root, "train", preset=preset, limit=4, cache_dir=tmp_path / "cache")
    assert len(ds) == 4 and set(ds.labels.tolist()) == {0, 1, 2}
    assert ds.files == ["a/000.png", "b/000.png", "b/004.png", "c/004.png"]   # 0, 5, 9, 14
    assert ds.classes == ["a", "b", "c"]
    assert not (tmp_path / "cache").exists()       # a limited split never writes the cache
    assert len(image_dataset(root, "train", preset=preset, limit=100, cache_dir=False)) == 15


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, "3"])
def test_bad_limit_is_refused(tmp_path, limit):
    root = _make_split(tmp_path / "ds")
    with pytest.raises(ValueError, match=rf"limit must be None or an int >= 1, got {limit!r}"):
        image_dataset(root, "train", limit=limit)


# ---- the cache ------------------------------------------------------------------------------
def test_cache_written_reused_and_invalidated(tmp_path, monkeypatch):
    root = _make_split(tmp_path / "ds")
    monkeypatch.setenv("TINYHW_CACHE", str(tmp_path / "cache"))
    first = image_dataset(root, "train")
    folder = images_mod.cache_folder(root, "train")
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("ds-")
    assert folder.name.endswith("-train")
    assert {p.name for p in folder.iterdir()} == {"images.npy", "labels.npy", "meta.json"}
    assert np.load(folder / "images.npy").shape == (5, 32, 32, 3)

    def refuse(path):
        raise AssertionError(f"decoded {path} although the cache is current")

    monkeypatch.setattr(images_mod, "decode_array", refuse)
    second = image_dataset(root, "train", train=False)     # train flag shares the cache
    assert np.array_equal(second.images, first.images)
    assert np.array_equal(second.labels, first.labels) and second.files == first.files

    monkeypatch.undo()
    monkeypatch.setenv("TINYHW_CACHE", str(tmp_path / "cache"))
    _save(root / "train" / "dog" / "new.png", _solid((1, 2, 3)))
    calls = []
    real = images_mod.decode_array
    monkeypatch.setattr(images_mod, "decode_array", lambda p: calls.append(p) or real(p))
    third = image_dataset(root, "train")
    assert len(third) == 6 and len(calls) >= 6
    assert np.load(folder / "images.npy").shape == (6, 32, 32, 3)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # Same files, same labels, one file's content (and so its size) changed: rebuilt too.
    _save(root / "train" / "cat" / "000.png", _noise(3))
    calls.clear()
    fourth = image_dataset(root, "train")
    assert len(calls) >= 6 and np.array_equal(fourth.images[0], np.asarray(_noise(3)))


def test_cache_dir_argument_and_unwritable_cache(tmp_path):
    root = _make_split(tmp_path / "ds")
    image_dataset(root, "train", cache_dir=tmp_path / "mine")
    assert (images_mod.cache_folder(root, "train", tmp_path / "mine") / "meta.json").is_file()
    (tmp_path / "blocked").write_text("a file where the cache folder should go")
    with pytest.warns(UserWarning, match="could not write the image cache"):
        ds = image_dataset(root, "train", cache_dir=tmp_path / "blocked")
    assert len(ds) == 5


def test_damaged_cache_is_rebuilt(tmp_path):
    root = _make_split(tmp_path / "ds")
    first = image_dataset(root, "train", cache_dir=tmp_path / "c")
    folder = images_mod.cache_folder(root, "train", tmp_path / "c")
    np.save(folder / "images.npy", np.zeros((2, 32, 32, 3), np.uint8))   # wrong shape
    again = image_dataset(root, "train", cache_dir=tmp_path / "c")
    assert np.array_equal(again.images, first.images)


# ---- transforms -----------------------------------------------------------------------------
def test_normalize_constant_image():
    mean, std = np.array(T.CIFAR_MEAN), np.array(T.CIFAR_STD)
    images = np.zeros((2, 5, 7, 3), np.uint8)
    images[0] = 51
    images[1] = np.round(255 * mean).astype(np.uint8)
    x = T.normalize_batch(images, T.CIFAR_MEAN, T.CIFAR_STD)
    assert x.shape == (2, 3, 5, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 2, 3], (0.2 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(x[1], ((np.round(255 * mean) / 255 - mean) / std)[:, None, None]
                               * np.ones((3, 5, 7)), atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        T.normalize_batch(images.astype(np.float32), T.CIFAR_MEAN, T.CIFAR_STD)


def _crop_flip_reference(images, offsets, flips, pad):
    """One image at a time: np.pad with zeros, slice, mirror."""
    h, w = images.shape[1:3]
    out = []
    for img, (top, left), flip in zip(images, offsets, flips):
        crop = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))[top:top + h, left:left + w]
        out.append(crop[:, ::-1] if flip else crop)
    return np.stack(out)


@given(batch=st.integers(1, 6), h=st.integers(1, 9), w=st.integers(1, 9),
       pad=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
def test_crop_flip_matches_per_image_reference(batch, h, w, pad, seed):
    images = np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    out = T.cifar_train_batch(images, np.random.default_rng(seed + 1), pad)
    offsets, flips = T.draw_crop_flip(np.random.default_rng(seed + 1), batch, pad)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _crop_flip_reference(images, offsets, flips, pad))


def test_crop_flip_draws_every_offset_and_both_flips():
    offsets, flips = T.draw_crop_flip(np.random.default_rng(0), 2000)
    assert set(offsets.ravel()) == set(range(9)) and 0.4 < flips.mean() < 0.6


@given(width=st.integers(1, 600), height=st.integers(1, 600), seed=st.integers(0, 2**32 - 1))
def test_random_resized_crop_stays_in_bounds(width, height, seed):
    left, top, w, h = T.random_resized_crop_box(width, height, np.random.default_rng(seed))
    assert 0 < w <= width and 0 < h <= height
    assert 0 <= left <= width - w and 0 <= top <= height - h


def test_random_resized_crop_falls_back_to_centre_crop():
    # 1000 x 10: no crop with ratio in [3/4, 4/3] and 8% of the area fits, so every attempt
    # fails and the widest allowed centre crop (ratio 4/3, full height) is taken.
    assert T.random_resized_crop_box(1000, 10, np.random.default_rng(0)) == (493, 0, 13, 10)
    assert T.random_resized_crop_box(10, 1000, np.random.default_rng(0)) == (0, 493, 10, 13)


def test_imagenet_transforms_shapes_and_eval_determinism(tmp_path):
    img = _noise(0, (300, 200))
    assert T.resize_shorter_side(300, 200, 256) == (384, 256)
    assert T.resize_shorter_side(200, 300, 256) == (256, 384)
    a = T.imagenet_eval_image(img)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    reference = np.asarray(img.resize((384, 256), Image.BILINEAR))[16:240, 80:304]
    np.testing.assert_array_equal(a, reference)
    root = tmp_path / "ds"
    _save(root / "val" / "k" / "0.jpg", img, "JPEG")
    _save(root / "val" / "k" / "1.jpg", _noise(1, (180, 260)), "JPEG")
    ds = image_dataset(root, "val", preset="imagenet", train=False)
    x1, y1 = ds.batch(np.array([0, 1]), np.random.default_rng(1))
    x2, _ = ds.batch(np.array([0, 1]), np.random.default_rng(2))
    assert x1.shape == (2, 3, 224, 224) and x1.dtype == np.float32 and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    train = image_dataset(root, "val", preset="imagenet", train=True)
    t1, _ = train.batch(np.array([0, 1]), np.random.default_rng(1))
    t2, _ = train.batch(np.array([0, 1]), np.random.default_rng(1))
    t3, _ = train.batch(np.array([0, 1]), np.random.default_rng(2))
    np.testing.assert_array_equal(t1, t2)
    assert not np.array_equal(t1, t3)


def test_cifar_batches_shapes_and_augmentation(tmp_path):
    root = tmp_path / "ds"
    for i in range(4):
        _save(root / "train" / "k" / f"{i}.png", _noise(i))
    train = image_dataset(root, "train", cache_dir=False, train=True)
    evaluation = image_dataset(root, "train", cache_dir=False, train=False)
    idx = np.array([3, 1, 2])
    x, y = train.batch(idx, np.random.default_rng(5))
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.dtype == np.int64
    offsets, flips = T.draw_crop_flip(np.random.default_rng(5), 3)
    expected = _crop_flip_reference(train.images[idx], offsets, flips, 4)
    np.testing.assert_array_equal(x, T.normalize_batch(expected, T.CIFAR_MEAN, T.CIFAR_STD))
    e, _ = evaluation.batch(idx, np.random.default_rng(5))
    np.testing.assert_array_equal(e, T.normalize_batch(train.images[idx], T.CIFAR_MEAN,
                                                       T.CIFAR_STD))


# ---- BatchLoader ----------------------------------------------------------------------------
class _Recorder:
    """A dataset whose batch is (its indices, three draws from the batch's stream)."""

    def __init__(self, n, delay=0.0, fail_at=None):
        self.n, self.delay, self.fail_at = n, delay, fail_at
        self.calls = 0
        self._lock = threading.Lock()

    def __len__(self):
        return self.n

    def batch(self, indices, rng):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay * np.random.default_rng().random())   # scramble thread timing
        if self.fail_at is not None and self.fail_at in indices:
            raise RuntimeError(f"item {self.fail_at} is broken")
        return indices.copy(), rng.random(3)


def _collect(loader, epoch, start=0):
    return [(i.copy(), r.copy()) for i, r in loader.epoch(epoch, start)]


def test_every_index_once_per_epoch():
    loader = BatchLoader(_Recorder(103), 10, shuffle=True, drop_last=False, workers=2)
    batches = _collect(loader, 0)
    assert len(batches) == len(loader) == 11 and len(batches[-1][0]) == 3
    seen = np.concatenate([i for i, _ in batches])
    assert sorted(seen) == list(range(103)) and list(seen) != list(range(103))


def test_same_seed_and_epoch_same_batches_whatever_the_threads():
    runs = [_collect(BatchLoader(_Recorder(60, delay=0.002), 8, seed=7, workers=w,
                                 prefetch=p), 3) for w, p in ((0, 1), (1, 1), (3, 2), (4, 8))]
    for other in runs[1:]:
        for (i1, r1), (i2, r2) in zip(runs[0], other):
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_array_equal(r1, r2)
    assert len(runs[0]) == 7


def test_epochs_and_seeds_differ():
    loader = BatchLoader(_Recorder(50), 10, seed=0)
    e0, e1 = _collect(loader, 0), _collect(loader, 1)
    assert not np.array_equal(np.concatenate([i for i, _ in e0]),
                              np.concatenate([i for i, _ in e1]))
    assert not np.array_equal(e0[0][1], e1[0][1])
    other = _collect(BatchLoader(_Recorder(50), 10, seed=1), 0)
    assert not np.array_equal(e0[0][0], other[0][0])


def test_start_gives_the_tail_of_the_epoch():
    loader = BatchLoader(_Recorder(45), 4, seed=3, workers=2)
    full = _collect(loader, 2)
    for k in (0, 1, 5, len(loader) - 1, len(loader)):
        tail = _collect(loader, 2, start=k)
        assert len(tail) == len(full) - k
        for (i1, r1), (i2, r2) in zip(full[k:], tail):
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_array_equal(r1, r2)
    with pytest.raises(ValueError, match="start=12 is past the last batch"):
        loader.epoch(2, start=12)


def test_image_batches_deterministic_and_resumable(tmp_path):
    root = tmp_path / "ds"
    for i in range(10):
        _save(root / "train" / f"c{i % 3}" / f"{i}.png", _noise(i))
    ds = image_dataset(root, "train", cache_dir=False)
    full = [(x.copy(), y.copy()) for x, y in BatchLoader(ds, 4, seed=1, workers=2).epoch(1)]
    tail = list(BatchLoader(ds, 4, seed=1, workers=0).epoch(1, start=1))
    assert len(full) == 2 and len(tail) == 1
    np.testing.assert_array_equal(full[1][0], tail[0][0])
    np.testing.assert_array_equal(full[1][1], tail[0][1])


def test_drop_last_and_len():
    assert len(BatchLoader(_Recorder(10), 4, drop_last=True)) == 2
    evaluation = BatchLoader(_Recorder(10), 4, shuffle=False, drop_last=False)
    assert len(evaluation) == 3
    batches = _collect(evaluation, 0)
    assert [list(i) for i, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(i) for i, _ in _collect(BatchLoader(_Recorder(10), 4), 0)] == [4, 4]
    assert len(BatchLoader(_Recorder(8), 4, drop_last=False)) == 2
    with pytest.raises(ValueError, match="drop_last=True with batch_size 16 > 10"):
        BatchLoader(_Recorder(10), 16)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        BatchLoader(_Recorder(10), 0)


def test_break_leaves_no_thread():
    before = threading.active_count()
    loader = BatchLoader(_Recorder(400, delay=0.002), 4, workers=3, prefetch=4)
    for k, _ in enumerate(loader.epoch(0)):
        if k == 2:
            break
    assert _loader_threads() == []         # joined before the loop statement even ends
    assert threading.active_count() == before


def test_exception_in_loop_or_worker_and_dropped_iterator_leave_no_thread():
    loader = BatchLoader(_Recorder(400, delay=0.002), 4, workers=2)
    with pytest.raises(KeyError):
        for _ in loader.epoch(0):
            raise KeyError("consumer failed")
    assert _wait_threads_gone() == []
    failing = BatchLoader(_Recorder(40, fail_at=17), 4, shuffle=False, workers=2)
    with pytest.raises(RuntimeError, match="item 17 is broken"):
        for _ in failing.epoch(0):
            pass
    assert _wait_threads_gone() == []
    it = loader.epoch(1)
    next(it)
    assert _loader_threads()
    del it                                         # garbage collection closes the generator
    assert _wait_threads_gone() == []


def test_prefetch_is_bounded():
    dataset = _Recorder(400)
    it = BatchLoader(dataset, 4, workers=2, prefetch=3).epoch(0)
    next(it)
    # Let the workers run as far as they may (on a busy machine that can take a while),
    # then a little longer, to see that they stop there.
    deadline = time.monotonic() + 10
    while dataset.calls < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert dataset.calls == 1 + 3                  # the batch handed over and 3 ahead
    it.close()
    assert _wait_threads_gone() == []


def test_loader_argument_errors():
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        BatchLoader(_Recorder(10), 2, seed=-1)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        BatchLoader(_Recorder(10), 2).epoch(-1)
    with pytest.raises(ValueError, match="empty"):
        BatchLoader(_Recorder(0), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_collect(BatchLoader(_Recorder(5), 2, workers=0), 0)) == 2
