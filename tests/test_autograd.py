"""The engine itself: graph recording, ordering, accumulation, broadcasting, freeing."""
import gc
import weakref

import numpy as np
import pytest

import tinyhw
import tinyhw.functional as F
from tinyhw import Tensor, no_grad
from tinyhw.autograd import Function, unbroadcast


def leaf(values):
    return Tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def test_node_reused_twice_doubles_its_gradient():
    x = leaf([1.0, 2.0, 3.0])
    (x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_diamond_sums_both_paths():
    # y = a*b + a*c with a = x^2: dy/dx = 2x (b + c)
    x = leaf([1.5, -2.0])
    a = x * x
    b, c = leaf([3.0, 4.0]), leaf([0.5, -1.0])
    (a * b + a * c).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data * (b.data + c.data))
    np.testing.assert_allclose(b.grad, x.data ** 2)


def test_intermediate_used_after_its_consumers_gets_all_gradients():
    # z feeds two consumers at different depths; generation order must wait for both.
    x = leaf([2.0])
    z = x * 3.0
    deep = ((z * 2.0) * 2.0) * 2.0     # dz contribution 8
    (deep + z).sum().backward()         # plus 1 -> dz = 9, dx = 27
    np.testing.assert_allclose(x.grad, [27.0])


def test_broadcasting_unbroadcasts_in_both_directions():
    a = leaf(np.arange(6.0).reshape(2, 3))
    row = leaf([[1.0, 2.0, 3.0]])         # (1, 3) broadcast over rows
    col = leaf([[10.0], [20.0]])          # (2, 1) broadcast over columns
    vec = leaf([1.0, 1.0, 2.0])           # (3,) broadcast with a leading dim added
    u = np.array([[1.0, -1.0, 2.0], [0.5, 3.0, -2.0]])
    (a * row + col * vec).backward(u)
    np.testing.assert_allclose(row.grad, (u * a.data).sum(0, keepdims=True))
    np.testing.assert_allclose(col.grad, (u * vec.data).sum(1, keepdims=True))
    np.testing.assert_allclose(vec.grad, (u * col.data).sum(0))
    np.testing.assert_allclose(a.grad, u * row.data)


def test_unbroadcast_helper():
    g = np.ones((4, 2, 3))
    assert unbroadcast(g, (2, 3)).shape == (2, 3)
    assert unbroadcast(g, (1, 3)).tolist() == [[8.0, 8.0, 8.0]]
    assert unbroadcast(g, (2, 1)).shape == (2, 1)
    assert unbroadcast(g, ()).item() == 24.0


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 + 2 * x.data)


def test_no_grad_records_nothing():
    x = leaf([1.0])
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert tinyhw.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_detach_cuts_the_graph_and_shares_data():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert d.is_leaf and not d.requires_grad
    y = (d * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, d.data)  # no path through d


def test_requires_grad_propagates_only_from_inputs_that_need_it():
    a = Tensor(np.ones(2))
    b = leaf([1.0, 2.0])
    assert not (a * 2.0).requires_grad
    assert (a * b).requires_grad


def test_ten_thousand_deep_chain_has_no_recursion_error():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)
    del y
    gc.collect()


def test_graph_is_freed_after_backward():
    x = leaf([1.0])
    y = (x * 2.0) * 3.0
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0])
    y = (x * 2.0) * 3.0
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, [12.0])


def test_intermediate_gradients_are_freed_but_retain_grad_keeps_them():
    x = leaf([1.0, 2.0])
    h = x * 2.0
    h.retain_grad()
    m = h * 5.0
    m.sum().backward()
    assert m.grad is None            # not retained
    np.testing.assert_allclose(h.grad, [5.0, 5.0])


def test_saved_arrays_are_released_after_backward():
    x = leaf(np.ones(1000))
    y = x.exp()                      # Exp saves its output
    saved = weakref.ref(y._node.ctx)
    y.sum().backward()
    assert y._node.ctx is None and saved() is None


class _WrongShape(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g[:1]


def test_engine_rejects_a_gradient_of_the_wrong_shape():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"_WrongShape.backward gave a gradient of shape \(1,\)"):
        _WrongShape.apply(x).sum().backward()


def test_backward_without_grad_needs_a_single_element():
    x = leaf([1.0, 2.0])
    with pytest.raises(ValueError, match="single-element"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\), output has \(2,\)"):
        (x * 2.0).backward(np.ones(3))


