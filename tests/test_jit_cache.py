"""fast/jit.py's guard on Numba's on-disk cache: the compiled loops of one folder are cached
together, dropped when any of its files changes (Numba itself checks each function's own file
only, so a caller would keep an old copy of a loop from another file)."""
import os

from tinyhw.ops.fast import jit


def test_cache_is_dropped_when_any_file_of_the_folder_changes(tmp_path):
    (tmp_path / "caller.py").write_text("def f(): return g()\n")
    (tmp_path / "loops.py").write_text("def g(): return 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    for name in ("caller.f-1.py311.nbi", "caller.f-1.py311.1.nbc", "loops.cpython-311.pyc"):
        (cache / name).write_bytes(b"compiled before")

    jit._drop_stale_cache(str(tmp_path))   # no digest on record: nothing cached can be trusted
    assert sorted(os.listdir(cache)) == ["loops.cpython-311.pyc", "numba-sources.sha256"]

    (cache / "caller.f-1.py311.nbi").write_bytes(b"compiled now")
    jit._drop_stale_cache(str(tmp_path))   # nothing changed: kept
    assert (cache / "caller.f-1.py311.nbi").read_bytes() == b"compiled now"

    (tmp_path / "loops.py").write_text("def g(): return 2\n")   # only the callee's file
    jit._drop_stale_cache(str(tmp_path))
    assert not (cache / "caller.f-1.py311.nbi").exists()
    assert (cache / "loops.cpython-311.pyc").exists()   # Python's own cache is left alone


def test_a_folder_without_a_writable_cache_is_left_as_it_is(tmp_path):
    (tmp_path / "loops.py").write_text("def g(): return 1\n")
    (tmp_path / "__pycache__").write_text("a file where the folder would be")
    jit._drop_stale_cache(str(tmp_path))   # no error: Numba caches elsewhere then
    assert (tmp_path / "__pycache__").read_text() == "a file where the folder would be"
