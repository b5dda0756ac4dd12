"""Gate statistics of highway nets (Srivastava et al. 2015, Sec. 4.1 and Figs. 2-3).

Image highway nets: for every highway block, its transform gate T(x) in (0, 1) on the val set:
    mean             mean T over images, channels and positions (0 = carry only, 1 = transform)
    channel_mean     mean T per channel
    frac_open        per image, the fraction of its gate units (channel x position) with T > 0.5;
                     summarised over images by mean, std and percentiles
    by class         mean T per class, and per class and channel the deviation of the class's mean
                     from the all-class mean (Srivastava et al. Fig. 3: gates route per class);
                     `class_rms` sums that deviation up as its root mean square
    hist             a 20-bin histogram of every T value
    mostly_closed / mostly_open   the fraction of channels with mean T < 0.1 / > 0.9
The gates of a block are computed on the same input as its forward pass, once per batch.

Char-LM (Kim et al.): the same numbers for each highway layer and each gate it has (T for
t_only/coupled/full, C for c_only/full; a c_only layer has no T, and its C is the carry gate,
so C near 1 means "carry the input"). Over the first --limit words of the validation stream.
Classes do not apply to a language model; in their place each gate is averaged per train-set
frequency bucket of the input word (the 10 most frequent words, ranks 11-100, 101-1000, rarer).
"""
import numpy as np

import tinyhw
from tinyhw.backend import to_device

from .common import AnalysisError, Timer, block_names, report, setup as make_setup
from .plots import stage_axes

NAME = "gates"
BINS = 20
BUCKETS = ((0, 10, "top 10"), (10, 100, "11-100"), (100, 1000, "101-1000"),
           (1000, None, ">1000"))


def _cpu(tensor):
    return np.asarray(to_device(tensor.data, "cpu"), dtype=np.float64)


class GateStats:
    """Running statistics of one gate; `add(g, groups)` takes g (N, units, ...) and a group
    index per sample (a class, or a frequency bucket)."""

    def __init__(self, groups):
        self.groups = groups
        self.unit_sum, self.group_sum, self.group_count = None, None, np.zeros(groups)
        self.open_fraction, self.hist, self.n = [], np.zeros(BINS, np.int64), 0

    def add(self, g, group):
        per_unit = g.reshape(g.shape[0], g.shape[1], -1).mean(axis=2)    # (N, units)
        if self.unit_sum is None:
            self.unit_sum = np.zeros(per_unit.shape[1])
            self.group_sum = np.zeros((self.groups, per_unit.shape[1]))
        self.unit_sum += per_unit.sum(axis=0)
        np.add.at(self.group_sum, group, per_unit)
        np.add.at(self.group_count, group, 1)
        self.open_fraction.append((g > 0.5).reshape(g.shape[0], -1).mean(axis=1))
        self.hist += np.histogram(g, bins=BINS, range=(0.0, 1.0))[0]
        self.n += g.shape[0]

    def summary(self, group_names):
        unit_mean = self.unit_sum / self.n
        opened = np.concatenate(self.open_fraction)
        seen = self.group_count > 0
        group_mean = np.full_like(self.group_sum, np.nan)
        group_mean[seen] = self.group_sum[seen] / self.group_count[seen, None]
        deviation = group_mean - unit_mean
        return {"mean": float(unit_mean.mean()), "units": int(unit_mean.size),
                "unit_mean": unit_mean.tolist(),
                "mostly_closed": float((unit_mean < 0.1).mean()),
                "mostly_open": float((unit_mean > 0.9).mean()),
                "frac_open": {"mean": float(opened.mean()), "std": float(opened.std()),
                              **{f"p{q}": float(np.percentile(opened, q)) for q in (5, 50, 95)}},
                "groups": group_names, "group_count": self.group_count.astype(int).tolist(),
                "group_mean": [float(np.nanmean(r)) if s else None
                               for r, s in zip(group_mean, seen)],
                "group_unit_deviation": deviation.tolist(),
                "group_rms": float(np.sqrt(np.nanmean(deviation ** 2))) if seen.any() else None,
                "hist": self.hist.tolist(), "samples": self.n}


