"""`Embedding`: a lookup table of word (or character) vectors."""
from .. import init
from ..checks import check_size
from ..ops.embedding import embedding
from .linear import empty_parameter
from .module import Module


class Embedding(Module):
    """Row i of `weight` (num_embeddings, embedding_dim) is the vector of index i.

    Integer indices of any shape (*) -> vectors (*, embedding_dim). Initialised
    N(0, 1) as torch. The row `padding_idx`, if given, starts at zero and gets no
    gradient, so padding (e.g. Kim et al.'s zero-padded character slots) stays zero.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        num_embeddings = check_size(num_embeddings, "Embedding: num_embeddings")
        embedding_dim = check_size(embedding_dim, "Embedding: embedding_dim")
        if padding_idx is not None:
            check_size(padding_idx, "Embedding: padding_idx", minimum=-num_embeddings)
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx = padding_idx % num_embeddings  # torch stores it non-negative
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.weight = empty_parameter(self.num_embeddings, self.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        return embedding(input, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text
