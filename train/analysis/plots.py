"""Figures, drawn only when matplotlib is installed (the optional extra `plot`).

Every analysis module has `plot(result, plt)` returning a matplotlib Figure; `save` imports
matplotlib (headless, Agg backend) on each call, so a missing matplotlib costs the figure, never
the numbers.
"""


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib cannot be imported."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(plot, result, path):
    """Draw `plot(result, plt)` into `path` (PNG). Returns False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig = plot(result, plt)
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return True


def stage_axes(plt, count, width=3.6, height=3.0):
    """One row of `count` panels (a list even when count is 1)."""
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return fig, list(axes[0])
