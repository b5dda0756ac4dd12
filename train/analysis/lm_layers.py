"""The layer-wise analyses on a char-LM: its highway stack is the one "stage" it has.

Kim et al.'s model runs every word's character-CNN features through 1 (small) or 2 (large)
highway layers before the LSTM. Those layers keep the shape, so the questions asked of a conv
stage apply to them unchanged:
  estimation-error  a_k - A per layer (A: the stack's output), over the words of the valid split,
                    as estimation.py defines it for conv nets (per feature, then averaged)
  lesion            valid perplexity with one layer replaced by the identity (its carry path)
  shuffle           valid perplexity with the layers in every other order (2 layers: swapped)
  iterative         per layer and word, with F(h) = layer(h) - h: cos_rest_of_net (the gradient
                    of the net without the layer, Jastrzebski et al.'s term, the headline),
                    cos_through_block and ||F(h)|| / ||h||, the loss the summed NLL through the
                    LSTM and decoder (train/analysis/iterative.py defines them)
Perplexities run over the valid stream as train.lm scores it (20 streams, windows of 35,
state carried), restricted to its first --limit words.
"""
import itertools

import numpy as np

import tinyhw
from data.ptb import stream_batches
from nets import lesioned as lesioning
from tinyhw.backend import to_device
from train.lm_eval import evaluate

from .common import AnalysisError, Timer, report
from .gradients import (DEFINITIONS, HEADLINE, backward_from_logits, cpu64, frozen, per_sample,
                        saturated, summary)
from .unit_errors import StageErrors

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


def layer_outputs(setup, ids):
    """For batches of 1000 words of `ids`: the list of every highway layer's output (words, D)."""
    with tinyhw.no_grad():
        for start in range(0, len(ids), 1000):
            words = ids[start:start + 1000]
            y = setup.model.cnn(tinyhw.Tensor(to_device(setup.corpus.chars(words), setup.device)))
            outputs = []
            for layer in setup.model.highways:
                y = layer(y)
                outputs.append(y.data)
            yield outputs


def estimation_error(setup, limit):
    """Per layer k: mean, std, mean |.| and rel_std of a_k - A with estimation.py's one
    definition (per feature over words, averaged over features), and std(A)."""
    n = _require_layers(setup, "estimation-error", 1)
    ids = setup.corpus.ids["valid"][:limit]
    errors = StageErrors(n)
    for outputs in layer_outputs(setup, ids):
        errors.add(outputs)
    a_std, units, layers = errors.summary([f"highway{k + 1}" for k in range(n)])
    layers = [{"layer": row.pop("block"), **row} for row in layers]
    result = {"words": len(ids), "a_std": a_std, "units": units, "layers": layers}
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


def _rest_gradient(model, k, u, steps, state, target):
    """dL_rest/du at u: the gradient of the summed NLL of the layers after layer k, the LSTM
    (from the window's carried `state`) and the decoder, fed u in place of layer k's output."""
    with tinyhw.enable_grad():
        leaf = tinyhw.Tensor(u, requires_grad=True)
        h = leaf
        for layer in model.highways[k + 1:]:
            h = layer(h)
        backward_from_logits(_logits(model, h, steps, state)[0], target)
    return leaf.grad


def iterative(setup, limit):
    """Per layer, over the words: cos_rest_of_net, cos_through_block and ||F(h)|| / ||h|| with
    F(h) = layer(h) - h (train/analysis/iterative.py; a lesioned layer is the identity, so
    shortcut(h) = h), the loss the summed NLL of the window, the state carried as train.lm does."""
    model = setup.model
    if model.variant == "plain":   # as iterative.compute refuses image nets without shortcuts
        raise AnalysisError(f"iterative needs layers with a carry path (F(h) = layer(h) - h); "
                            f"--checkpoint {setup.checkpoint} is a plain char-LM, whose layer "
                            f"relu(W h + b) has none")
    n = _require_layers(setup, "iterative", 1)
    values = [{key: [] for key in DEFINITIONS if key != "F"} for _ in range(n)]
    state, saturated_words = None, 0
    with frozen(model):
        for inputs, targets in _windows(setup, limit):
            steps, target = inputs.shape[0], targets.reshape(-1)
            with tinyhw.no_grad():
                features = _features(setup, inputs).data
            with tinyhw.enable_grad():
                h = tinyhw.Tensor(features, requires_grad=True)
                layer_inputs, layer_outputs = [], []
                for layer in model.highways:
                    h.retain_grad()
                    layer_inputs.append(h)
                    h = layer(h)
                    layer_outputs.append(h)
                logits, next_state = _logits(model, h, steps, state)
                backward_from_logits(logits, target)
            saturated_words += int(saturated(logits.data, to_device(target, setup.device)).sum())
            for k, (x, y) in enumerate(zip(layer_inputs, layer_outputs)):
                g_rest = _rest_gradient(model, k, x.data, steps, state, target)
                arrays = (cpu64(x.data), cpu64(y.data - x.data), cpu64(x.grad), cpu64(g_rest))
                for key, v in per_sample(*arrays).items():
                    values[k][key].append(v)
            state = tuple(s.detach() for s in next_state)
    return {"headline": HEADLINE, "definitions": DEFINITIONS, "saturated_words": saturated_words,
            "layers": [{"layer": k + 1, "name": f"highway{k + 1}",
                        **{key: summary(np.concatenate(v)) for key, v in values[k].items()}}
                       for k in range(n)]}


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
    for row in rows(result):   # the percentiles and counts are in the CSV and JSON
        shown = {k: v for k, v in row.items() if not k.endswith(("_p5", "_p95", "_count",
                                                                  "_undefined"))}
        lines.append("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in shown.items()))
    return lines


def plot(result, plt):
    fig, ax = plt.subplots(figsize=(5, 3))
    data = rows(result)
    labels = [str(r.get("layer", r.get("order"))) for r in data]
    key = {"estimation_error": "std", "lesion": "ppl", "shuffle": "ppl",
           "iterative": "cos_rest_of_net_mean"}[result["analysis"]]
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