# ---- image nets -----------------------------------------------------------------------------
def image_gates(setup):
    """{"blocks": [...]} with the GateStats summary of every highway block."""
    net = setup.model
    if not any(b.kind == "highway" for b in net.blocks()):
        raise AnalysisError(f"gates needs a net with gates (a highway net, or a char-LM with "
                            f"gated highway layers); --checkpoint {setup.checkpoint} holds "
                            f"{setup.info['arch']}, whose blocks are {net.blocks()[0].kind}")
    classes = setup.loader.dataset.classes
    stats = {}
    with tinyhw.no_grad():
        for x, y in setup.batches():
            h = net.stem(x)
            for s, stage in enumerate(net.stages):
                for k, block in enumerate(stage):
                    if block.kind != "highway":
                        h = block(h)
                        continue
                    t = block.gate(h)      # the forward pass's own gate, computed once
                    stats.setdefault((s, k), GateStats(len(classes))).add(_cpu(t), y)
                    h = block.combine(block.transform(h), block.shortcut(h), t)
    names = block_names(net)
    return [{"stage": s + 1, "block": k + 1, "name": names[s][k], "gate": "T",
             **st.summary(classes)} for (s, k), st in sorted(stats.items())]


# ---- char-LM ----------------------------------------------------------------------------------
def frequency_buckets(corpus):
    """Per word index, its bucket in BUCKETS by frequency rank in the train split."""
    counts = np.bincount(corpus.ids["train"], minlength=len(corpus.vocab.words))
    rank = np.empty(len(counts), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    bucket = np.zeros(len(counts), np.int64)
    for b, (low, _, _) in enumerate(BUCKETS):
        bucket[rank >= low] = b
    return bucket


def lm_gates(setup, limit=None, batch_size=None):
    """GateStats summaries per highway layer and gate of a char-LM, over the valid stream."""
    model, corpus = setup.model, setup.corpus
    if model.variant not in ("t_only", "c_only", "coupled", "full"):
        raise AnalysisError(f"gates: --checkpoint {setup.checkpoint} is a char-LM with "
                            f"{model.variant!r} highway layers, which have no gates")
    ids = corpus.ids["valid"][:limit]
    bucket = frequency_buckets(corpus)
    names = [name for _, _, name in BUCKETS]
    stats = {}
    with tinyhw.no_grad():
        for start in range(0, len(ids), batch_size or 1000):
            words = ids[start:start + (batch_size or 1000)]
            y = model.cnn(tinyhw.Tensor(to_device(corpus.chars(words), setup.device)))
            for layer_index, layer in enumerate(model.highways):
                for gate, g in zip(("T", "C"), layer.gates(y)):
                    if g is not None:
                        stats.setdefault((layer_index, gate), GateStats(len(BUCKETS))).add(
                            _cpu(g), bucket[words])
                y = layer(y)
    return len(ids), [{"layer": i + 1, "name": f"highway{i + 1}", "gate": gate,
                       **st.summary(names)} for (i, gate), st in sorted(stats.items())]


def compute(setup, limit=None, batch_size=None):
    """The gates result of an image highway net or a gated char-LM."""
    timer = Timer()
    if setup.family == "image":
        result = {"analysis": NAME, **setup.info, "groups_are": "classes",
                  "blocks": image_gates(setup)}
    else:
        words, layers = lm_gates(setup, limit, batch_size)
        present = sorted({layer["gate"] for layer in layers})
        absent = [g for g in ("T", "C") if g not in present]
        result = {"analysis": NAME, **setup.info, "words": words, "blocks": layers,
                  "groups_are": "train-frequency buckets of the input word",
                  "gates_present": present, "gates_absent": absent,
                  "note": f"variant {setup.model.variant}: gate(s) {', '.join(absent) or 'none'} "
                          "absent; by-class patterns do not apply to a language model, so the "
                          "gates are grouped by the input word's train-frequency rank instead"}
    result["seconds"] = timer()
    return result


def rows(result):
    out = []
    for b in result["blocks"]:
        base = {"name": b["name"], "gate": b["gate"], "mean": b["mean"],
                "frac_open_mean": b["frac_open"]["mean"], "frac_open_std": b["frac_open"]["std"],
                "mostly_closed": b["mostly_closed"], "mostly_open": b["mostly_open"],
                "group_rms": b["group_rms"]}
        for group, mean, count in zip(b["groups"], b["group_mean"], b["group_count"]):
            out.append({**base, "group": group, "group_count": count, "group_mean": mean})
    return out


def table(result):
    what = f"{result['words']} valid words" if "words" in result else f"{result['images']} images"
    lines = [f"gate statistics over {what} ({result['seconds']:.1f} s); groups: "
             f"{result['groups_are']}"]
    if result.get("note"):
        lines.append(result["note"])
    lines.append(f"{'layer':>10} {'gate':>4} {'mean':>6} {'open>0.5':>9} {'±':>5} "
                 f"{'<0.1':>5} {'>0.9':>5} {'group rms':>9}  group means")
    for b in result["blocks"]:
        groups = " ".join(f"{m:.3f}" if m is not None else "-" for m in b["group_mean"])
        lines.append(f"{b['name']:>10} {b['gate']:>4} {b['mean']:6.3f} "
                     f"{b['frac_open']['mean']:9.3f} {b['frac_open']['std']:5.3f} "
                     f"{b['mostly_closed']:5.2f} {b['mostly_open']:5.2f} "
                     f"{b['group_rms'] or 0:9.4f}  {groups}")
    return lines


def plot(result, plt):
    blocks = result["blocks"]
    fig, (ax1, ax2, ax3) = stage_axes(plt, 3, width=4.4, height=3.6)
    x = np.arange(len(blocks))
    labels = [f"{b['name']}:{b['gate']}" for b in blocks]
    ax1.bar(x - 0.2, [b["mean"] for b in blocks], 0.4, label="mean gate")
    ax1.bar(x + 0.2, [b["frac_open"]["mean"] for b in blocks], 0.4,
            yerr=[b["frac_open"]["std"] for b in blocks], label="fraction > 0.5 per sample")
    ax1.set_xticks(x, labels, rotation=60, fontsize=7)
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=7)
    ax1.set_title("gate activity", fontsize=9)
    edges = np.linspace(0, 1, BINS + 1)
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, len(blocks)))
    for b, label, colour in zip(blocks, labels, colours):
        hist = np.asarray(b["hist"], float)
        ax2.plot(0.5 * (edges[1:] + edges[:-1]), hist / max(hist.sum(), 1), color=colour,
                 label=label)
    if len(blocks) <= 12:
        ax2.legend(fontsize=6)
    ax2.set_xlabel("gate value")
    ax2.set_ylabel("fraction of units")
    ax2.set_title("gate values (dark: first layer)", fontsize=9)
    deviation = np.array([[np.nan if m is None else m - b["mean"] for m in b["group_mean"]]
                          for b in blocks]).T
    bound = np.nanmax(np.abs(deviation)) if np.isfinite(deviation).any() else 1.0
    image = ax3.imshow(deviation, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax3.set_xticks(x, labels, rotation=60, fontsize=7)
    ax3.set_yticks(range(len(blocks[0]["groups"])), blocks[0]["groups"], fontsize=7)
    ax3.set_title(f"group mean - mean ({result['groups_are']})", fontsize=8)
    fig.colorbar(image, ax=ax3)
    return fig


def run(args):
    setup = make_setup(args, NAME, families=("image", "lm"))
    result = compute(setup, args.limit, args.batch_size)
    return report(setup, result, rows(result), table(result), plot)
