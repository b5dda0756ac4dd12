"""`Highway`: a dense highway layer in any of Greff et al.'s six variants.

With H = relu(W_H x + b_H), T = sigmoid(W_T x + b_T), C = sigmoid(W_C x + b_C):
    plain     y = H
    residual  y = H + x
    t_only    y = H * T + x
    c_only    y = H + x * C
    coupled   y = H * T + x * (1 - T)     (Srivastava et al.; Kim et al.'s char-LM layer)
    full      y = H * T + x * C
The combination itself is `tinyhw.ops.highway.highway`.

Gate biases. Kim et al. initialise b_T = -2 so that T ~ sigmoid(-2) ~ 0.12 and the
layer starts close to the identity (mostly carrying x). `gate_bias` (default -2)
sets b_T. The carry gate has the opposite role, so for the same "mostly carry"
start its bias is the negation, b_C = -gate_bias = +2, giving C ~ 0.88 at init.
For `full` this makes y ~ 0.12 H + 0.88 x at init, the same start as `coupled`.
Gate weights use Linear's default initialisation.

`gate_offset` is a constant added to the transform gate's pre-activation (and subtracted
from the carry gate's), on top of the learned bias: Kim et al.'s code adds its -2 this way
(nn.AddConstant), so that re-initialising every parameter uniformly keeps the offset.
"""
from .. import init
from ..checks import check_size
from ..ops.activation import relu, sigmoid
from ..ops.highway import GATES, VARIANTS, highway
from .linear import Linear
from .module import Module


class Highway(Module):
    """Highway layer on (*, dim) inputs: dim -> dim.

    Submodules (only those the variant uses): H (transform), T (transform gate),
    C (carry gate), each a Linear(dim, dim).
    """

    def __init__(self, dim, variant="coupled", gate_bias=-2.0, gate_offset=0.0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"Highway: variant must be one of {VARIANTS}, got {variant!r}")
        self.dim = check_size(dim, "Highway: dim")
        self.variant = variant
        self.gate_bias = float(gate_bias)
        self.gate_offset = float(gate_offset)
        self.uses_t, self.uses_c = GATES[variant]
        self.H = Linear(self.dim, self.dim)
        if self.uses_t:
            self.T = Linear(self.dim, self.dim)
            init.constant_(self.T.bias, self.gate_bias)
        if self.uses_c:
            self.C = Linear(self.dim, self.dim)
            init.constant_(self.C.bias, -self.gate_bias)  # carry mostly at init (see module doc)

    def gates(self, x):
        """(T, C) activations for input x; None for a gate the variant lacks."""
        t = sigmoid(self._pre(self.T, x, self.gate_offset)) if self.uses_t else None
        c = sigmoid(self._pre(self.C, x, -self.gate_offset)) if self.uses_c else None
        return t, c

    @staticmethod
    def _pre(linear, x, offset):
        z = linear(x)
        return z + offset if offset else z

    def forward(self, x):
        t, c = self.gates(x)
        return highway(relu(self.H(x)), x, t=t, c=c, variant=self.variant)

    def extra_repr(self):
        offset = f", gate_offset={self.gate_offset}" if self.gate_offset else ""
        return f"{self.dim}, variant={self.variant!r}, gate_bias={self.gate_bias}{offset}"
