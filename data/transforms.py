"""Image transforms for the two presets, on uint8 pixels; normalisation comes last, once per batch.

CIFAR (small images, whole batches at once, vectorised in NumPy):
- training: zero-pad 4 pixels on each side, random crop back to the original size, horizontal flip
  with p = 0.5 (torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip());
- evaluation: nothing.

ImageNet (large images, one Pillow image at a time):
- training: random resized crop to 224 (torchvision's RandomResizedCrop defaults: scale (0.08, 1),
  ratio (3/4, 4/3), 10 attempts then a centre crop), horizontal flip with p = 0.5;
- evaluation: resize the shorter side to 256 (bilinear), centre crop 224.

Both end in `normalize_batch`: (B, H, W, 3) uint8 -> (B, 3, H, W) float32, (x / 255 - mean) / std.
Every random choice comes from the numpy Generator passed in, so the caller decides the stream.
"""
import math

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

CIFAR_PAD = 4
IMAGENET_SIZE, IMAGENET_RESIZE = 224, 256
RRC_SCALE, RRC_RATIO, RRC_ATTEMPTS = (0.08, 1.0), (3 / 4, 4 / 3), 10


# ---- normalisation ---------------------------------------------------------------------
def normalize_batch(images, mean, std):
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 C-contiguous: (x / 255 - mean_c) / std_c.

    Written as one multiply-add into a preallocated NCHW array: the transpose is folded into the
    multiply, so the pixels are read once and the float32 result written once."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"normalize_batch: expected (B, H, W, 3) uint8 images, got "
                         f"{images.shape} {images.dtype}")
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    b, h, w, _ = images.shape
    out = np.empty((b, 3, h, w), dtype=np.float32)
    np.multiply(images.transpose(0, 3, 1, 2), (1.0 / (255.0 * std))[:, None, None], out=out)
    out -= (mean / std)[:, None, None]
    return out


# ---- CIFAR: vectorised over the batch --------------------------------------------------
def draw_crop_flip(rng, batch, pad=CIFAR_PAD):
    """The random choices of one CIFAR training batch, in a fixed order: first (batch, 2) crop
    offsets (top, left) in [0, 2 * pad], then (batch,) flips with p = 0.5."""
    offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
    flips = rng.random(batch) < 0.5
    return offsets, flips


def crop_flip(images, offsets, flips, pad=CIFAR_PAD):
    """Zero-pad each (H, W, 3) image by `pad`, crop H x W at `offsets[i]` = (top, left) in the
    padded image, and mirror left-right where `flips[i]`. (B, H, W, 3) uint8 -> same shape.

    All images at once: the (B, H, W) source pixel of every output pixel is one flat index into
    the padded batch seen as (B * Hp * Wp, 3) rows, gathered by a single `take` (about 4x faster
    than broadcast fancy indexing over three axes, and faster than a per-image loop)."""
    b, h, w, c = images.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = np.zeros((b, hp, wp, c), dtype=images.dtype)
    padded[:, pad:pad + h, pad:pad + w] = images
    rows = offsets[:, 0, None] + np.arange(h)                    # (B, H)
    cols = offsets[:, 1, None] + np.arange(w)                    # (B, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    flat = (np.arange(b)[:, None, None] * hp + rows[:, :, None]) * wp + cols[:, None, :]
    return padded.reshape(-1, c).take(flat.ravel(), axis=0).reshape(b, h, w, c)


def cifar_train_batch(images, rng, pad=CIFAR_PAD):
    """Random crop with zero padding and random flip of a (B, H, W, 3) uint8 batch."""
    offsets, flips = draw_crop_flip(rng, len(images), pad)
    return crop_flip(images, offsets, flips, pad)


# ---- ImageNet: one Pillow image at a time ----------------------------------------------
def random_resized_crop_box(width, height, rng, scale=RRC_SCALE, ratio=RRC_RATIO,
                            attempts=RRC_ATTEMPTS):
    """(left, top, w, h) of a random crop covering `scale` of the area with aspect ratio w/h in
    `ratio` (log-uniform), as torchvision's RandomResizedCrop.get_params: up to `attempts` draws;
    if none fits inside the image, the largest centred crop whose ratio is clamped into `ratio`."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):       # too tall: full width, height cut to the tallest allowed ratio
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):     # too wide: full height
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def imagenet_train_image(img, rng, size=IMAGENET_SIZE):
    """RGB PIL image -> (size, size, 3) uint8: random resized crop (bilinear), random flip.

    The crop and the resize are one `Image.resize(..., box=...)`, so Pillow resamples only the
    cropped region."""
    left, top, w, h = random_resized_crop_box(img.width, img.height, rng)
    out = np.asarray(img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def resize_shorter_side(width, height, size):
    """The (width, height) with the shorter side `size` and the aspect ratio kept, the longer
    side truncated as torchvision's Resize(int) does."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def imagenet_eval_image(img, size=IMAGENET_SIZE, resize=IMAGENET_RESIZE):
    """RGB PIL image -> (size, size, 3) uint8: shorter side to `resize` (bilinear), centre crop."""
    w, h = resize_shorter_side(img.width, img.height, resize)
    img = img.resize((w, h), Image.BILINEAR)
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))
