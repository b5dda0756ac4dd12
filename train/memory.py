"""Roughly how much memory a training step needs, read off the graph of a small example batch,
so that an entry point can refuse a --batch-size whose activations cannot fit (with
train.runs.require_memory) before it trains, instead of failing mid-step.

The estimate applies the model to an example batch with the graph recorded and adds up the
bytes of every op output in that graph (the forward activations, which backward keeps: each op
saves its inputs or outputs), scaled to the batch size, times ACTIVATION_FACTOR for what comes
on top (tensors ops save besides their outputs, the gradients of the activations during
backward, convolution workspace), plus the parameters, their gradients and SGD's momentum.
It is deliberately rough, and errs on the generous side. Measured with tracemalloc on the CPU
while the graph kept every op output alive until backward, the peak of a training step was
1.05-1.3 times the graph's bytes plus about 1.5 copies of the parameters (resnet20,
highway20, plain20 without BN, resnet110 at 32x32; resnet50, highway_full50 at 224x224). Since
the graph keeps only what ops save (tinyhw/graph.py), resnet50's activations peak at about 0.6
times the graph's bytes (bench/memory.py), so the factor of 1.5 over-estimates; it still
refuses only batches far beyond the memory, and tests/test_image_train.py holds it between
the measured peak and three times that.
"""
import numpy as np

import tinyhw

ACTIVATION_FACTOR = 1.5
PARAMETER_COPIES = 3        # the weights, their gradients, the momentum buffers


def graph_bytes(outputs):
    """Bytes of every op output in the graph recorded behind the Tensors `outputs` (each node
    counted once), the outputs included."""
    stack = [t._node for t in outputs if t._node is not None]
    seen, total = set(), 0
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        total += sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                     for shape, dtype in node.out_meta)
        stack += [t._node for t in node.inputs if t is not None and t._node is not None]
    return total


def training_bytes(forward, samples, batch_size, parameters=()):
    """Rough peak bytes of one training step on `batch_size` samples (see the module doc).

    Parameters
    ----------
    forward : callable () -> Tensor or tuple of Tensors
        The model applied to an example batch of `samples` samples; called once with the graph
        recorded (nothing is trained: no backward, no update). Put the model in eval mode
        first, so that batch norm's running statistics and the random state stay untouched.
    samples : int
        How many samples the example batch holds (the activations scale with it).
    batch_size : int
        The batch size to estimate for.
    parameters : iterable of Tensors
        The trained parameters (counted PARAMETER_COPIES times).
    """
    with tinyhw.enable_grad():
        outputs = forward()
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    activations = graph_bytes(outputs) * batch_size / samples
    weights = sum(p.data.nbytes for p in parameters)
    return int(ACTIVATION_FACTOR * activations + PARAMETER_COPIES * weights)


def gpu_free_bytes():
    """Memory the GPU can still give: the device's free memory plus what CuPy's pool holds
    unused."""
    import cupy
    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free + cupy.get_default_memory_pool().free_bytes())
