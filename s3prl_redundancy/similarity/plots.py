"""Figures of similarity matrices and block-influence vectors (PNG, matplotlib Agg).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas (no pyplot
global state, safe in headless and threaded runs) and written atomically by
:func:`s3prl_redundancy.io.save_figure`, so a reader never sees a half-written PNG and a
failed write leaves the previous file intact.  Layer 0 is the transformer input,
as in s3prl's hidden states.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["plot_heatmap", "plot_all", "plot_block_influence", "save_figure_atomic"]

BlockSpec = Optional[Sequence[Tuple[int, int]]]
_AXIS_LABEL = "layer (0 = transformer input)"


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor (any dtype / device)
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _block_list(blocks: Any) -> Optional[Sequence[Tuple[int, int]]]:
    """Accept a list of (first, last) pairs or anything with a ``.blocks`` attribute."""
    if blocks is None:
        return None
    return list(getattr(blocks, "blocks", blocks))


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure_atomic(fig: Any, path: Union[str, os.PathLike], dpi: int = 120) -> str:
    """Write ``fig`` to ``path`` atomically (:func:`s3prl_redundancy.io.save_figure`); returns the path as a string."""
    from ..io import save_figure

    return os.fspath(save_figure(fig, path, dpi=dpi))


def _draw_heatmap(ax: Any, matrix: np.ndarray, title: str, blocks: BlockSpec, annotate: Optional[bool]) -> Any:
    from matplotlib.patches import Rectangle

    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{title}: expected a square (L, L) matrix, got shape {matrix.shape}")
    n = matrix.shape[0]
    finite = matrix[np.isfinite(matrix)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    image = ax.imshow(
        np.ma.masked_invalid(matrix), cmap="viridis", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest"
    )
    step = max(1, math.ceil(n / 25))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel(_AXIS_LABEL)
    ax.set_ylabel(_AXIS_LABEL)
    ax.set_title(title)
    if annotate if annotate is not None else n <= 13:
        mid = (vmin + vmax) / 2
        for i in range(n):
            for j in range(n):
                if np.isfinite(matrix[i, j]):
                    colour = "black" if matrix[i, j] > mid else "white"
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    for first, last in blocks or ():
        if not (0 <= first <= last < n):
            raise ValueError(f"{title}: block ({first}, {last}) is outside layers 0..{n - 1}")
        size = last - first + 1
        ax.add_patch(Rectangle((first - 0.5, first - 0.5), size, size, fill=False, edgecolor="red", linewidth=2.0))
    return image


def _draw_bars(ax: Any, vector: np.ndarray, title: str) -> None:
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"{title}: expected a non-empty vector, got shape {vector.shape}")
    layers = np.arange(1, vector.size + 1)
    ax.bar(layers, vector, color="tab:blue")
    ax.set_xlabel("transformer layer l (maps hidden state l-1 to l)")
    ax.set_ylabel("block influence 1 - cos")
    ax.set_xticks(list(layers[:: max(1, math.ceil(vector.size / 25))]))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def plot_heatmap(
    matrix: Any,
    title: str,
    path: Union[str, os.PathLike],
    blocks: Any = None,
    annotate: Optional[bool] = None,
    dpi: int = 120,
) -> str:
    """Heatmap of an (L, L) matrix with a colourbar and optional block outlines; returns the path."""
    m = _array(matrix)
    fig = _new_figure(6.0, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    image = _draw_heatmap(ax, m, title, _block_list(blocks), annotate)
    fig.colorbar(image, ax=ax, shrink=0.85)
    return save_figure_atomic(fig, path, dpi=dpi)


def plot_all(
    matrices: Mapping[str, Any],
    path: Union[str, os.PathLike],
    blocks: Any = None,
    dpi: int = 120,
) -> str:
    """All metrics side by side in one figure; 1-D entries (block influence) become bar charts.

    ``blocks``: one block list for every heatmap, or a mapping metric name -> block list
    (or :class:`~.blocks.BlockStructure`).
    """
    if not matrices:
        raise ValueError("plot_all needs at least one matrix")
    names = list(matrices)
    fig = _new_figure(5.0 * len(names), 4.6)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        values = _array(matrices[name])
        if values.ndim == 1:
            _draw_bars(ax, values, name)
            continue
        spec = blocks.get(name) if isinstance(blocks, Mapping) else blocks
        image = _draw_heatmap(ax, values, name, _block_list(spec), annotate=False)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return save_figure_atomic(fig, path, dpi=dpi)


def plot_block_influence(
    vector: Any, path: Union[str, os.PathLike], title: str = "block influence", dpi: int = 120
) -> str:
    """Bar chart of the per-layer block influence ``BI_l``; returns the path."""
    fig = _new_figure(6.0, 3.6)
    _draw_bars(fig.add_subplot(1, 1, 1), _array(vector), title)
    return save_figure_atomic(fig, path, dpi=dpi)
