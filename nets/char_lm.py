"""The character-aware language model of Kim et al. (2015), with Greff et al.'s highway variants.

    chars (T, B, L) -> char embedding (15) -> convolutions over each word's characters,
    tanh, max over time -> highway stack -> 2-layer LSTM -> dropout -> linear -> word logits

Configurations (Kim et al., Table 2):
    large: conv widths 1..7 with min(200, 50 w) filters (1100 features), 2 highway layers,
           LSTM 650, dropout 0.5;  19,373,165 parameters with the coupled variant
    small: widths 1..6 with 25 w filters (525 features), 1 highway layer, LSTM 300,
           dropout 0.5;  5,312,515 parameters (coupled)
    tiny:  widths 1..3 with 16 w filters, LSTM 48, dropout 0.1: for tests and smoke runs.

Highway layers (Greff et al., Table 1a): H = relu(W_H y + b_H) and, as in Kim et al.'s
code, each gate adds its bias offset as a constant on top of a learned bias that is
initialised like every other parameter: T = sigmoid(W_T y + b_T - 2) and, for the carry
gate, C = sigmoid(W_C y + b_C + 2), so that every variant starts by mostly carrying y.
`residual` has twice as many layers, matching the coupled model's parameter count.
`plain` is a single plain layer y = relu(W_H y + b_H) whatever the config: Greff et al.'s
Plain row (92.60) is Kim et al.'s large model with "one MLP layer" instead of the highway
layers (Kim et al., Table 6: 92.6 large, 111.2 small), and Greff et al. compare their
Residual row with "a single plain layer".

For the analyses, `forward(chars, state, order)` can run the highway layers in another order,
and each layer (`HighwayLayer`) has the conv blocks' `lesioned` switch (`nets.lesioned`).

`build()` applies Kim et al.'s initialisation: every parameter uniform in [-0.05, 0.05],
then the padding character's embedding row set to zero (it receives no gradient).
"""
import numpy as np

import tinyhw.functional as F
from tinyhw import init, nn

VARIANTS = F.HIGHWAY_VARIANTS

CONFIGS = {
    "large": dict(char_dim=15, widths=tuple(range(1, 8)), filters=lambda w: min(200, 50 * w),
                  highway_layers=2, hidden=650, lstm_layers=2, dropout=0.5),
    "small": dict(char_dim=15, widths=tuple(range(1, 7)), filters=lambda w: 25 * w,
                  highway_layers=1, hidden=300, lstm_layers=2, dropout=0.5),
    "tiny": dict(char_dim=8, widths=(1, 2, 3), filters=lambda w: 16 * w,
                 highway_layers=1, hidden=48, lstm_layers=2, dropout=0.1),
}
PAD_INDEX = 0


class CharCNN(nn.Module):
    """Word representations from characters: (N, L) char indices -> (N, sum of filters)."""

    def __init__(self, char_vocab, char_dim, widths, filters, max_word_len):
        super().__init__()
        too_wide = [w for w in widths if w > max_word_len]
        if too_wide:
            raise ValueError(f"CharCNN: kernel widths {too_wide} exceed max_word_len {max_word_len}")
        self.embed = nn.Embedding(char_vocab, char_dim, padding_idx=PAD_INDEX)
        self.convs = nn.ModuleList([nn.Conv1d(char_dim, filters(w), w) for w in widths])
        self.out_features = sum(filters(w) for w in widths)

    def forward(self, chars):
        e = self.embed(chars).transpose(1, 2)                 # (N, char_dim, L)
        # Kim et al. take max_t tanh(z_t); tanh is increasing, so that equals tanh(max_t z_t),
        # with the same gradient. Taking the max first applies tanh to (N, filters) instead of
        # (N, filters, L - w + 1). The convs and their maxima run as one op, equal to
        # cat([max(conv(e), dim=2) for conv in self.convs], dim=1).
        return F.tanh(F.conv1d_max_over_time(e, [conv.weight for conv in self.convs],
                                             [conv.bias for conv in self.convs]))


class HighwayLayer(nn.Highway):
    """A highway layer of the LM (tinyhw.nn.Highway) with the conv blocks' `lesioned` switch:
    when it is on, the layer outputs its input y alone, its carry path (see nets.common)."""

    def __init__(self, dim, variant, gate_bias, gate_offset):
        super().__init__(dim, variant, gate_bias=gate_bias, gate_offset=gate_offset)
        self.lesioned = False

    def forward(self, x):
        return x if self.lesioned else super().forward(x)

    def extra_repr(self):
        return super().extra_repr() + (", lesioned=True" if self.lesioned else "")


class CharLM(nn.Module):
    """forward(chars (T, B, L), state=None) -> (logits (T*B, words), (h, c))."""

    def __init__(self, config, variant, word_vocab, char_vocab, max_word_len):
        super().__init__()
        c = CONFIGS[config]
        self.config, self.variant = config, variant
        self.cnn = CharCNN(char_vocab, c["char_dim"], c["widths"], c["filters"], max_word_len)
        width = self.cnn.out_features
        layers = highway_layer_count(config, variant)
        # Kim et al.'s -2 is a constant offset on the gate (the learned bias is initialised
        # uniformly like every other parameter), so it is a gate_offset, not a gate_bias.
        self.highways = nn.ModuleList([
            HighwayLayer(width, variant, gate_bias=0.0, gate_offset=-2.0) for _ in range(layers)])
        self.lstm = nn.LSTM(width, c["hidden"], num_layers=c["lstm_layers"], dropout=c["dropout"])
        self.dropout = c["dropout"]
        self.decoder = nn.Linear(c["hidden"], word_vocab)

    def forward(self, chars, state=None, order=None):
        """`order`, a sequence of indices into `highways`, runs the highway layers in that
        order (the shuffle analysis); default: as built. (To lesion a layer, see nets.common.)"""
        steps, batch, length = chars.shape
        y = self.cnn(chars.reshape(steps * batch, length))
        for k in range(len(self.highways)) if order is None else order:
            y = self.highways[k](y)
        out, state = self.lstm(y.reshape(steps, batch, -1), state)
        out = F.dropout(out, self.dropout, self.training)
        return self.decoder(out.reshape(steps * batch, -1)), state


def highway_layer_count(config, variant):
    """Layers of the highway stack: the config's count, twice that for residual (to match the
    coupled parameter count), one for plain (Kim et al.'s one-MLP-layer model)."""
    if variant == "plain":
        return 1
    return CONFIGS[config]["highway_layers"] * (2 if variant == "residual" else 1)


def build(config, variant, word_vocab, char_vocab, max_word_len, init_scale=0.05):
    """One row of Greff et al.'s Table 1a: `build("large", "coupled", 10000, 51, 21)`."""
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {tuple(CONFIGS)}, got {config!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    for name, value in (("word_vocab", word_vocab), ("char_vocab", char_vocab),
                        ("max_word_len", max_word_len)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    model = CharLM(config, variant, int(word_vocab), int(char_vocab), int(max_word_len))
    for p in model.parameters():
        init.uniform_(p, -init_scale, init_scale)
    model.cnn.embed.weight.data[PAD_INDEX] = 0
    return model
