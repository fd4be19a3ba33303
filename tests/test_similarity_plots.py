"""Heatmaps and bar charts are valid PNGs, written atomically."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from s3prl_redundancy.similarity.blocks import find_blocks
from s3prl_redundancy.similarity.plots import plot_all, plot_block_influence, plot_heatmap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def similarity(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, n, generator=g, dtype=torch.float64)
    s = (a + a.T) / 2
    s[:4, :4] += 0.5
    s.fill_diagonal_(1.5)
    return s


def read_png(path):
    import matplotlib.image

    data = open(path, "rb").read()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5_000  # a real figure, not an empty canvas
    return matplotlib.image.imread(path)


def leftovers(folder):
    return [p for p in os.listdir(folder) if ".tmp" in p]


def test_heatmap_png_with_and_without_blocks(tmp_path):
    s = similarity()
    plain = plot_heatmap(s, "cka", tmp_path / "plain.png")
    outlined = plot_heatmap(s, "cka", tmp_path / "blocks.png", blocks=find_blocks(s))
    a, b = read_png(plain), read_png(outlined)
    assert a.shape == b.shape and a.shape[0] > 300 and a.shape[1] > 300
    assert not np.array_equal(a, b)  # the block outlines are drawn
    red = (b[..., 0] > 0.9) & (b[..., 1] < 0.1) & (b[..., 2] < 0.1)
    assert red.sum() > 100 and ((a[..., 0] > 0.9) & (a[..., 1] < 0.1) & (a[..., 2] < 0.1)).sum() == 0
    assert leftovers(tmp_path) == []


def test_plot_all_and_block_influence(tmp_path):
    s = similarity(13)
    matrices = {"cosine": s / 2, "cka": s, "mknn": s.numpy() / 3, "block_influence": torch.rand(12)}
    path = plot_all(matrices, tmp_path / "sub" / "all.png", blocks={"cka": find_blocks(s)})
    wide = read_png(path)
    assert wide.shape[1] > 3 * wide.shape[0]  # four panels side by side
    bars = read_png(plot_block_influence(torch.rand(12), tmp_path / "bi.png"))
    assert bars.shape[0] > 200
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []


def test_failed_write_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "cka.png"
    plot_heatmap(similarity(), "first", target)
    before = target.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(PNG_MAGIC + b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_heatmap(similarity(seed=1), "second", target)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_invalid_inputs_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_heatmap(torch.rand(3, 4), "bad", tmp_path / "bad.png")
    with pytest.raises(ValueError, match="outside layers"):
        plot_heatmap(similarity(5), "bad", tmp_path / "bad.png", blocks=[(0, 2), (3, 7)])
    assert os.listdir(tmp_path) == []
