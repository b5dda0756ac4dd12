"""Checkpoints as .npz files: arrays only, never pickle, written atomically.

`save(state, path, meta)` writes every array (moved to the CPU) as one member of
a zip archive that `numpy.load(path, allow_pickle=False)` reads, plus `meta`, a
JSON-able dict (epoch, lr, RNG state, ...), stored as the UTF-8 bytes of its
JSON under the reserved key "__meta__.json".

Atomicity: the archive is written to a temporary file in the destination's
directory, flushed and fsync'ed, then renamed over `path` with os.replace,
which is atomic on POSIX and Windows. A crash or an exception mid-write leaves
the previous checkpoint untouched (and the temporary file is removed).

Nested states (an optimizer's {"state": {3: {"momentum_buffer": array}}, ...})
are flattened by `flatten_state` into arrays under dotted keys
("optim.state.3.momentum_buffer") and a JSON skeleton that remembers the
structure, dict key types and scalar values; `unflatten_state` rebuilds it.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .backend import is_cupy_array, to_device
from .tensor import Tensor

META_KEY = "__meta__.json"
_ARRAY_TAG = "__array__"


def _to_numpy(value, key):
    if isinstance(value, Tensor):
        value = value.data
    if is_cupy_array(value):
        value = to_device(value, "cpu")
    value = np.asarray(value)
    if value.dtype.hasobject:
        raise TypeError(f"save: entry {key!r} has dtype object; only numeric arrays can be "
                        "saved (no pickling)")
    return value


def _json_default(value):
    # numpy scalars and small arrays sneak into metadata (e.g. a loss); store them as Python.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"save: meta value {value!r} of type {type(value).__name__} is not "
                    "JSON-serialisable")


def _write_archive(handle, arrays):
    """Write `arrays` (name -> numpy array) as an uncompressed .npz into an open binary file."""
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in arrays.items():
            with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def save(state_dict, path, meta=None):
    """Write `state_dict` (name -> array or Tensor) and `meta` (a dict or None) atomically."""
    path = os.fspath(path)
    if META_KEY in state_dict:
        raise ValueError(f"save: {META_KEY!r} is a reserved key")
    arrays = {str(k): _to_numpy(v, k) for k, v in state_dict.items()}
    if meta is not None:
        if not isinstance(meta, dict):
            raise TypeError(f"save: meta must be a dict, got {type(meta).__name__}")
        text = json.dumps(meta, default=_json_default)
        arrays[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode any other new file gets (0644
        # under the usual umask), so a checkpoint is as readable as the run's other files.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            _write_archive(handle, arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def _umask():
    mask = os.umask(0o022)   # the only way to read the umask is to set it, then restore it
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); harmless to skip where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path):
    """Read a file written by `save`: returns (state_dict of numpy arrays, meta dict or None)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no checkpoint file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"load: {path!r} is not an .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            state = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"load: {path!r} is not a readable .npz archive: {error}") from error
    meta = None
    if META_KEY in state:
        meta = json.loads(state.pop(META_KEY).tobytes().decode("utf-8"))
    return state, meta


def read_meta(path):
    """Only the `meta` dict of a file written by `save` (None if it has none), without reading
    its arrays: cheap even for a large checkpoint. ValueError for a file that is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_meta: no checkpoint file at {path!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            if META_KEY + ".npy" not in zf.namelist():
                return None
            with zf.open(META_KEY + ".npy") as member:
                data = np.lib.format.read_array(member, allow_pickle=False)
        return json.loads(data.tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError) as error:
        raise ValueError(f"{path!r} is not a readable .npz archive: {error}") from error


# ---- nested states (optimizers, schedulers) ---------------------------------
def flatten_state(state, prefix):
    """Split a nested dict/list of arrays and JSON values into (arrays, skeleton).

    `arrays` maps dotted keys such as "optim.state.3.momentum_buffer" to arrays;
    `skeleton` is JSON-able: the same structure with each array replaced by
    {"__array__": key} and each dict stored as a list of [key, value] pairs, so
    integer keys stay integers.
    """
    arrays = {}

    def walk(value, key):
        if isinstance(value, Tensor) or isinstance(value, np.ndarray) or is_cupy_array(value):
            if key in arrays:
                raise ValueError(f"flatten_state: two entries flatten to the same key {key!r}")
            arrays[key] = value
            return {_ARRAY_TAG: key}
        if isinstance(value, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    return arrays, walk(state, prefix)


def unflatten_state(skeleton, arrays):
    """Inverse of `flatten_state`: rebuild the nested state from its skeleton and arrays."""
    if isinstance(skeleton, dict):
        if _ARRAY_TAG in skeleton:
            key = skeleton[_ARRAY_TAG]
            if key not in arrays:
                raise KeyError(f"unflatten_state: array {key!r} is missing from the checkpoint")
            return arrays[key]
        return {k: unflatten_state(v, arrays) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, arrays) for v in skeleton]
    return skeleton


def save_checkpoint(path, model_state, optimizer_state=None, meta=None):
    """One file for a training run: model arrays under "model.", optimizer arrays under
    "optim.", the optimizer's structure and scalars (lr, momentum, ...) in the metadata."""
    arrays = {f"model.{k}": v for k, v in model_state.items()}
    meta = dict(meta or {})
    if optimizer_state is not None:
        optim_arrays, meta["__optimizer__"] = flatten_state(optimizer_state, "optim")
        arrays.update(optim_arrays)
    save(arrays, path, meta)


def load_checkpoint(path):
    """Read a file written by `save_checkpoint`: (model_state, optimizer_state or None, meta)."""
    arrays, meta = load(path)
    meta = meta or {}
    model = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    skeleton = meta.pop("__optimizer__", None)
    optimizer = None if skeleton is None else unflatten_state(skeleton, arrays)
    return model, optimizer, meta
