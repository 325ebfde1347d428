"""Figures of the project. Each function draws one figure into a PNG (matplotlib, Agg backend,
no window) and writes it atomically; matplotlib is imported inside _figure so that importing
this module (every reporting module does) neither loads matplotlib nor picks its backend."""
import numpy as np

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


# ------------------------------------------------------------------ experiment summary figures
# (model.report): the AP table, training curves and example predictions.

def plot_ap_heatmap(path, panels, row_labels, col_labels, title=""):
    """Annotated AP heatmaps side by side on one colour scale.

    panels: {panel title: (rows, cols) array-like of AP, NaN where there is no number};
    a NaN cell is drawn grey and labelled n/a, never coloured as a value."""
    plt, fig, axes = _figure(1, max(1, len(panels)), size=(1.1 * len(col_labels) + 2.2,
                                                           0.6 * len(row_labels) + 1.6))
    values = [np.asarray(m, np.float64) for m in panels.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    vmax = max(0.1, float(finite.max())) if finite.size else 1.0
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#d0d0d0")
    image = None
    for ax, (name, m) in zip(axes, zip(panels, values)):
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0.0, vmax=vmax,
                          aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            text = f"{v:.3f}" if np.isfinite(v) else "n/a"
            dark_cell = np.isfinite(v) and v < 0.55 * vmax
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark_cell else "black")
        ax.set_xticks(range(len(col_labels)), col_labels, rotation=25, ha="right")
        ax.set_yticks(range(len(row_labels)), row_labels if ax is axes[0] else [])
        ax.set_xlabel("model")
        if ax is axes[0]:
            ax.set_ylabel("test domain")
        ax.set_title(name)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="keypoint AP", shrink=0.8)
    if title:
        fig.suptitle(title)
    # tight_layout ignores a colorbar shared by several axes; constrained placement is kept
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_curves(path, panels, title="", xlabel="epoch"):
    """Line plots against the epoch, one panel each.

    panels: {panel title: {"ylabel": str, "log": bool, "series": {label: (x, y)}}};
    labels starting with "val" are dashed, so train and validation of one run pair up."""
    plt, fig, axes = _figure(1, max(1, len(panels)))
    for ax, (name, panel) in zip(axes, panels.items()):
        for label, (x, y) in panel["series"].items():
            ax.plot(x, y, marker="o", markersize=3, label=label,
                    linestyle="--" if label.startswith("val") else "-")
        if panel.get("log"):
            ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if panel["series"]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(plt, fig, path)


def plot_image_grid(path, rows, title=""):
    """Images in a grid: rows = [(row label, [(RGB uint8 image, caption), ...])]; a row with
    fewer images leaves its last cells empty."""
    ncols = max([1] + [len(images) for _, images in rows])
    plt, fig, axes = _figure(max(1, len(rows)), ncols, size=(3.4, 2.9))
    axes = axes.reshape(max(1, len(rows)), ncols)
    for r, (label, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                image, caption = images[c]
                ax.imshow(image)
                ax.set_title(caption, fontsize=8)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=10)
    if title:
        fig.suptitle(title)
    _save(plt, fig, path)
