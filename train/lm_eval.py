"""The char-LM's perplexity over a split, as train.lm measures it (validation after every epoch,
test at the end) and as the analyses of its highway layers (train.analysis.lm_layers) reuse it.

A module of its own so that the analyses import nothing from an entry point.
"""
import math

import numpy as np

import tinyhw
import tinyhw.functional as F
from data.ptb import num_windows, stream_batches
from tinyhw.backend import to_device
from train.runs import progress


def device_ints(array, device):
    """Word or character ids (an integer array) as a constant Tensor on `device`."""
    return tinyhw.Tensor(to_device(np.ascontiguousarray(array), device))


def perplexity(mean_nll):
    """exp(mean NLL), infinite where that overflows a float (a diverging run's NLL can be
    finite and still above log(max float) ~ 709.8)."""
    return math.exp(mean_nll) if math.isnan(mean_nll) or mean_nll < 709.0 else math.inf


def evaluate(model, corpus, split, batch_size, seq_len, device, limit=None, order=None):
    """Perplexity exp(mean NLL) over every predicted token of `split` (its first `limit`
    words), `batch_size` streams in windows of `seq_len` steps, the LSTM state carried.
    `order` runs the highway layers in that order (see CharLM.forward); to lesion layers,
    call this inside `nets.lesioned(...)`."""
    model.eval()
    total, count, state = 0.0, 0, None
    ids = corpus.ids[split][:limit]
    with tinyhw.no_grad():
        for inputs, targets in progress(stream_batches(ids, batch_size, seq_len),
                                        num_windows(len(ids), batch_size, seq_len),
                                        f"{split} perplexity", "win"):
            logits, state = model(device_ints(corpus.chars(inputs), device), state, order)
            nll = F.cross_entropy(logits, device_ints(targets.reshape(-1), device), "sum")
            total += nll.item()
            count += targets.size
    return perplexity(total / count)
