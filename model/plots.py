"""Figures of the project. Each function draws one figure into a PNG (matplotlib, Agg backend,
no window) and writes it atomically; matplotlib is imported inside so importing this module
costs nothing."""
from model.files import atomic_path


def _figure(nrows=1, ncols=1, size=(5.0, 4.0)):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False)
    return plt, fig, axes.ravel()


def _save(plt, fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_sparsification(path, panels, title=""):
    """Sparsification curves, one panel per uncertainty measure.

    panels: {panel title: {model label: (fractions, curve, oracle, ause)}}; the curve is
    solid, its oracle dashed in the same colour, AUSE in the legend."""
    plt, fig, axes = _figure(1, max(1, len(panels)))
    for ax, (name, curves) in zip(axes, panels.items()):
        for i, (label, (fractions, curve, oracle, ause)) in enumerate(curves.items()):
            colour = f"C{i}"
            ax.plot(fractions, curve, color=colour, label=f"{label} (AUSE {ause:.3f})")
            ax.plot(fractions, oracle, color=colour, linestyle="--", linewidth=1)
        ax.set_xlabel("fraction of people removed (most uncertain first)")
        ax.set_ylabel("mean error of the rest (1 - OKS)")
        ax.set_title(f"{name} (dashed: oracle)")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(plt, fig, path)


def plot_risk_coverage(path, panels, title=""):
    """AP against the fraction of people kept, one panel per uncertainty measure.

    panels: {panel title: {model label: (coverages, aps)}}."""
    plt, fig, axes = _figure(1, max(1, len(panels)))
    for ax, (name, curves) in zip(axes, panels.items()):
        for label, (coverage, ap) in curves.items():
            ax.plot(coverage, ap, marker="o", label=label)
        ax.set_xlabel("fraction of people kept (least uncertain)")
        ax.set_ylabel("keypoint AP on the people kept")
        ax.set_title(name)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(plt, fig, path)
