"""Every function of tinyhw.functional is checked: a float64 gradient check (GRADCHECKS names
the test that runs it) and a CPU-versus-GPU case in tests/test_gpu.py's CASES. The GPU cases
skip without a GPU; these coverage tests run everywhere."""
import importlib
import inspect

import pytest

import tinyhw.functional as F
from tests.test_gpu import CASES

# functional name -> "module::test" of a test that runs tinyhw.gradcheck on it.
GRADCHECKS = {
    "relu": "test_activation::test_relu",
    "sigmoid": "test_activation::test_sigmoid",
    "tanh": "test_activation::test_tanh",
    "softmax": "test_activation::test_softmax",
    "log_softmax": "test_activation::test_log_softmax",
    "add": "test_elementwise::test_binary_ops_gradcheck_with_broadcasting",
    "sub": "test_elementwise::test_binary_ops_gradcheck_with_broadcasting",
    "mul": "test_elementwise::test_binary_ops_gradcheck_with_broadcasting",
    "div": "test_elementwise::test_binary_ops_gradcheck_with_broadcasting",
    "neg": "test_elementwise::test_exp_neg_gradcheck_and_values",
    "pow": "test_elementwise::test_pow_by_tensor_differentiates_base_and_exponent",
    "exp": "test_elementwise::test_exp_neg_gradcheck_and_values",
    "log": "test_elementwise::test_log_gradcheck_and_values",
    "cast": "test_elementwise::test_cast_gradcheck",
    "sum": "test_reduction::test_sum",
    "mean": "test_reduction::test_mean",
    "max": "test_reduction::test_max_without_ties",
    "reshape": "test_shape::test_reshape_and_flatten",
    "flatten": "test_shape::test_reshape_and_flatten",
    "permute": "test_shape::test_permute_and_transpose",
    "transpose": "test_shape::test_permute_and_transpose",
    "squeeze": "test_shape::test_unsqueeze_squeeze",
    "unsqueeze": "test_shape::test_unsqueeze_squeeze",
    "getitem": "test_shape::test_getitem_is_indexing",
    "cat": "test_shape::test_cat_and_split_are_inverse",
    "concatenate": "test_shape::test_concatenate_is_cat",
    "stack": "test_shape::test_stack",
    "split": "test_shape::test_cat_and_split_are_inverse",
    "matmul": "test_linalg::test_matmul",
    "linear": "test_linalg::test_linear",
    "conv1d": "test_conv::test_conv1d_reference_gradcheck_and_loop",
    "conv1d_max_over_time": "test_char_cnn::test_routes_match_the_definition_and_finite_differences",
    "conv2d": "test_conv::test_conv2d_reference_gradcheck_and_loop",
    "max_pool2d": "test_pool::test_max_pool2d_gradcheck_and_loop",
    "avg_pool2d": "test_pool::test_avg_pool2d_gradcheck_and_loop",
    "adaptive_avg_pool2d": "test_pool::test_adaptive_avg_pool2d_gradcheck_and_loop",
    "batch_norm": "test_norm::test_reference_gradcheck",
    "dropout": "test_dropout::test_gradcheck",
    "embedding": "test_embedding::test_gradcheck",
    "lstm": "test_rnn::test_gradcheck_all_inputs_and_outputs",
    "highway": "test_highway::test_gradcheck",
    "cross_entropy": "test_loss::test_cross_entropy",
    "nll_loss": "test_loss::test_nll_loss_of_log_softmax_equals_cross_entropy",
}


def _functions():
    """The functions of tinyhw.functional (its constants, e.g. HIGHWAY_VARIANTS, left out)."""
    return {name for name in F.__all__ if callable(getattr(F, name))}


def test_every_function_has_a_gradient_check():
    assert set(GRADCHECKS) == _functions()


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_the_named_test_runs_a_gradient_check(name):
    module_name, test_name = GRADCHECKS[name].split("::")
    module = importlib.import_module(f"tests.{module_name}")
    test = getattr(module, test_name)
    test = getattr(getattr(test, "hypothesis", None), "inner_test", test)  # unwrap @given
    source = inspect.getsource(test)
    assert "gradcheck(" in source
    # the op is named in the test itself, or in the table of ops it draws from (BINARY)
    assert name in source or ("BINARY" in source and name in module.BINARY)


def test_every_function_has_a_gpu_case():
    """CASES keys are a function's name, or its name and a suffix (highway_full, max_all)."""
    missing = {name for name in _functions()
               if not any(key == name or key.startswith(f"{name}_") for key in CASES)}
    assert not missing, f"no case in tests/test_gpu.py's CASES for {sorted(missing)}"


def test_the_conv_reference_routes_have_gpu_cases():
    assert {"conv2d_reference", "conv1d_reference"} <= set(CASES)
