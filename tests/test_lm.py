"""The character-aware LM pipeline on a small generated corpus: data, model, training."""
import json
import math

import numpy as np
import pytest

import tinyhw
import tinyhw.functional as F
from data.ptb import Corpus, find_ptb_dir, read_tokens, stream_batches
from nets import count_parameters
from nets.char_lm import VARIANTS, build
from tinyhw import optim, serialize
from train import lm, lm_eval


def _write_corpus(folder, seed=0, lines=(120, 20, 20)):
    """A Zipf-like corpus with `<unk>`s: some words are much more frequent than others."""
    r = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "N", "<unk>", "big", "house",
             "saw", "extraordinarily"]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), lines):
        text = "\n".join(" " + " ".join(r.choice(words, r.integers(2, 9), p=p)) + " "
                         for _ in range(n))
        (folder / f"{split}.txt").write_text(text + "\n")
    return folder


@pytest.fixture
def corpus_dir(tmp_path):
    return _write_corpus(tmp_path / "ptb")


# ---- data -----------------------------------------------------------------------------
def test_tokens_follow_kims_preprocessing(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(" the <unk> cat \n\n a N \n")
    assert read_tokens(f) == ["the", "|", "cat", "+", "a", "N", "+"]


def test_vocab_and_char_tensors_round_trip(corpus_dir):
    c = Corpus(corpus_dir)
    v = c.vocab
    assert v.chars[0] == " " and v.chars[1] == "{" and v.chars[2] == "}"
    assert v.max_word_len == len("extraordinarily") + 2
    for split in ("train", "valid", "test"):
        words = [v.words[i] for i in c.ids[split]]
        assert words == read_tokens(corpus_dir / f"{split}.txt")
    spelled = c.chars(c.ids["train"][:50])
    for row, i in zip(spelled, c.ids["train"][:50]):
        text = "".join(v.chars[k] for k in row).rstrip(" ")
        assert text == "{" + v.words[i] + "}"


@pytest.mark.parametrize("batch_size,seq_len", [(1, 7), (3, 5), (4, 35)])
def test_batching_covers_every_token_once(corpus_dir, batch_size, seq_len):
    ids = Corpus(corpus_dir).ids["train"]
    length = (len(ids) - 1) // batch_size
    seen_inputs, seen_targets = [], []
    for x, y in stream_batches(np.arange(len(ids)), batch_size, seq_len):
        assert x.shape == y.shape and x.shape[1] == batch_size and x.shape[0] <= seq_len
        np.testing.assert_array_equal(y, x + 1)   # each target is the token after its input
        seen_inputs.extend(x.T.reshape(-1).tolist())
        seen_targets.extend(y.reshape(-1).tolist())
    assert sorted(seen_inputs) == list(range(batch_size * length))
    assert len(set(seen_targets)) == len(seen_targets) == batch_size * length


def test_missing_empty_and_non_utf8_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYHW_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"looked in .*nowhere.* train.txt, valid.txt"):
        find_ptb_dir(tmp_path / "nowhere")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt: contains no words"):
        read_tokens(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(ValueError, match="bad.txt: not valid UTF-8"):
        read_tokens(tmp_path / "bad.txt")


def test_data_folder_falls_back_to_the_environment(corpus_dir, monkeypatch):
    monkeypatch.setenv("TINYHW_DATA", str(corpus_dir.parent))
    assert find_ptb_dir() == corpus_dir


# ---- model ----------------------------------------------------------------------------
@pytest.mark.parametrize("config,variant,count", [
    ("large", "coupled", 19_373_165), ("small", "coupled", 5_312_515),
    ("large", "full", 21_795_365), ("large", "t_only", 19_373_165),
    ("large", "c_only", 19_373_165), ("large", "residual", 19_373_165)])
def test_parameter_counts_match_kim(config, variant, count):
    assert count_parameters(build(config, variant, 10_000, 51, 21)) == count


def test_initialisation_is_uniform_and_pad_row_zero():
    m = build("small", "coupled", 100, 51, 21)
    for name, p in m.named_parameters():
        assert np.abs(p.data).max() <= 0.05, name
    assert not m.cnn.embed.weight.data[0].any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_model_gradients_match_finite_differences(variant):
    """A directional derivative through every parameter at once (embedding, convolutions,
    highway layers, LSTM, decoder), in float64, against central differences."""
    tinyhw.manual_seed(1)
    model = build("tiny", variant, 7, 9, 6, init_scale=0.5).double()
    model.eval()  # dropout off: the loss must be deterministic
    r = np.random.default_rng(0)
    chars, targets = tinyhw.Tensor(r.integers(0, 9, (3, 2, 6))), tinyhw.Tensor(r.integers(0, 7, 6))

    def loss():
        return F.cross_entropy(model(chars)[0], targets)
    loss().backward()
    params = list(model.parameters())
    directions = [r.standard_normal(p.shape) for p in params]
    directions[0][0] = 0  # the pad row gets no gradient by convention (padding_idx)
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(params, directions))
    eps, values = 1e-6, []
    for sign in (1, -1):
        for p, v in zip(params, directions):
            p.data += sign * eps * v
        with tinyhw.no_grad():
            values.append(loss().item())
        for p, v in zip(params, directions):
            p.data -= sign * eps * v
    numeric = (values[0] - values[1]) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    assert all(p.grad is not None and np.abs(p.grad).max() > 0 for p in params)