def test_multi_output_function_with_an_unused_output():
    x = leaf(np.arange(6.0))
    first, second = F.split(x, [2, 4])
    (second * second).sum().backward()   # first is unused: the engine supplies zeros
    np.testing.assert_allclose(x.grad, [0, 0, 4, 6, 8, 10])


def test_leaf_gradient_does_not_alias_another_leaf_gradient():
    a, b = leaf([1.0]), leaf([2.0])
    (a + b).sum().backward()
    a.grad *= 10                     # an optimizer scaling one gradient in place
    np.testing.assert_allclose(b.grad, [1.0])


def test_default_dtype_and_python_scalars():
    t = tinyhw.tensor([1.0, 2.0])
    assert t.dtype == np.float32
    assert (t * 2).dtype == np.float32
    assert (2.0 - t).tolist() == [1.0, 0.0]
    assert tinyhw.tensor([1, 2]).dtype.kind == "i"
    assert Tensor(np.zeros(2, np.float64)).dtype == np.float64


@pytest.mark.parametrize("make", [
    lambda: tinyhw.tensor([1, 2], requires_grad=True),
    lambda: Tensor(np.array([True, False]), requires_grad=True),
    lambda: tinyhw.nn.Parameter(np.zeros(3, np.int64)),
    lambda: tinyhw.tensor([1, 2]).requires_grad_(),
], ids=["int", "bool", "int-parameter", "requires_grad_"])
def test_only_float_tensors_can_require_grad(make):
    with pytest.raises(TypeError, match=r"requires_grad=True needs floating-point data .* "
                                        r"got dtype (int64|bool)"):
        make()


def test_assigning_requires_grad_is_checked_too():
    t = tinyhw.tensor([1, 2])
    with pytest.raises(TypeError, match="got dtype int64"):
        t.requires_grad = True
    assert not t.requires_grad
    t.requires_grad = False                       # always allowed
    f = tinyhw.tensor([1.0])
    f.requires_grad = True
    assert f.requires_grad


@pytest.mark.parametrize("data, what", [
    (["a", "b"], r"<U1 \(strings\)"),
    (np.array([b"x"]), r"\|S1 \(bytes\)"),
    (np.array([1, None], dtype=object), r"object \(Python objects\)"),
    (None, r"object \(Python objects\)"),
    (np.zeros(2, np.complex64), r"complex64 \(complex\)"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), r"datetime64\[D\] \(datetimes\)"),
    (np.zeros(2, dtype=[("a", "f4")]), r".* \(records\)"),
])
def test_data_the_engine_cannot_compute_on_is_refused(data, what):
    with pytest.raises(TypeError, match=f"^Tensor: data of dtype {what} is not supported"):
        tinyhw.tensor(data)


def test_ragged_lists_are_refused_clearly():
    with pytest.raises(TypeError, match="data of type list is not a numeric array"):
        tinyhw.tensor([[1.0, 2.0], [3.0]])


def test_integer_and_bool_tensors_without_grad_still_work():
    labels = tinyhw.tensor([0, 2, 1])
    mask = Tensor(np.array([True, False, True]))
    assert labels.dtype == np.int64 and mask.dtype == np.bool_
    assert not labels.requires_grad and not mask.requires_grad
    logits = leaf([[0.1, 0.2, 0.3], [1.0, 0.0, 0.5], [0.3, 0.3, 0.1]])
    F.cross_entropy(logits, labels).backward()      # integer labels beside a float leaf
    assert logits.grad.shape == (3, 3)


def test_mixed_float_dtypes_are_rejected():
    with pytest.raises(TypeError, match="float32 differs"):
        Tensor(np.ones(2)) + Tensor(np.ones(2, np.float32))


def test_cpu_to_cpu_is_a_no_op_and_gpu_without_cupy_is_a_clear_error():
    t = tinyhw.tensor([1.0])
    assert t.to("cpu") is t
    if not tinyhw.gpu_available():
        with pytest.raises(RuntimeError, match="no usable GPU"):
            t.to("gpu")
    with pytest.raises(ValueError, match="device"):
        t.to("tpu")


class _SameArrayForBoth(Function):
    """y = a + b whose backward hands one fresh array to both inputs."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        shared = g * 1.0
        return shared, shared


def test_leaves_never_share_a_gradient_array_returned_for_two_inputs():
    a, b = leaf([1.0]), leaf([2.0])
    _SameArrayForBoth.apply(a, b).sum().backward()
    a.grad *= 10
    np.testing.assert_allclose(b.grad, [1.0])
