"""Penn Treebank (Mikolov's word-level split) for the character-aware language model.

Preprocessing follows Kim et al. (2015):
- every line ends with the end-of-sentence token `+`;
- `<unk>` becomes the single character `|` (in both the word and the character view);
- the vocabulary is every distinct token of the three splits, in order of first
  appearance (train, then valid, then test), as in Kim et al.'s loader;
- each word is spelled as `{` + characters + `}` and padded with the pad character ` `
  (index 0, whose embedding row stays zero) to the longest such spelling in the corpus,
  capped at `max_word_len` (default 65, Kim et al.'s `max_word_l`): as in Kim et al.'s
  loader, a longer spelling is cut to its first max_word_len characters (`{` and the
  word's start, without `}`), so one odd word cannot change the model's shape.
On PTB this gives 10,000 words, 51 characters and spellings of 21 characters.

Batching: a split's token stream is cut into `batch_size` parallel streams and read in
windows of `seq_len` steps; inputs are tokens t, targets tokens t + 1, and the LSTM state
carries from one window to the next.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
EOS, UNK_WORD, UNK_CHAR = "+", "<unk>", "|"
PAD, BOW, EOW = " ", "{", "}"
PROJECT_DATA = Path(__file__).resolve().parent
KIM_MAX_WORD_LEN = 65   # Kim et al.'s max_word_l: the cap on a spelling's length, { and } included


def find_ptb_dir(data=None):
    """The folder holding train/valid/test.txt: `data` (or `data`/ptb), else $TINYHW_DATA/ptb,
    else the project's data/ptb. A folder given explicitly must be right; otherwise the first
    folder that has all three files wins. The error lists every place looked at."""
    candidates = []
    if data is not None:
        candidates += [Path(data), Path(data) / "ptb"]  # the ptb folder or the folder above it
    else:
        if os.environ.get("TINYHW_DATA"):
            candidates.append(Path(os.environ["TINYHW_DATA"]) / "ptb")
        candidates.append(PROJECT_DATA / "ptb")
    for folder in candidates:
        if all((folder / f"{s}.txt").is_file() for s in SPLITS):
            return folder
    partial = [(c, [f"{s}.txt" for s in SPLITS if not (c / f"{s}.txt").is_file()])
               for c in candidates if any((c / f"{s}.txt").is_file() for s in SPLITS)]
    if partial:
        folder, missing = partial[0]
        raise FileNotFoundError(f"Penn Treebank incomplete: {folder} has no "
                                f"{' and no '.join(missing)} (need train.txt, valid.txt and "
                                "test.txt)")
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"Penn Treebank not found: looked in {looked} for train.txt, valid.txt and test.txt "
        "(Mikolov's word-level split, one sentence per line). Pass --data DIR or set "
        "TINYHW_DATA to a folder containing ptb/.")


def read_tokens(path):
    """The token stream of one file: each line's words, then `+`; `<unk>` becomes `|`."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")   # -sig: drop a byte-order mark
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 text (byte {e.start}): expected a plain-text "
                         "PTB split") from None
    tokens = []
    for line in text.splitlines():
        words = line.split()
        if words:
            tokens.extend(UNK_CHAR if w == UNK_WORD else w for w in words)
            tokens.append(EOS)
    if not tokens:
        raise ValueError(f"{path}: contains no words: expected one sentence per line")
    return tokens


@dataclass
class Vocab:
    """Words and characters with their indices, and each word's padded spelling."""
    words: list          # index -> word
    chars: list          # index -> character; chars[0] is the pad
    max_word_len: int    # longest spelling including { and }

    def __post_init__(self):
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        self.spellings = self._spell_all()

    @classmethod
    def build(cls, token_lists, max_word_len=KIM_MAX_WORD_LEN):
        """Words and characters in order of first appearance (train first), so indices are
        reproducible; the pad, { and } come first among characters. Spellings are as long
        as the longest word plus { and }, but at most `max_word_len`."""
        if not isinstance(max_word_len, (int, np.integer)) or max_word_len < 3:
            raise ValueError(f"max_word_len must be an int of at least 3 ({{, one character, "
                             f"}}), got {max_word_len!r}")
        words, chars, seen_w, seen_c = [], [PAD, BOW, EOW], set(), {PAD, BOW, EOW}
        longest = 0
        for tokens in token_lists:
            for w in tokens:
                if w not in seen_w:
                    seen_w.add(w)
                    words.append(w)
                    longest = max(longest, len(w))
                    for c in w:
                        if c not in seen_c:
                            seen_c.add(c)
                            chars.append(c)
        return cls(words, chars, min(longest + 2, int(max_word_len)))

    def _spell_all(self):
        """(len(words), max_word_len) character indices: { word } then pad (0)."""
        table = np.zeros((len(self.words), self.max_word_len), dtype=np.int64)
        for i, w in enumerate(self.words):
            spelled = (BOW + w + EOW)[: self.max_word_len]
            table[i, : len(spelled)] = [self.char_index[c] for c in spelled]
        return table

    def encode(self, tokens, where="tokens"):
        try:
            return np.fromiter((self.word_index[w] for w in tokens), dtype=np.int64,
                               count=len(tokens))
        except KeyError as e:
            raise ValueError(f"{where}: word {e.args[0]!r} is not in the vocabulary") from None


class Corpus:
    """The three PTB splits as word-index streams, with the shared vocabulary."""

    def __init__(self, folder, max_word_len=KIM_MAX_WORD_LEN):
        folder = Path(folder)
        self.folder = folder
        tokens = {s: read_tokens(folder / f"{s}.txt") for s in SPLITS}
        self.vocab = Vocab.build([tokens[s] for s in SPLITS], max_word_len)
        self.ids = {s: self.vocab.encode(tokens[s], str(folder / f"{s}.txt")) for s in SPLITS}

    def chars(self, word_ids):
        """Character indices (..., max_word_len) of word indices of any shape."""
        return self.vocab.spellings[word_ids]


def stream_batches(word_ids, batch_size, seq_len):
    """Yield (inputs, targets), each (T, batch_size) int64, T = seq_len except maybe the last.

    The stream is cut into batch_size parallel streams of L = (n - 1) // batch_size inputs
    each; stream b reads tokens b*L .. b*L + L - 1 and predicts the next token of each. The
    few tokens that do not fill a whole stream are dropped (none with batch_size 1, which is
    how the test split is scored as one continuous stream)."""
    n = len(word_ids)
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
    length = (n - 1) // batch_size
    if length < 1:
        raise ValueError(f"a stream of {n} tokens is too short for batch_size {batch_size}")
    used = word_ids[: batch_size * length + 1]
    inputs = used[:-1].reshape(batch_size, length).T           # (L, B)
    starts = np.arange(batch_size) * length + 1
    targets = used[starts[None, :] + np.arange(length)[:, None]]  # (L, B): the token after each input
    for t0 in range(0, length, seq_len):
        yield inputs[t0: t0 + seq_len], targets[t0: t0 + seq_len]


def num_windows(n_tokens, batch_size, seq_len):
    length = (n_tokens - 1) // batch_size
    return -(-length // seq_len)