def _previous_char_cnn(cnn, chars):
    """CharCNN.forward as it was before the fused op: each conv, its max over time, cat."""
    e = cnn.embed(chars).transpose(1, 2)
    return F.tanh(F.cat([F.max(conv(e), dim=2) for conv in cnn.convs], dim=1))


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_model_loss_and_gradients_equal_the_previous_code_path(config, monkeypatch):
    """The fast routes (fused char CNN, LSTM, ...) give the loss and gradients of the composed
    ops the model used before (conv1d, max over time, cat), up to the order of float32 sums, on
    words padded with the zero-embedding character (ties in the max over time), in training
    mode (dropout drawn from the same seed). The state_dict keeps its names and shapes, so that
    checkpoints of runs in progress load."""
    results = []
    for previous in (False, True):
        tinyhw.manual_seed(3)
        model = build(config, "coupled", 50, 20, 12)
        keys = {k: v.shape for k, v in model.state_dict().items()}
        if previous:
            monkeypatch.setattr(type(model.cnn), "forward", _previous_char_cnn)
        model.train()
        r = np.random.default_rng(0)
        chars = r.integers(1, 20, (5, 4, 12))
        chars[r.random((5, 4)) < 0.8, 6:] = 0              # most words end early, then padding
        targets = tinyhw.Tensor(r.integers(0, 50, 20))
        tinyhw.manual_seed(4)
        loss = F.cross_entropy(model(tinyhw.Tensor(chars))[0], targets)
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters()}, keys))
    (loss, grads, keys), (loss0, grads0, keys0) = results
    assert keys == keys0 and "cnn.convs.0.weight" in keys
    assert loss == pytest.approx(loss0, rel=1e-6)
    for name, g in grads0.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-5, atol=1e-6 * np.abs(g).max(),
                                   err_msg=name)


# ---- training -------------------------------------------------------------------------
def _run(corpus_dir, out, *extra):
    argv = ["--config", "tiny", "--data", str(corpus_dir), "--out", str(out), "--batch-size", "4",
            "--seq-len", "6", "--device", "cpu", "--checkpoint-every", "0", *extra]
    return lm.main(argv)


