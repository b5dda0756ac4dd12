"""Image classification data in the ImageFolder layout: `root/<split>/<class>/<image>`.

    ds = image_dataset(root, "train", preset="cifar", train=True)
    loader = BatchLoader(ds, 128, shuffle=True, drop_last=True, seed=0)
    for x, y in loader.epoch(epoch):      # x float32 (B, 3, S, S), y int64 (B,)
        ...

Classes are the sorted names of the class folders (index = position), files are taken in sorted
order of their path. Every image goes through Pillow the same way: decode, apply the EXIF
orientation, convert to RGB (grayscale, palette, RGBA, CMYK...; 16-bit grayscale keeps its top
8 bits).

Two presets (transforms in `data.transforms`):
- `cifar`, small images: the whole split is decoded once into an uint8 (N, H, W, 3) array and
  cached on disk; augmentation (pad 4, random crop, flip) runs on whole batches in NumPy.
- `imagenet`, large images: each image is decoded when its batch is built, with per-image Pillow
  transforms (random resized crop 224 + flip, or resize 256 + centre crop 224).
`auto` picks `cifar` when the first image is at most 64 pixels on each side.

Bad files are found when the dataset is built, not in the middle of training: the cifar preset
decodes every file then, the imagenet preset reads each file's header and end marker. They
raise BadImageError naming the file, or with `skip_bad=True` are left out and counted.
`limit=N` keeps N files of the split, evenly spaced so that every class appears (smoke runs).

The cache of a cifar split lives in `<base>/<root name>-<hash of root's absolute path>-<split>/`,
with base = `cache_dir`, else $TINYHW_CACHE, else the project's data/cache/ (the data root may be
read-only). It holds images.npy, labels.npy and meta.json, each written to a temporary file and
moved into place, meta.json last. It is used only while its fingerprint (sha256 of the sorted
relative paths and sizes of the files) matches the folder; otherwise it is rebuilt.
"""
import hashlib
import json
import os
import threading
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from . import transforms as T
from .loader import BatchLoader

__all__ = ["image_dataset", "BatchLoader", "find_image_root", "BadImageError", "ImageSizeError",
           "scan_split", "spaced_indices", "decode_image", "ArrayImageDataset",
           "FileImageDataset"]

PROJECT_DATA = Path(__file__).resolve().parent
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm")
LAYOUT = "root/<split>/<class>/<image>, e.g. root/train/cat/0001.jpg and root/val/cat/0002.jpg"
PRESETS = ("cifar", "imagenet", "auto")
# The data set (a folder name for find_image_root) that the entry points read for a net of each
# preset when --data is not given.
DEFAULT_DATA_SETS = {"cifar": "cifar10", "imagenet": "imagenette-224-mini"}
AUTO_MAX_SIDE = 64
CACHE_VERSION = 1
EXIF_ORIENTATION = 0x0112


class BadImageError(ValueError):
    """A file that Pillow cannot decode; the message names the file."""


class ImageSizeError(ValueError):
    """Images of different sizes in a `cifar` split, which stacks them into one array.

    `problem` names the two files and their sizes; the message adds advice for API callers,
    which an entry point can replace by its own (its users choose a preset by other means)."""

    def __init__(self, problem, advice):
        super().__init__(f"{problem}: {advice}")
        self.problem = problem


# ---- finding and listing ----------------------------------------------------------------
def find_image_root(name):
    """The folder of image data set `name`: $TINYHW_DATA/<name>, else the project's data/<name>.

    A `name` that is a path (absolute, or with a separator) is taken as the folder itself. The
    error lists every place looked at and the layout expected."""
    if os.sep in str(name) or Path(name).is_absolute():
        candidates = [Path(name)]
    else:
        candidates = []
        if os.environ.get("TINYHW_DATA"):
            candidates.append(Path(os.environ["TINYHW_DATA"]) / name)
        candidates.append(PROJECT_DATA / name)
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"image data set {str(name)!r} not found: looked in {looked}. Expected a folder in the "
        f"ImageFolder layout {LAYOUT}. Set TINYHW_DATA to the folder that contains {name}/.")


