"""The layer-wise analyses on a char-LM: its highway stack is the one "stage" it has.

Kim et al.'s model runs every word's character-CNN features through 1 (small) or 2 (large)
highway layers before the LSTM. Those layers keep the shape, so the questions asked of a conv
stage apply to them unchanged:
  estimation-error  a_k - A per layer (A: the stack's output), over the words of the valid split
  lesion            valid perplexity with one layer replaced by the identity (its carry path)
  shuffle           valid perplexity with the layers in every other order (2 layers: swapped)
  iterative         cos(F(h), -dL/dh) and ||F(h)|| / ||h|| per layer and word, F(h) = layer(h) - h,
                    dL/dh the gradient of the summed NLL through the LSTM and decoder
Perplexities run over the valid stream as train.lm scores it (20 streams, windows of 35,
state carried), restricted to its first --limit words.
"""
import itertools
import math

import numpy as np

import tinyhw
import tinyhw.functional as F
from data.ptb import stream_batches
from nets import lesioned as lesioning
from tinyhw.backend import to_device
from train.lm_eval import evaluate

from .common import AnalysisError, Timer, report

BATCH, SEQ_LEN = 20, 35


def _valid_ids(setup, limit):
    """The first `limit` words of the valid split: enough for BATCH streams, or a clear error."""
    ids = setup.corpus.ids["valid"][:limit]
    if (len(ids) - 1) // BATCH < 1:
        raise AnalysisError(f"--limit {limit}: too few valid words for {BATCH} streams")
    return ids


def _windows(setup, limit):
    return stream_batches(_valid_ids(setup, limit), BATCH, SEQ_LEN)


def _features(setup, inputs):
    """Character-CNN features (T B, D) of a (T, B) window of word ids."""
    chars = tinyhw.Tensor(to_device(setup.corpus.chars(inputs), setup.device))
    return setup.model.cnn(chars.reshape(-1, chars.shape[-1]))


def _logits(model, y, steps, state):
    out, state = model.lstm(y.reshape(steps, -1, y.shape[-1]), state)
    return model.decoder(out.reshape(-1, out.shape[-1])), state


def perplexity(setup, limit, order=None, lesioned=()):
    """Valid perplexity (train.lm's evaluation) with the highway layers applied in `order`
    (default: as trained), the layers in `lesioned` lesioned (nets.lesioned: each outputs its
    input, its carry path)."""
    _valid_ids(setup, limit)
    with lesioning(setup.model.highways[k] for k in lesioned):
        return evaluate(setup.model, setup.corpus, "valid", BATCH, SEQ_LEN, setup.device,
                        limit=limit, order=order)


def _require_layers(setup, name, at_least):
    n = len(setup.model.highways)
    if n < at_least:
        raise AnalysisError(f"{name}: --checkpoint {setup.checkpoint} is a {setup.info['config']} "
                            f"char-LM with {n} highway layer(s); {name} needs at least "
                            f"{at_least}")
    return n


def estimation_error(setup, limit):
    """Per layer k: mean, std and mean |.| of a_k - A over words and units, std(A)."""
    n = _require_layers(setup, "estimation-error", 1)
    ids = setup.corpus.ids["valid"][:limit]
    sums = np.zeros((n, 3))                     # sum d, sum d^2, sum |d|
    a_sum, a_sq, units = 0.0, 0.0, 0
    with tinyhw.no_grad():
        for start in range(0, len(ids), 1000):
            words = ids[start:start + 1000]
            y = setup.model.cnn(tinyhw.Tensor(to_device(setup.corpus.chars(words), setup.device)))
            outputs = []
            for layer in setup.model.highways:
                y = layer(y)
                outputs.append(np.asarray(to_device(y.data, "cpu"), np.float64))
            final = outputs[-1]
            for k, a in enumerate(outputs):
                d = a - final
                sums[k] += (d.sum(), (d * d).sum(), np.abs(d).sum())
            a_sum, a_sq, units = a_sum + final.sum(), a_sq + (final * final).sum(), units + final.size
    a_std = math.sqrt(max(a_sq / units - (a_sum / units) ** 2, 0.0))
    layers = []
    for k in range(n):
        mean = sums[k, 0] / units
        std = math.sqrt(max(sums[k, 1] / units - mean * mean, 0.0))
        layers.append({"layer": k + 1, "name": f"highway{k + 1}", "mean": mean, "std": std,
                       "mean_abs": sums[k, 2] / units, "rel_std": std / a_std if a_std else None})
    result = {"words": len(ids), "a_std": a_std, "layers": layers}
    if n == 1:    # the zeros below would otherwise read like a finding
        result["note"] = ("one highway layer: its output is the stack's output A, so a_1 - A = 0 "
                          "by definition; the estimation error says nothing about this model")
    return result