def test_weights_overflowing_under_a_finite_loss_stop_the_run_before_scoring(corpus_dir,
                                                                             tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "run"
    real = lm.Trainer.train_step

    def overflowing(self, inputs, targets):
        result = real(self, inputs, targets)
        if self.step == 2:                            # the last update before --max-steps
            self.model.decoder.bias.data[0] = np.inf  # after a finite loss
        return result
    monkeypatch.setattr(lm.Trainer, "train_step", overflowing)
    with pytest.raises(SystemExit, match=r"^diverged: the weights became NaN or infinite by "
                                         r"step 3 \(decoder\.bias first\); no checkpoint had "
                                         r"been written yet\. Try a lower --lr\.$"):
        _run(corpus_dir, out, "--epochs", "1", "--max-steps", "3")
    assert not (out / "best.npz").exists() and not (out / "last.npz").exists()


def test_a_finite_loss_whose_perplexity_overflows_is_divergence(corpus_dir, tmp_path,
                                                               monkeypatch):
    """--lr 1e4 gave 2e4 nats a word while clipping kept the weights finite: a run on with an
    infinite perplexity is no run."""
    real = lm.F.cross_entropy
    monkeypatch.setattr(lm.F, "cross_entropy", lambda *a, **k: real(*a, **k) * 1000.0)
    with pytest.raises(SystemExit, match=r"^diverged: training loss became \d{4} nats per word "
                                         r"\(its perplexity overflows\) at step 0 \(epoch 1, "
                                         r"window 0\); no checkpoint"):
        _run(corpus_dir, tmp_path / "run", "--epochs", "1")


def test_the_first_line_names_the_data_folder_used(corpus_dir, tmp_path, capsys):
    """$TINYHW_DATA/ptb, then the project's data/ptb: the line says which one trained."""
    _run(corpus_dir, tmp_path / "run", "--epochs", "1", "--max-steps", "1")
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("tiny char-LM, coupled highway: ")
    assert f"parameters; {corpus_dir}: " in first


def test_perplexity_of_a_huge_mean_nll_is_infinite_not_an_overflow_error():
    assert lm_eval.perplexity(math.log(100.0)) == pytest.approx(100.0)
    assert lm_eval.perplexity(800.0) == math.inf
    assert math.isnan(lm_eval.perplexity(math.nan))


def test_perplexity_is_exp_of_mean_nll(corpus_dir):
    c = Corpus(corpus_dir)
    tinyhw.manual_seed(0)
    v = c.vocab
    model = build("tiny", "coupled", len(v.words), len(v.chars), v.max_word_len, init_scale=0.3)
    ppl = lm.evaluate(model, c, "valid", 2, 5, "cpu")
    total, count, state = 0.0, 0, None
    with tinyhw.no_grad():
        for x, y in stream_batches(c.ids["valid"], 2, 5):
            logits, state = model(tinyhw.Tensor(c.chars(x)), state)
            logp = F.log_softmax(logits).numpy()
            total -= logp[np.arange(y.size), y.reshape(-1)].sum()
            count += y.size
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_model_loss_falls(tmp_path, variant):
    c = Corpus(_write_corpus(tmp_path / "ptb", lines=(1000, 20, 20)))
    tinyhw.manual_seed(0)
    v = c.vocab
    model = build("tiny", variant, len(v.words), len(v.chars), v.max_word_len)
    opt = optim.SGD(model.parameters(), lr=1.0)
    losses, state = [], None
    for step, (x, y) in enumerate(stream_batches(c.ids["train"], 4, 6)):
        logits, state = model(tinyhw.Tensor(c.chars(x)), state)
        loss = F.cross_entropy(logits, tinyhw.Tensor(y.reshape(-1)), "sum") * 0.25
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state = tuple(s.detach() for s in state)
        losses.append(loss.item() / x.shape[0])
        if step == 100:
            break
    # From the uniform guess (log 14 = 2.64 nats) towards the corpus's unigram entropy (~2.3).
    assert losses[0] == pytest.approx(math.log(len(c.vocab.words)), abs=0.05)
    assert np.mean(losses[-30:]) < losses[0] - 0.2


def test_resume_equals_uninterrupted(corpus_dir, tmp_path):
    straight = tmp_path / "straight"
    _run(corpus_dir, straight, "--epochs", "2", "--max-steps", "30")
    split = tmp_path / "split"
    _run(corpus_dir, split, "--epochs", "2", "--max-steps", "13")        # stops mid-epoch
    _run(corpus_dir, split, "--epochs", "2", "--max-steps", "30", "--resume")
    a, _ = serialize.load(straight / "last.npz")
    b, _ = serialize.load(split / "last.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    epochs = lambda d: [r for r in map(json.loads, open(d / "metrics.jsonl")) if "epoch" in r]  # noqa: E731
    assert [r["val_ppl"] for r in epochs(straight)] == [r["val_ppl"] for r in epochs(split)]


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(corpus_dir, tmp_path,
                                                                        monkeypatch):
    out = tmp_path / "run"
    _run(corpus_dir, out, "--epochs", "1")
    before = (out / "last.npz").read_bytes()
    real = lm.Trainer.train_step

    def poisoned(self, inputs, targets):
        self.model.decoder.bias.data[:] = np.nan
        return real(self, inputs, targets)
    monkeypatch.setattr(lm.Trainer, "train_step", poisoned)
    with pytest.raises(SystemExit, match="diverged: training loss became nan"):
        _run(corpus_dir, out, "--epochs", "2", "--resume")
    assert (out / "last.npz").read_bytes() == before
