"""tinyhw.ops.shape: reshape, flatten, permute/transpose, (un)squeeze, indexing, cat, stack, split."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyhw.functional as F
from tinyhw import Tensor
from tinyhw.gradcheck import gradcheck
from tests.strategies import arrays, shapes


@given(arrays(shapes()), st.data())
def test_reshape_and_flatten(a, data):
    target = data.draw(st.permutations(a.shape)).copy()
    target[0] = -1 if target else target
    y = F.reshape(Tensor(a), *target)
    np.testing.assert_array_equal(y.data, a.reshape(target))
    gradcheck(lambda t: F.reshape(t, tuple(target)), [a])
    start = data.draw(st.integers(0, a.ndim - 1))
    np.testing.assert_array_equal(F.flatten(Tensor(a), start).data,
                                  a.reshape(a.shape[:start] + (-1,)))
    gradcheck(lambda t: F.flatten(t, start), [a])


@given(arrays(shapes()), st.data())
def test_permute_and_transpose(a, data):
    dims = data.draw(st.permutations(range(a.ndim)))
    np.testing.assert_array_equal(F.permute(Tensor(a), *dims).data, a.transpose(dims))
    gradcheck(lambda t: F.permute(t, dims), [a])
    d0, d1 = data.draw(st.integers(0, a.ndim - 1)), data.draw(st.integers(0, a.ndim - 1))
    np.testing.assert_array_equal(F.transpose(Tensor(a), d0, d1).data, np.swapaxes(a, d0, d1))
    gradcheck(lambda t: F.transpose(t, d0, d1), [a])


@given(arrays(shapes(max_dims=3)), st.data())
def test_unsqueeze_squeeze(a, data):
    d = data.draw(st.integers(0, a.ndim))
    u = F.unsqueeze(Tensor(a), d)
    assert u.shape == np.expand_dims(a, d).shape
    np.testing.assert_array_equal(F.squeeze(u, d).data, a)
    gradcheck(lambda t: F.squeeze(F.unsqueeze(t, d)) * 2.0, [a])


@st.composite
def basic_index(draw, shape):
    index = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "all"]))
        if kind == "int":
            index.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.integers(0, n - 1))
            index.append(slice(start, draw(st.integers(start + 1, n)), draw(st.integers(1, 2))))
        else:
            index.append(slice(None))
    return tuple(index)


@given(arrays(shapes()), st.data())
def test_basic_indexing(a, data):
    index = data.draw(basic_index(a.shape))
    np.testing.assert_array_equal(Tensor(a)[index].data, a[index])
    gradcheck(lambda t: t[index], [a])


@given(arrays(shapes()), st.data())
def test_getitem_is_indexing(a, data):
    index = data.draw(basic_index(a.shape))
    np.testing.assert_array_equal(F.getitem(Tensor(a), index).data, a[index])
    gradcheck(lambda t: F.getitem(t, index), [a])


@given(arrays(shapes(max_dims=3)), st.data())
def test_integer_array_indexing_with_repeats_sums_gradients(a, data):
    rows = np.array(data.draw(st.lists(st.integers(0, a.shape[0] - 1), min_size=1, max_size=6)))
    np.testing.assert_array_equal(Tensor(a)[rows].data, a[rows])
    gradcheck(lambda t: t[rows], [a], mode="full")


def test_boolean_mask_indexing():
    a = np.arange(6.0).reshape(2, 3)
    x = Tensor(a, requires_grad=True)
    x[a > 2].sum().backward()
    np.testing.assert_array_equal(x.grad, (a > 2).astype(float))


@st.composite
def pieces(draw):
    base = draw(shapes(max_dims=3))
    dim = draw(st.integers(0, len(base) - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    parts = [draw(arrays(base[:dim] + (s,) + base[dim + 1:])) for s in sizes]
    return parts, dim


@given(pieces())
def test_cat_and_split_are_inverse(pd):
    parts, dim = pd
    joined = F.cat([Tensor(p) for p in parts], dim)
    np.testing.assert_array_equal(joined.data, np.concatenate(parts, axis=dim))
    gradcheck(lambda *ts: F.cat(list(ts), dim), parts)
    sizes = [p.shape[dim] for p in parts]
    back = F.split(joined, sizes, dim)
    for p, b in zip(parts, back):
        np.testing.assert_array_equal(b.data, p)
    gradcheck(lambda t: F.split(t, sizes, dim), [np.concatenate(parts, axis=dim)])


@given(pieces())
def test_concatenate_is_cat(pd):
    parts, dim = pd
    assert F.concatenate is F.cat      # numpy's name for the same function
    gradcheck(lambda *ts: F.concatenate(list(ts), dim), parts)


@given(arrays(shapes(max_dims=2)), st.integers(1, 3))
def test_split_by_chunk_size(a, size):
    chunks = F.split(Tensor(a), size, 0)
    assert [c.shape[0] for c in chunks][:-1] == [size] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), a)


@given(st.lists(arrays((2, 3)), min_size=1, max_size=4), st.integers(0, 2))
def test_stack(parts, dim):
    np.testing.assert_array_equal(F.stack([Tensor(p) for p in parts], dim).data,
                                  np.stack(parts, dim))
    gradcheck(lambda *ts: F.stack(list(ts), dim), parts)


def test_errors():
    x = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        F.reshape(x, 4, 2)
    with pytest.raises(ValueError, match="permute: dims .* is not a permutation"):
        F.permute(x, 0, 0)
    with pytest.raises(IndexError, match=r"getitem: index .* is invalid for shape \(2, 3\)"):
        x[5]
    with pytest.raises(ValueError, match=r"cat: tensors\[1\] has shape \(2, 4\)"):
        F.cat([x, Tensor(np.ones((2, 4)))], 0)
    with pytest.raises(ValueError, match=r"stack: tensors\[1\] has shape"):
        F.stack([x, Tensor(np.ones((3, 2)))])
    with pytest.raises(ValueError, match=r"split: sections \[1, 1\] must .* add up to 3"):
        F.split(x, [1, 1], 1)
    with pytest.raises(TypeError, match="cat: tensors: expected a non-empty list"):
        F.cat([], 0)