@dataclass
class Listing:
    """The image files of one split: paths relative to `folder`, sorted, with labels and sizes."""
    folder: Path          # root/split
    classes: list         # sorted class folder names; label = index
    files: list           # "class/file.jpg", sorted
    labels: np.ndarray    # (N,) int64
    sizes: np.ndarray     # (N,) int64 bytes

    def fingerprint(self):
        """sha256 of the cache format version and the sorted lines "<relative path>\\t<size>"."""
        h = hashlib.sha256(f"tinyhw-images-v{CACHE_VERSION}\n".encode())
        for f, s in zip(self.files, self.sizes):
            h.update(f"{f}\t{s}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def _is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder):
    """(relative path, size) of every image file below `folder`, recursively, sorted by path.
    Hidden files and folders (.DS_Store, .ipynb_checkpoints) are ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for name in filenames:
            if _is_image(name):
                path = os.path.join(dirpath, name)
                found.append((name if rel == "." else os.path.join(rel, name),
                              os.stat(path).st_size))
    return sorted(found)


def scan_split(root, split):
    """List `root/split/<class>/<image>`; classes are the sorted subfolder names.

    Raises FileNotFoundError when root or root/split is missing, ValueError when the split has no
    class folder or a class folder holds no image."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} does not exist or is not a folder: expected "
                                f"the ImageFolder layout {LAYOUT}")
    folder = root / split
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(f"split folder {folder} does not exist (folders in {root}: "
                                f"{present}): expected the ImageFolder layout {LAYOUT}")
    classes = sorted(e.name for e in os.scandir(folder)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = sum(1 for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
        hint = f" ({loose} images lie directly in it)" if loose else ""
        raise ValueError(f"split folder {folder} has no class subfolders{hint}: expected "
                         f"{LAYOUT}")
    files, labels, sizes = [], [], []
    for label, name in enumerate(classes):
        found = _images_under(folder / name)
        if not found:
            raise ValueError(f"class folder {folder / name} contains no images (looked for "
                             f"{', '.join(IMAGE_EXTENSIONS)}): remove it or add its images")
        for rel, size in found:
            files.append(os.path.join(name, rel))
            sizes.append(size)
        labels += [label] * len(found)
    return Listing(folder, classes, files, np.asarray(labels, dtype=np.int64),
                   np.asarray(sizes, dtype=np.int64))


def spaced_indices(n, limit):
    """`limit` of the positions 0..n-1, evenly spaced and sorted (all of them when limit is None
    or >= n). Image folders are listed class by class, so the first `limit` files would cover
    only the first classes; evenly spaced ones cover every class in proportion."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _check_limit(limit):
    if limit is not None and (not isinstance(limit, (int, np.integer)) or
                              isinstance(limit, bool) or limit < 1):
        raise ValueError(f"image_dataset: limit must be None or an int >= 1, got {limit!r}")


# ---- decoding ---------------------------------------------------------------------------
def _to_rgb(img):
    """Any Pillow mode -> RGB. 16-bit grayscale is shifted to 8 bits first: Pillow's own
    conversion would clip everything above 255 to white."""
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(path):
    """The RGB PIL image in file `path`, turned upright by its EXIF orientation.

    Raises BadImageError (a ValueError) naming the file when Pillow cannot read it."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... by plugin
        raise BadImageError(f"{path}: cannot decode as an image ({type(e).__name__}: {e})") \
            from e


def decode_array(path):
    """(H, W, 3) uint8 pixels of file `path` (see decode_image)."""
    return np.asarray(decode_image(path))


# The bytes a complete file of these formats ends with (JPEG's end-of-image marker, PNG's IEND
# chunk). A truncated download keeps its header but loses them.
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _check_file(path):
    """Raise BadImageError unless Pillow recognises the file and, for JPEG and PNG, the file
    ends as a complete one does. Reads the header and the last bytes only; the rare file
    without its end marker (trailing bytes, or truncated) is decoded fully to tell which."""
    try:
        with Image.open(path) as img:
            end = END_MARKERS.get(img.format)
            if end is not None:
                img.fp.seek(max(os.path.getsize(path) - 32, 0))
                if end not in img.fp.read():
                    img.load()   # seeks back to the pixel data itself
    except Exception as e:
        raise BadImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


# ---- datasets ----------------------------------------------------------------------------
class ImageDataset:
    """What both presets share: the files, labels and classes of one split.

    Attributes: root, split, classes, num_classes, files (relative to root/split), labels (N,)
    int64, image_size (side of the square network input), train, preset, mean, std,
    skipped (how many undecodable files were left out, with skip_bad) and skipped_files."""
    preset = None

    def __init__(self, listing, train, mean, std, skipped_files=()):
        self.folder = listing.folder
        self.root, self.split = listing.folder.parent, listing.folder.name
        self.classes = list(listing.classes)
        self.num_classes = len(self.classes)
        self.files = list(listing.files)
        self.labels = listing.labels
        self.train = bool(train)
        self.mean, self.std = mean, std
        self.skipped_files = list(skipped_files)

    @property
    def skipped(self):
        return len(self.skipped_files)

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return (f"{type(self).__name__}({str(self.folder)!r}, preset={self.preset!r}, "
                f"train={self.train}, {len(self)} images, {self.num_classes} classes, "
                f"skipped={self.skipped})")

    def batch(self, indices, rng, keep=slice(None)):
        """(x, y): x float32 (B, 3, S, S) normalised, y int64 (B,), for dataset `indices`;
        the random augmentation (training only) draws from numpy Generator `rng`. `keep`, a
        slice of positions, builds only those items of the batch, with the random draws of the
        whole batch (a data-parallel rank's share: see BatchLoader's `part`)."""
        raise NotImplementedError


def _without(listing, bad):
    """`listing` without the files at positions `bad`."""
    keep = np.ones(len(listing.files), dtype=bool)
    keep[list(bad)] = False
    return _select(listing, np.flatnonzero(keep))


def _select(listing, positions):
    """`listing` with only the files at the sorted `positions`."""
    return Listing(listing.folder, listing.classes, [listing.files[i] for i in positions],
                   listing.labels[positions], listing.sizes[positions])


class ArrayImageDataset(ImageDataset):
    """The `cifar` preset: all images decoded into one uint8 (N, H, W, 3) array (cached on disk),
    augmented a whole batch at a time."""
    preset = "cifar"

    def __init__(self, listing, images, train, skipped_files=()):
        super().__init__(listing, train, T.CIFAR_MEAN, T.CIFAR_STD, skipped_files)
        if images.shape[0] != len(self.labels):
            raise ValueError(f"{self.folder}: {images.shape[0]} images for "
                             f"{len(self.labels)} labels")
        self.images = images
        self.image_size = images.shape[1]

    def __getitem__(self, i):
        """(image (H, W, 3) uint8 as decoded, label)."""
        return self.images[i], int(self.labels[i])

    def batch(self, indices, rng, keep=slice(None)):
        indices = np.asarray(indices)
        pixels = self.images[indices[keep]]
        if self.train:
            offsets, flips = T.draw_crop_flip(rng, len(indices))   # drawn for the whole batch
            pixels = T.crop_flip(pixels, offsets[keep], flips[keep])
        return T.normalize_batch(pixels, self.mean, self.std), self.labels[indices[keep]]


class FileImageDataset(ImageDataset):
    """The `imagenet` preset: each image decoded from its file when a batch needs it.

    image_dataset checks every file when it builds the dataset (_check_file). With skip_bad, the
    files it refuses are left out, and a file that still fails when fully decoded (one the
    check cannot see into, e.g. a truncated BMP, or one damaged since) is replaced, in every
    batch, by the next decodable file of the split (with its label) and added to
    skipped_files; without skip_bad it raises BadImageError."""
    preset = "imagenet"

    def __init__(self, listing, train, skip_bad=False, size=T.IMAGENET_SIZE,
                 skipped_files=()):
        super().__init__(listing, train, T.IMAGENET_MEAN, T.IMAGENET_STD, skipped_files)
        self.image_size = size
        self.skip_bad = skip_bad
        self._lock = threading.Lock()   # skipped_files grows from the loader's threads

    def path(self, i):
        return self.folder / self.files[i]

    def __getitem__(self, i):
        """(image (H, W, 3) uint8 as decoded, untransformed, label)."""
        return decode_array(self.path(i)), int(self.labels[i])

    def _decode(self, i):
        """(RGB image, label) of item i, or with skip_bad of the first decodable item from i on."""
        n = len(self)
        for step in range(n if self.skip_bad else 1):
            j = (i + step) % n
            try:
                return decode_image(self.path(j)), self.labels[j]
            except BadImageError as e:
                if not self.skip_bad:
                    raise
                with self._lock:
                    if self.files[j] not in self.skipped_files:
                        self.skipped_files.append(self.files[j])
                        warnings.warn(f"skipping {e}", stacklevel=2)
        raise BadImageError(f"{self.folder}: no file of the split can be decoded")

    def _item(self, i, rng):
        img, label = self._decode(i)
        if self.train:
            return T.imagenet_train_image(img, rng, self.image_size), label
        return T.imagenet_eval_image(img, self.image_size), label

    def batch(self, indices, rng, keep=slice(None)):
        # One stream per item, seeded from the batch's stream, so an item's augmentation depends
        # on (batch rng, position in the batch) only, not on the order items are processed in.
        seeds = rng.integers(0, 2**63, size=len(indices)) if self.train else [0] * len(indices)
        rngs = [np.random.default_rng(int(s)) for s in seeds][keep]
        items = [self._item(int(i), r) for i, r in zip(list(indices)[keep], rngs)]
        pixels = np.stack([p for p, _ in items])
        labels = np.asarray([label for _, label in items], dtype=np.int64)
        return T.normalize_batch(pixels, self.mean, self.std), labels


# ---- the cifar cache ---------------------------------------------------------------------
def cache_folder(root, split, cache_dir=None):
    """<base>/<root name>-<12 hex of sha256(abspath(root))>-<split>; base = cache_dir, else
    $TINYHW_CACHE, else the project's data/cache."""
    base = cache_dir or os.environ.get("TINYHW_CACHE") or PROJECT_DATA / "cache"
    absolute = str(Path(root).resolve())
    key = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return Path(base) / f"{Path(absolute).name}-{key}-{split}"


def _atomic_write(path, write):
    """Call write(file) on a temporary file beside `path`, then move it onto `path`, so a reader
    never sees a half-written file."""
    # A unique name opened with "x" rather than mkstemp: mkstemp's files are private (0600),
    # and a cache shared by several users must follow the umask like any other file.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_cache(folder, images, labels, meta):
    """Write images.npy, labels.npy, then meta.json (the last one marks the cache complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "images.npy", lambda f: np.save(f, images, allow_pickle=False))
    _atomic_write(folder / "labels.npy", lambda f: np.save(f, labels, allow_pickle=False))
    _atomic_write(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))


def load_cache(folder, fingerprint):
    """(images, labels, meta) from `folder` when its fingerprint is `fingerprint` and the arrays
    have the shapes meta.json records; None when missing, stale or damaged."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fingerprint:
            return None
        images = np.load(folder / "images.npy", allow_pickle=False)
        labels = np.load(folder / "labels.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if list(images.shape) != meta.get("shape") or labels.shape != (images.shape[0],):
        return None
    return images, labels, meta


def _decode_into(out, folder, files, start, first_file, first_shape, skip_bad):
    """Decode files[start:start + len(out)] into `out`; returns the positions of the files that
    cannot be decoded (skip_bad), or raises BadImageError at the first one."""
    bad = []
    for j in range(len(out)):
        path = folder / files[start + j]
        try:
            pixels = decode_array(path)
        except BadImageError:
            if not skip_bad:
                raise
            bad.append(start + j)
            continue
        if pixels.shape != first_shape:
            raise ImageSizeError(
                f"{path}: is {pixels.shape[1]}x{pixels.shape[0]} but {first_file}, the first "
                f"image, is {first_shape[1]}x{first_shape[0]}",
                "the cifar preset stacks images of one size: resize them, or use "
                "preset='imagenet', which crops and resizes every image to 224x224")
        out[j] = pixels
    return bad


def decode_all(listing, skip_bad, chunk=500):
    """Decode every file of `listing` into (N, H, W, 3) uint8 with a thread per core (Pillow
    releases the GIL while decoding). Returns (images, listing, skipped relative paths), the
    listing and images without the undecodable files when skip_bad; otherwise the first
    undecodable file raises BadImageError."""
    files, n = listing.files, len(listing.files)
    first_shape = None
    for f in files:   # the first decodable image fixes the size
        try:
            first_shape = decode_array(listing.folder / f).shape
            first_file = listing.folder / f
            break
        except BadImageError:
            if not skip_bad:
                raise
    if first_shape is None:
        raise BadImageError(f"{listing.folder}: none of its {n} files can be decoded")
    images = np.empty((n,) + first_shape, dtype=np.uint8)
    bad = []
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        with tqdm(total=n, desc=f"decoding {listing.folder}", unit="img", disable=None,
                  leave=False) as bar:
            jobs = {pool.submit(_decode_into, images[s:s + chunk], listing.folder, files, s,
                                first_file, first_shape, skip_bad): min(chunk, n - s)
                    for s in range(0, n, chunk)}
            for job in as_completed(jobs):
                bad += job.result()
                bar.update(jobs[job])
    finally:
        # On an error, the chunks not yet started are dropped rather than decoded for nothing.
        pool.shutdown(wait=True, cancel_futures=True)
    bad.sort()
    if bad:
        keep = np.setdiff1d(np.arange(n), bad)
        images, listing = images[keep], _without(listing, bad)
    return images, listing, [files[i] for i in bad]


def _cached_arrays(listing, cache_dir, skip_bad):
    """(images, listing, skipped) of a cifar split, from the cache when it is current; otherwise
    decoded and written to the cache (a warning, not an error, when the cache cannot be written).
    `cache_dir=False` neither reads nor writes a cache."""
    folder = None if cache_dir is False else cache_folder(listing.folder.parent,
                                                          listing.folder.name, cache_dir)
    fingerprint = listing.fingerprint()
    if folder is not None:
        cached = load_cache(folder, fingerprint)
        # A cache that left bad files out is valid only for a caller who accepts that.
        if cached is not None and (skip_bad or not cached[2]["skipped"]):
            images, labels, meta = cached
            skipped = set(meta["skipped"])
            kept = _without(listing, [i for i, f in enumerate(listing.files) if f in skipped])
            if np.array_equal(kept.labels, labels):
                return images, kept, meta["skipped"]
    images, kept, skipped = decode_all(listing, skip_bad)
    if folder is not None:
        meta = dict(version=CACHE_VERSION, fingerprint=fingerprint, folder=str(listing.folder),
                    classes=listing.classes, shape=list(images.shape), skipped=skipped)
        try:
            save_cache(folder, images, kept.labels, meta)
        except OSError as e:
            warnings.warn(f"could not write the image cache {folder} ({e}); the images will be "
                          "decoded again next time: set TINYHW_CACHE or cache_dir to a writable "
                          "folder", stacklevel=3)
    return images, kept, skipped


# ---- the entry point ---------------------------------------------------------------------
def _choose_preset(listing):
    """`cifar` when the first decodable image is at most AUTO_MAX_SIDE on each side."""
    for f in listing.files:
        try:
            img = decode_image(listing.folder / f)
        except BadImageError:
            continue
        return "cifar" if max(img.size) <= AUTO_MAX_SIDE else "imagenet"
    raise BadImageError(f"{listing.folder}: none of its files can be decoded")


def _unreadable(folder, files, start):
    """(position from `start`, BadImageError) of each of the `files` that _check_file refuses."""
    bad = []
    for j, f in enumerate(files):
        try:
            _check_file(folder / f)
        except BadImageError as e:
            bad.append((start + j, e))
    return bad


def _file_check(listing, chunk=2000):
    """(position, BadImageError) of each file _check_file refuses, in order, checked by a
    thread per core in chunks (one future per file would cost more than the check on
    ImageNet's 1.3M)."""
    files = listing.files
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        jobs = [pool.submit(_unreadable, listing.folder, files[s:s + chunk], s)
                for s in range(0, len(files), chunk)]
        return [bad for job in jobs for bad in job.result()]


def image_dataset(root, split, preset="cifar", train=True, cache_dir=None, skip_bad=False,
                  limit=None):
    """The dataset of `root/split/<class>/<image>` with the transforms of `preset`.

    Parameters
    ----------
    root : folder holding the splits (see find_image_root)
    split : "train", "val", ... (a subfolder of root)
    preset : "cifar" (small images, decoded once and cached, augmented per batch in NumPy),
        "imagenet" (decoded per image on demand, 224 x 224) or "auto" (cifar when the first
        image is at most 64 pixels on each side)
    train : random augmentation (training) or the deterministic evaluation transform
    cache_dir : base folder of the cifar cache (default $TINYHW_CACHE, else data/cache);
        False for no cache
    skip_bad : leave out the files Pillow cannot decode (counted in `.skipped`) instead of
        raising BadImageError naming the first one
    limit : None, or use only this many files of the split, evenly spaced over the sorted
        list so that every class appears (spaced_indices); the cifar preset then decodes just
        those and neither reads nor writes the cache, which holds whole splits

    Every file is checked when the dataset is built: the cifar preset decodes them all; the
    imagenet preset reads each header and end marker (see _check_file), so that a bad file
    is reported now rather than by a loader thread in the middle of training.

    Returns an ArrayImageDataset (cifar) or FileImageDataset (imagenet)."""
    if preset not in PRESETS:
        raise ValueError(f"image_dataset: preset must be one of {PRESETS}, got {preset!r}")
    _check_limit(limit)
    listing = scan_split(root, split)
    if limit is not None and limit < len(listing.files):
        listing = _select(listing, spaced_indices(len(listing.files), limit))
        cache_dir = False
    if preset == "auto":
        preset = _choose_preset(listing)
    if preset == "cifar":
        images, listing, skipped = _cached_arrays(listing, cache_dir, skip_bad)
        return ArrayImageDataset(listing, images, train, skipped)
    bad = _file_check(listing)
    if bad and not skip_bad:
        (_, first), more = bad[0], len(bad) - 1
        raise BadImageError(f"{first}" + (f" (and {more} more bad files)" if more else ""))
    skipped = [listing.files[i] for i, _ in bad]
    listing = _without(listing, [i for i, _ in bad])
    if not listing.files:
        raise BadImageError(f"{listing.folder}: none of its files can be decoded")
    return FileImageDataset(listing, train, skip_bad=skip_bad, skipped_files=skipped)
