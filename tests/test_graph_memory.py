"""The recorded graph keeps alive only what ops saved for their backward (tinyhw/graph.py):
an op output that no later op saved is freed as soon as the caller drops it, as in torch."""
import gc
import weakref

import numpy as np

import tinyhw
import tinyhw.functional as F


def test_an_unsaved_intermediate_is_freed_before_backward():
    x = tinyhw.tensor(np.random.default_rng(0).standard_normal((4, 3)), dtype=np.float32,
                      requires_grad=True)
    h = x + 1.0                # add saves nothing; relu saves its output, not its input
    dropped = weakref.ref(h)
    y = F.relu(h)
    del h
    gc.collect()
    assert dropped() is None   # the graph does not hold h
    y.sum().backward()
    assert np.array_equal(x.grad, (x.data + 1.0 > 0).astype(np.float32))


def test_leaf_inputs_are_kept_for_their_gradients():
    w = tinyhw.tensor(np.ones(3), dtype=np.float32, requires_grad=True)
    y = (w * 2.0).sum()
    held = weakref.ref(w)
    del w
    gc.collect()
    assert held() is not None  # the graph keeps the leaf whose .grad backward fills
    y.backward()
    assert np.array_equal(held().grad, np.full(3, 2.0, np.float32))
