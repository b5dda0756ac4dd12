"""train.lm's data and model against odd inputs: long words, byte-order marks, tiny splits,
missing files, steps too large for memory; and the Plain row's single layer."""
from pathlib import Path

import numpy as np
import pytest

from data.ptb import KIM_MAX_WORD_LEN, Corpus, read_tokens
from nets import count_parameters
from nets.char_lm import build, highway_layer_count
from tests.test_lm import _write_corpus
from tests.test_runs import _run
from train import runs

SHARED_PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def test_one_very_long_word_is_cut_as_kim_cuts_it(tmp_path):
    folder = _write_corpus(tmp_path / "ptb")
    long_word = "abcdefghij" * 30                                   # 300 characters
    with open(folder / "test.txt", "a") as f:
        f.write(f" the {long_word} cat \n")
    c = Corpus(folder)
    assert c.vocab.max_word_len == KIM_MAX_WORD_LEN == 65
    row = c.chars(np.array([c.vocab.word_index[long_word]]))[0]
    spelled = "".join(c.vocab.chars[k] for k in row)
    assert spelled == ("{" + long_word)[:65]          # Kim et al.: the first 65, no closing }
    assert Corpus(folder, max_word_len=30).vocab.max_word_len == 30
    assert Corpus(_write_corpus(tmp_path / "short")).vocab.max_word_len == len("extraordinarily") + 2


@pytest.mark.skipif(not SHARED_PTB.is_dir(), reason="needs the shared PTB copy")
def test_penn_treebank_keeps_kims_shapes():
    v = Corpus(SHARED_PTB).vocab
    assert (len(v.words), len(v.chars), v.max_word_len) == (10_000, 51, 21)


def test_a_byte_order_mark_is_not_glued_to_the_first_word(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("\ufeff the cat \n".encode("utf-8"))
    assert read_tokens(f) == ["the", "cat", "+"]


@pytest.mark.parametrize("split", ["train", "valid"])
def test_a_split_of_one_word_is_refused_before_training(tmp_path, split):
    folder = _write_corpus(tmp_path / "ptb")
    (folder / f"{split}.txt").write_text("cat\n")                   # tokens: cat, +
    with pytest.raises(SystemExit, match=rf"{split}.txt has 2 tokens .* too few for "
                                         r"--batch-size 4, which needs at least 5"):
        _run(folder, tmp_path / "run", "--epochs", "1")
    assert not (tmp_path / "run").exists()


def test_a_missing_split_is_named(tmp_path):
    folder = _write_corpus(tmp_path / "ptb")
    (folder / "valid.txt").unlink()
    with pytest.raises(SystemExit, match=r"incomplete: .*ptb has no valid.txt"):
        _run(folder, tmp_path / "run", "--epochs", "1")


def test_a_step_too_large_for_memory_is_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "available_memory_bytes", lambda: 2 * 2**30)
    folder = _write_corpus(tmp_path / "ptb")
    with pytest.raises(SystemExit, match=r"needs about \d+\.\d GiB .*--seq-len 100000, but only "
                                         r"2.0 GiB of memory is available"):
        _run(folder, tmp_path / "run", "--epochs", "1", seq_len=100000)
    assert not (tmp_path / "run").exists()


def test_memory_estimate_of_an_lm_step_covers_its_logits():
    # Kim's large step on PTB's vocabulary: the logits alone (700 words x 10,000 x 4 B, kept
    # with their softmax and gradient) need ~84 MB; the whole estimate stays well under 2 GiB.
    import tinyhw
    from train.memory import training_bytes
    model = build("large", "coupled", 10_000, 51, 21)
    model.eval()
    chars = tinyhw.Tensor(np.ones((1, 20, 21), dtype=np.int64))
    one, two = (training_bytes(lambda: model(chars)[0], 1, steps) for steps in (35, 70))
    assert 700 * 10_000 * 4 * 2 < one < 2 * 2**30
    assert two > 1.9 * (one - 3 * 4 * count_parameters(model))


def test_plain_is_a_single_plain_layer_in_every_config():
    assert [highway_layer_count(c, "plain") for c in ("large", "small")] == [1, 1]
    assert [highway_layer_count(c, "residual") for c in ("large", "small")] == [4, 2]
    coupled = build("large", "coupled", 10_000, 51, 21)
    plain = build("large", "plain", 10_000, 51, 21)
    width = coupled.cnn.out_features                                  # 1100
    linear = width * width + width
    assert len(plain.highways) == 1
    assert count_parameters(plain) == count_parameters(coupled) - 4 * linear + linear
