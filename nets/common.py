"""What every net here shares: counting parameters, and lesioning layers.

Lesioning (Veit et al. 2016; Srivastava et al. 2015) removes a layer but keeps its identity path:
a lesioned conv block outputs shortcut(x) (the identity, or the option-A / projection shortcut
where the block changes the shape), a lesioned highway layer of the char-LM outputs its input x
(its carry path). Each such layer has a `lesioned` switch (`nets.blocks.Block`,
`nets.char_lm.HighwayLayer`); `lesioned(layers)` turns it on for a `with` block and restores it
after, which is how the analyses and the tests lesion.
"""
import contextlib


def count_parameters(model):
    """The number of scalar parameters of a tinyhw.nn.Module."""
    return sum(p.size for p in model.parameters())


@contextlib.contextmanager
def lesioned(layers):
    """Within the `with` block, every layer of `layers` outputs its identity path alone.

        with lesioned([net.stages[1][2]]):
            logits = net(x)
    """
    layers = list(layers)
    for layer in layers:
        if not hasattr(layer, "lesioned"):
            raise TypeError(f"lesioned: a {type(layer).__name__} has no identity path to keep "
                            "(expected a conv block or a char-LM highway layer)")
    saved = [layer.lesioned for layer in layers]
    try:
        for layer in layers:
            layer.lesioned = True
        yield
    finally:
        for layer, flag in zip(layers, saved):
            layer.lesioned = flag