def lesion(setup, limit):
    n = _require_layers(setup, "lesion", 1)
    intact = perplexity(setup, limit)
    return {"intact_ppl": intact, "none_lesioned_ppl": perplexity(setup, limit, lesioned=()),
            "layers": [{"layer": k + 1, "name": f"highway{k + 1}",
                        "ppl": perplexity(setup, limit, lesioned=(k,))} for k in range(n)]}


def shuffle(setup, limit):
    n = _require_layers(setup, "shuffle", 2)
    orders = list(itertools.permutations(range(n)))
    return {"orders": [{"order": [k + 1 for k in order], "ppl": perplexity(setup, limit, order)}
                       for order in orders]}


def iterative(setup, limit):
    """Per layer: cos(F(h), -dL/dh) and ||F(h)|| / ||h|| per word, summarised."""
    model = setup.model
    n = _require_layers(setup, "iterative", 1)
    cos, ratio = [[] for _ in range(n)], [[] for _ in range(n)]
    state = None
    for inputs, targets in _windows(setup, limit):
        h = _features(setup, inputs).detach()
        inputs_k, residuals = [], []
        for layer in model.highways:
            h.requires_grad = True
            h.retain_grad()
            y = layer(h)
            inputs_k.append(h)
            residuals.append(y.data - h.data)
            h = y
        logits, state = _logits(model, h, inputs.shape[0], state)
        state = tuple(s.detach() for s in state)
        target = tinyhw.Tensor(to_device(targets.reshape(-1), setup.device))
        F.cross_entropy(logits, target, "sum").backward()
        for k, (x, f) in enumerate(zip(inputs_k, residuals)):
            g = -np.asarray(to_device(x.grad, "cpu"), np.float64)
            f, hx = np.asarray(to_device(f, "cpu"), np.float64), np.asarray(
                to_device(x.data, "cpu"), np.float64)
            fn, gn, hn = (np.linalg.norm(a, axis=1) for a in (f, g, hx))
            ok = (fn > 0) & (gn > 0)
            cos[k].append((f * g).sum(axis=1)[ok] / (fn * gn)[ok])
            ratio[k].append(fn[hn > 0] / hn[hn > 0])
    model.zero_grad()
    return {"layers": [{"layer": k + 1, "name": f"highway{k + 1}",
                        "cosine": _summary(np.concatenate(cos[k])),
                        "norm_ratio": _summary(np.concatenate(ratio[k]))} for k in range(n)]}


def _summary(values):
    return {"mean": float(values.mean()), "std": float(values.std()), "count": int(values.size)}


ANALYSES = {"estimation_error": estimation_error, "lesion": lesion, "shuffle": shuffle,
            "iterative": iterative}


def compute(setup, name, limit):
    timer = Timer()
    result = {"analysis": name, **setup.info, "words_limit": limit,
              "stage": "the highway stack (its layers keep the shape)",
              **ANALYSES[name](setup, limit)}
    result["seconds"] = timer()
    return result


def rows(result):
    if "orders" in result:
        return [{"order": "-".join(map(str, o["order"])), "ppl": o["ppl"]}
                for o in result["orders"]]
    out = []
    for layer in result["layers"]:
        row = {"layer": layer["name"]}
        for key, value in layer.items():
            if isinstance(value, dict):
                row.update({f"{key}_{k}": v for k, v in value.items()})
            elif key not in ("layer", "name"):
                row[key] = value
        out.append(row)
    return out


def table(result):
    head = (f"{result['analysis'].replace('_', '-')} on the {result['config']} {result['variant']} "
            f"char-LM's highway layers (valid, first {result['words_limit'] or 'all'} words; "
            f"{result['seconds']:.0f} s)")
    lines = [head]
    if "note" in result:
        lines.append(f"  note: {result['note']}")
    if "intact_ppl" in result:
        lines.append(f"  intact perplexity {result['intact_ppl']:.2f}")
    for row in rows(result):
        lines.append("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in row.items()))
    return lines


def plot(result, plt):
    fig, ax = plt.subplots(figsize=(5, 3))
    data = rows(result)
    labels = [str(r.get("layer", r.get("order"))) for r in data]
    key = {"estimation_error": "std", "lesion": "ppl", "shuffle": "ppl",
           "iterative": "cosine_mean"}[result["analysis"]]
    ax.bar(labels, [r[key] for r in data])
    if "intact_ppl" in result:
        ax.axhline(result["intact_ppl"], color="k", ls="--", label="intact")
        ax.legend()
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(f"{result['analysis'].replace('_', ' ')}: {result['config']} "
                 f"{result['variant']} char-LM")
    return fig


def report_lm(setup, name, limit):
    """Compute analysis `name` on the char-LM of `setup` and write its files."""
    result = compute(setup, name, limit)
    return report(setup, result, rows(result), table(result), plot)
