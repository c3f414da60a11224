"""Inspection plots of dataset examples (``tfds.show_examples`` style), with matplotlib's Agg backend.

An example is a dict as the PRNet builders yield (NumPy or eager tensors): ``image`` (256,256,3)
uint8 crop, ``landmarks_68`` (68, 2+) crop pixels (x right, y down), optionally ``posmap``
(256,256,3) crop pixels and ``source``.
"""

import numpy as np

from prnet.errors import DatasetError


def _np(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _title(example):
    src = example.get("source")
    if src is None:
        return ""
    src = _np(src)
    src = src.item() if getattr(src, "shape", None) == () else src
    return src.decode() if isinstance(src, bytes) else str(src)


def _draw(fig, example, row: int = 0, rows: int = 1):
    if "image" not in example:
        raise DatasetError("example has no 'image' feature")
    image = _np(example["image"])
    posmap = _np(example["posmap"]) if "posmap" in example else None
    lms = _np(example["landmarks_68"]) if "landmarks_68" in example else None
    cols = 4 if posmap is not None else 1
    ax = fig.add_subplot(rows, cols, row * cols + 1)
    ax.imshow(image)
    if lms is not None:
        ax.scatter(lms[:, 0], lms[:, 1], s=4, c="lime")
    ax.set_title(_title(example) or "image", fontsize=8)
    ax.axis("off")
    if posmap is not None:
        for c, name in enumerate("xyz"):
            ax = fig.add_subplot(rows, cols, row * cols + 2 + c)
            im = ax.imshow(posmap[..., c], cmap="viridis")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"posmap {name} (crop px)", fontsize=8)
            ax.axis("off")


def show_posmap_example(example, *, return_figure: bool = False):
    """Draw crop + landmarks and the posmap's x, y, z channels (UV layout).

    Returns an RGB uint8 ``(H, W, 3)`` rendering, or the matplotlib Figure if ``return_figure``.
    """
    return show_examples([example], return_figure=return_figure)


def show_examples(examples, *, return_figure: bool = False):
    """One row per example (an iterable of example dicts, e.g. ``tfds.as_numpy(ds.take(3))``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    examples = list(examples)
    if not examples:
        raise DatasetError("no examples to show")
    cols = 4 if "posmap" in examples[0] else 1
    fig = Figure(figsize=(3.2 * cols, 3.0 * len(examples)), dpi=80)
    canvas = FigureCanvasAgg(fig)
    for i, ex in enumerate(examples):
        _draw(fig, ex, i, len(examples))
    fig.tight_layout()
    if return_figure:
        return fig
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
