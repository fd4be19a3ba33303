"""A layer plan, bridges and techniques applied to a checkpoint, and the output folder they are written to.

Order of operations: remove layers (``layers.prune_checkpoint``), put bridges over the removed
runs, then apply the techniques in the order given (``heads``, ``lowrank``, ``magnitude``). Everything
runs in memory; nothing is written until :func:`write_output`, which writes ``pruned.pt``,
``manifest.json`` and ``scores.png`` atomically into an :class:`~s3prl_redundancy.io.OutputDir` of the
command ``prune`` (checked by :func:`output_dir` before any model is loaded).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserInputError
from ..families import FAMILIES
from .strategies import LayerPlan, _jsonable
from .structure import META_KEY, family_of, structure_of

CHECKPOINT_NAME = "pruned.pt"
MANIFEST_NAME = "manifest.json"
PLOT_NAME = "scores.png"
OUTPUT_NAMES = (CHECKPOINT_NAME, MANIFEST_NAME, PLOT_NAME)


def parse_techniques(spec: Optional[str]) -> Tuple[str, ...]:
    if spec is None or not str(spec).strip():
        return ()
    items = [s.strip() for s in str(spec).split(",") if s.strip()]
    unknown = [t for t in items if t not in TECHNIQUES]
    if unknown:
        raise UserInputError(f"`technique`: unknown {', '.join(map(repr, unknown))}; use {', '.join(TECHNIQUES)} (comma-separated)")
    if len(set(items)) != len(items):
        raise UserInputError(f"`technique` lists a technique twice: {spec!r}")
    return tuple(items)


@dataclass
class TechniqueOptions:
    techniques: Tuple[str, ...] = ()
    heads_drop: Optional[int] = None
    heads_ratio: Optional[float] = None
    head_importance: str = "output-norm"
    min_heads_per_layer: int = 1
    rank: Optional[int] = None
    energy: Optional[float] = None
    lowrank_modules: Optional[str] = None
    sparsity: Optional[float] = None
    magnitude_scope: str = "module"

    def validate(self, has_data: bool) -> None:
        """Check the options before any heavy work; every message names the argument to fix."""
        from .head_pruning import IMPORTANCE
        from .low_rank import parse_modules

        t = set(self.techniques)
        stray = [flag for flag, value, tech in (
            ("`heads_drop`", self.heads_drop, "heads"), ("`heads_ratio`", self.heads_ratio, "heads"),
            ("`rank`", self.rank, "lowrank"), ("`energy`", self.energy, "lowrank"),
            ("`lowrank_modules`", self.lowrank_modules, "lowrank"), ("`sparsity`", self.sparsity, "magnitude"),
        ) if value is not None and tech not in t]
        if stray:
            raise UserInputError(f"{', '.join(stray)} given but `technique` does not include the technique it belongs to")
        if "heads" in t:
            if (self.heads_drop is None) == (self.heads_ratio is None):
                raise UserInputError("`technique` heads needs exactly one of `heads_drop` N or `heads_ratio` R")
            if self.head_importance not in IMPORTANCE:
                raise UserInputError(f"`head_importance` must be one of {', '.join(IMPORTANCE)}")
            if self.head_importance == "output-norm" and not has_data:
                raise UserInputError(
                    "`technique` heads with `head_importance` output-norm measures heads on audio: pass `data` DIR, "
                    "or use `head_importance` weight-norm (no data)"
                )
        if "lowrank" in t:
            if (self.rank is None) == (self.energy is None):
                raise UserInputError("`technique` lowrank needs exactly one of `rank` R or `energy` E")
            if self.rank is not None and self.rank < 1:
                raise UserInputError(f"`rank` must be at least 1, got {self.rank}")
            if self.energy is not None and not 0 < self.energy <= 1:
                raise UserInputError(f"`energy` must be in (0, 1], got {self.energy}")
            parse_modules(self.lowrank_modules)
        if "magnitude" in t:
            if self.sparsity is None:
                raise UserInputError("`technique` magnitude needs `sparsity` S (fraction of weights set to zero)")
            if not 0 < self.sparsity < 1:
                raise UserInputError(f"`sparsity` must be strictly between 0 and 1, got {self.sparsity}")
            if self.magnitude_scope not in ("module", "global"):
                raise UserInputError("`magnitude_scope` must be module or global")


@dataclass
class Compressed:
    checkpoint: Dict[str, Any]
    manifest: Dict[str, Any]
    plan: Optional[LayerPlan] = None
    head_scores: Optional[Dict[int, Dict[int, float]]] = None
    removed_heads: List[Tuple[int, int]] = field(default_factory=list)
    lowrank: Optional[Dict[str, Any]] = None
    magnitude: Optional[Dict[str, Any]] = None


def _base_meta(ckpt: Mapping[str, Any], source: str) -> Dict[str, Any]:
    from .layers import count_parameters

    fam = FAMILIES[family_of(ckpt)]
    if ckpt.get(META_KEY):
        return dict(ckpt[META_KEY])
    n = fam.num_layers(ckpt)
    return {"format_version": 1, "family": fam.name, "source": source, "source_num_layers": n,
            "keep_layers": list(range(n)), "removed_layers": [], "parameters_before": count_parameters(fam.weights(ckpt))}


class _Work:
    """A compression in progress: the checkpoint so far, its live model (loaded on first use, converted to
    per-head attention when a step needs it), and what the steps record (``meta``, ``steps``, ``manifest``)."""

    def __init__(self, ckpt: Mapping[str, Any], source: str) -> None:
        from .layers import source_layers

        self.source_ckpt = ckpt
        self.family = family_of(ckpt)
        self.present = source_layers(ckpt, FAMILIES[self.family])  # source id of each position of ckpt
        self.meta = _base_meta(ckpt, source)
        self.steps: List[Dict[str, Any]] = list(self.meta.get("compression", []))
        self.manifest: Dict[str, Any] = {}
        self.current: Dict[str, Any] = dict(ckpt)
        self.live = None
        self.converted = False

    def live_model(self):
        from .structure import load_model

        if self.live is None:
            self.live = load_model(self.current)
        return self.live

    def ensure_converted(self) -> None:
        from .structure import convert_attention

        if not self.converted:
            convert_attention(self.live_model(), self.family)
            self.converted = True

    def snapshot(self) -> Dict[str, Any]:
        """The current live model as a checkpoint (structure only if converted)."""
        from .structure import describe_structure, model_to_checkpoint

        m = self.live_model()
        structure = describe_structure(m, self.family, list(self.meta["keep_layers"])) if self.converted else None
        return model_to_checkpoint(m, self.current, self.meta, structure)

    def record(self, step: Dict[str, Any], key: str, entry: Any) -> None:
        """One step for the checkpoint's ``compression`` list and its entry ``key`` in the manifest."""
        self.steps.append(step)
        self.manifest[key] = entry

    def remove_layers(self, plan: LayerPlan, source: str) -> None:
        from .layers import prune_checkpoint

        if structure_of(self.source_ckpt) is not None:
            raise UserInputError(
                "the checkpoint already has compressed structure (heads / low rank / bridges); remove layers from the "
                "plain checkpoint first, then apply techniques"
            )
        present = self.present
        keep_source = [present[p] for p in plan.keep]
        self.current = prune_checkpoint(self.source_ckpt, keep_source, source=source, family=self.family)
        self.meta = dict(self.current[META_KEY], compression=self.steps)
        entry = plan.to_dict()
        if present != list(range(len(present))):
            entry["source_ids_of_positions"] = present
        self.record({"technique": "layers", "strategy": plan.strategy, "keep_layers": keep_source,
                     "removed_layers": sorted(present[p] for p in plan.remove)}, "plan", entry)

    def add_bridges(self, plan: LayerPlan, ridge: float, data, holdout_data, fitted, batch_size: int, progress: bool) -> None:
        """Linear bridges over the removed runs (fitted on ``data`` unless in ``fitted``), measured on ``holdout_data``."""
        from .bridges import collect_run_statistics, compare_outputs, fit_bridges, insert_bridges, output_frames, removed_runs
        from .structure import make_upstream

        present = self.present
        runs = removed_runs(plan.keep, len(present))
        fits = {run: dict(fitted[run]) for run in runs if fitted and run in fitted}
        missing = [run for run in runs if run not in fits]
        if missing:
            if data is None:
                raise UserInputError("`bridge` linear is fitted on audio: pass `data` DIR")
            fits.update(fit_bridges(collect_run_statistics(make_upstream(self.source_ckpt), data, missing, batch_size, progress),
                                    ridge))
        plain_ckpt = dict(self.current)
        self.ensure_converted()
        insert_bridges(self.live_model(), self.family, plan.keep, len(present), fits, source_ids=present)
        info = {"runs": [[present[a], present[b]] for a, b in runs], "ridge": ridge,
                "frames": {f"{present[a]}-{present[b]}": fits[(a, b)]["info"]["frames"] for a, b in runs}}
        if holdout_data is not None:
            ref = output_frames(make_upstream(self.source_ckpt), holdout_data, batch_size)
            plain = output_frames(make_upstream(plain_ckpt), holdout_data, batch_size)
            bridged = output_frames(make_upstream(self.snapshot()), holdout_data, batch_size)
            info["held_out"] = dict(compare_outputs(ref, {"plain_removal": plain, "bridged": bridged}),
                                    utterances=len(holdout_data), frames=int(ref.shape[0]))
        self.record({"technique": "bridge", "kind": "linear", "runs": info["runs"], "ridge": ridge}, "bridges", info)

    def finish(self) -> Dict[str, Any]:
        from .layers import count_parameters

        out = self.snapshot() if self.live is not None else self.current
        meta = dict(out[META_KEY])
        meta["compression"] = self.steps
        meta["parameters_after"] = count_parameters(FAMILIES[self.family].weights(out))
        out[META_KEY] = meta
        return out


def compress(
    ckpt: Mapping[str, Any],
    *,
    source: str,
    plan: Optional[LayerPlan] = None,
    bridge: Optional[str] = None,
    bridge_ridge: float = 1e-4,
    bridge_data=None,
    bridge_holdout_data=None,
    bridge_fits: Optional[Mapping[Tuple[int, int], Mapping[str, Any]]] = None,
    techniques: TechniqueOptions = TechniqueOptions(),
    data=None,
    batch_size: int = 4,
    progress: bool = False,
) -> Compressed:
    """Apply ``plan`` (positions of ``ckpt``'s layers), a bridge kind and ``techniques`` to ``ckpt``.

    ``bridge_fits``: already fitted bridges ``{(first, last): fit}`` (from :func:`bridges.fit_bridges` on the
    same source model); runs missing from it are fitted on ``bridge_data``."""
    if bridge is not None and plan is None:
        raise UserInputError("`bridge` replaces removed layers: it needs layers to remove (`strategy`/`keep_layers`)")
    if plan is None and not techniques.techniques:
        raise UserInputError("nothing to do: give a layer target (`strategy` with `drop`/`keep`/..., or `keep_layers`) and/or `technique`")
    if bridge not in (None, "linear"):
        raise UserInputError(f"`bridge` {bridge!r}: the only bridge is 'linear'")
    work = _Work(ckpt, source)
    if plan is not None:
        work.remove_layers(plan, source)
    if structure_of(work.current) is not None:
        work.ensure_converted()  # the loaded model already has compressed modules
    if bridge == "linear":
        work.add_bridges(plan, bridge_ridge, bridge_data, bridge_holdout_data, bridge_fits, batch_size, progress)
    result = Compressed(checkpoint={}, manifest=work.manifest, plan=plan)
    for name in techniques.techniques:
        TECHNIQUE_CLASSES[name]().apply(work, techniques, result, data, batch_size, progress)
    result.checkpoint = work.finish()
    return result


# --------------------------------------------------------------------------------------
# Techniques: one class each (apply, manifest entry, plot panel); adding one adds a class
# --------------------------------------------------------------------------------------
class Technique:
    """A compression technique applied to the live model of a :class:`_Work`."""

    name: str = ""

    def apply(self, work: _Work, options: TechniqueOptions, result: Compressed, data, batch_size: int, progress: bool) -> None:
        """Change ``work``'s model, record the step and the manifest entry (``work.record``), fill ``result``."""
        raise NotImplementedError

    def has_panel(self, result: Compressed) -> bool:
        """Whether ``result`` has something of this technique to plot."""
        return False

    def plot_panel(self, fig, ax, result: Compressed) -> None:
        raise NotImplementedError


class HeadPruning(Technique):
    name = "heads"

    def apply(self, work, options, result, data, batch_size, progress):
        from .head_pruning import output_norm_importance, prune_heads, select_heads, weight_norm_importance
        from .structure import make_upstream

        work.ensure_converted()
        if options.head_importance == "output-norm":
            scores = output_norm_importance(make_upstream(work.snapshot()), work.family, data, batch_size, progress)
        else:
            scores = weight_norm_importance(work.live_model())
        choice = select_heads(scores, options.heads_drop, options.heads_ratio, options.min_heads_per_layer)
        change = prune_heads(work.live_model(), choice["keep"])
        result.head_scores, result.removed_heads = scores, [(p, h) for p, h, _ in choice["removed"]]
        work.record({"technique": "heads", "importance": options.head_importance,
                     "removed": [[p, h] for p, h, _ in choice["removed"]]}, "heads", {
            "importance": options.head_importance,
            "removed": [{"position": p, "head": h, "normalised_importance": s} for p, h, s in choice["removed"]],
            "heads_after": change["heads_after"],
            "importance_per_position": {p: v for p, v in scores.items()},
        })

    def has_panel(self, result):
        return bool(result.head_scores)

    def plot_panel(self, fig, ax, result):
        positions = sorted(result.head_scores)
        heads = sorted({h for p in positions for h in result.head_scores[p]})
        grid = np.full((len(positions), len(heads)), np.nan)
        for i, p in enumerate(positions):
            for j, h in enumerate(heads):
                grid[i, j] = result.head_scores[p].get(h, np.nan)
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
        for p, h in result.removed_heads:
            ax.text(heads.index(h), positions.index(p), "x", ha="center", va="center", color="red", fontsize=10)
        ax.set_xticks(range(len(heads)))
        ax.set_xticklabels([str(h) for h in heads])
        ax.set_yticks(range(len(positions)))
        ax.set_yticklabels([str(p) for p in positions])
        ax.set_xlabel("head")
        ax.set_ylabel("layer position")
        ax.set_title("head importance (x = removed)")
        fig.colorbar(image, ax=ax, shrink=0.8)


class LowRank(Technique):
    name = "lowrank"

    def apply(self, work, options, result, data, batch_size, progress):
        from .low_rank import low_rank_model, parse_modules

        work.ensure_converted()
        report = low_rank_model(work.live_model(), options.rank, options.energy, parse_modules(options.lowrank_modules))
        result.lowrank = report
        work.record({"technique": "lowrank", "rank": options.rank, "energy": options.energy,
                     "ranks": {k: v["rank"] for k, v in report.items() if "rank" in v and not v.get("kept_dense")}},
                    "lowrank", {"rank": options.rank, "energy": options.energy, "matrices": report})

    def has_panel(self, result):
        return bool(result.lowrank)

    def plot_panel(self, fig, ax, result):
        items = [(k, v) for k, v in result.lowrank.items() if "rank" in v]
        ax.bar(range(len(items)), [v["rank"] / v["full_rank"] for _, v in items],
               color=["tab:grey" if v.get("kept_dense") else "tab:green" for _, v in items])
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([k for k, _ in items], rotation=90, fontsize=6)
        ax.set_ylabel("rank / full rank (grey: kept dense)")
        ax.set_title("low-rank factorisation")


class Magnitude(Technique):
    name = "magnitude"

    def apply(self, work, options, result, data, batch_size, progress):
        from .magnitude import magnitude_prune

        report = magnitude_prune(work.live_model(), options.sparsity, options.magnitude_scope)
        result.magnitude = report
        work.record({"technique": "magnitude", "sparsity": options.sparsity, "scope": options.magnitude_scope,
                     "achieved": report["sparsity_achieved"]}, "magnitude", report)

    def has_panel(self, result):
        return bool(result.magnitude)

    def plot_panel(self, fig, ax, result):
        items = list(result.magnitude["matrices"].items())
        ax.bar(range(len(items)), [v["sparsity"] for _, v in items], color="tab:purple")
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([k.replace("encoder.layers.", "") for k, _ in items], rotation=90, fontsize=6)
        ax.set_ylabel("fraction of zero weights")
        ax.set_title("magnitude pruning")


TECHNIQUE_CLASSES: Dict[str, type] = {cls.name: cls for cls in (HeadPruning, LowRank, Magnitude)}
TECHNIQUES = tuple(TECHNIQUE_CLASSES)


# --------------------------------------------------------------------------------------
# Costs, manifest, plot, writing
# --------------------------------------------------------------------------------------
def measure_costs(before: Mapping[str, Any], after: Mapping[str, Any], seconds: float = 10.0, latency: bool = True,
                  latency_seconds: float = 10.0, repeats: int = 3) -> Dict[str, Any]:
    """Parameters, MACs and (``latency``) latency before and after compression; the two models are timed side by
    side (taking turns in every round), so the latency ratio is the median of per-round ratios."""
    from .cost import latency_summary, model_cost, reference_waveform, time_rounds
    from .structure import make_upstream

    models = {"before": make_upstream(before), "after": make_upstream(after)}
    b = model_cost(before, seconds, latency=False, upstream=models["before"])
    a = model_cost(after, seconds, latency=False, upstream=models["after"])
    out = {"before": b, "after": a,
           "ratios": {"parameters": a["parameters"]["inference"] / b["parameters"]["inference"],
                      "nonzero_parameters": a["parameters"]["nonzero"] / b["parameters"]["nonzero"],
                      "macs": a["macs"]["value"] / b["macs"]["value"]}}
    if latency:
        wav = reference_waveform(latency_seconds)
        times = time_rounds({name: (lambda m=m: m([wav])) for name, m in models.items()}, repeats=max(1, repeats))
        for name, cost in (("before", b), ("after", a)):
            cost["latency"] = latency_summary(times[name], latency_seconds)
        out["ratios"]["latency"] = statistics.median(x / y for x, y in zip(times["after"], times["before"]))
    return out


def build_manifest(result: Compressed, checkpoint_path: Optional[Path] = None, extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    meta = dict(result.checkpoint[META_KEY])
    family = meta["family"]
    fam = FAMILIES[family]
    manifest = dict(meta)
    manifest.update(result.manifest)
    manifest.update(extra or {})
    if checkpoint_path is not None:
        manifest["checkpoint"] = CHECKPOINT_NAME
        if "structure" in meta:
            manifest["load_with"] = {"compressed_entry": f"-u compressed_{family} -k {checkpoint_path}"}
        else:
            manifest["load_with"] = {"s3prl_local_entry": f"-u {fam.local_entry} -k {checkpoint_path}",
                                     "pruned_entry": f"-u pruned_{family} -k {checkpoint_path}",
                                     "compressed_entry": f"-u compressed_{family} -k {checkpoint_path}"}
    return _jsonable(manifest)


def output_dir(out_dir, force: bool = False, command: str = "prune", names: Sequence[str] = OUTPUT_NAMES):
    """The :class:`~s3prl_redundancy.io.OutputDir` of ``command``, checked (writability included): call it
    before loading any model. An ``OutputDir`` given as ``out_dir`` is returned as it is."""
    from ..io import OutputDir

    if isinstance(out_dir, OutputDir):
        return out_dir
    return OutputDir(out_dir, command, force=force).check(outputs=names)


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_layers(fig, ax, plan: LayerPlan) -> None:
    r = plan.ranking
    layers = np.arange(plan.num_layers)
    if r.scores is not None:
        values, label = np.asarray(r.scores, dtype=float), r.score_name
    else:
        values, label = np.ones(plan.num_layers), "kept (blue) / removed (red)"
    colours = ["tab:red" if l in plan.remove else "tab:blue" for l in layers]
    ax.bar(layers, np.nan_to_num(values), color=colours)
    for l in plan.remove:
        ax.annotate(f"#{plan.remove.index(l) + 1}", (l, np.nan_to_num(values[l])), ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("transformer layer (0-based); red = removed, #n = removal order")
    ax.set_ylabel(label)
    ax.set_title(f"{plan.strategy}: {plan.target.describe()}")
    ax.set_xticks(list(layers))


def _plot_convexity(fig, ax, plan: LayerPlan) -> None:
    conv = plan.ranking.details["convexity"]
    ax.plot(range(len(conv)), conv, marker="o")
    ax.axvline(plan.ranking.details["peak_state"], color="tab:red", linestyle="--", label="peak")
    ax.set_xticks(range(len(conv)))
    ax.set_xlabel("boundary state (0 = transformer input)")
    ax.set_ylabel("graph convexity of class regions")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("convexity per state")


def plot_scores(result: Compressed, path) -> str:
    """One panel per thing that was scored: layers (removed in red), convexity, then each technique's panel."""
    from ..similarity.plots import save_figure_atomic

    plan = result.plan
    panels = []  # functions (fig, ax) -> None
    if plan is not None:
        panels.append(lambda fig, ax: _plot_layers(fig, ax, plan))
        if plan.ranking.details.get("convexity") is not None:
            panels.append(lambda fig, ax: _plot_convexity(fig, ax, plan))
    for technique in (cls() for cls in TECHNIQUE_CLASSES.values()):
        if technique.has_panel(result):
            panels.append(lambda fig, ax, t=technique: t.plot_panel(fig, ax, result))
    fig = new_figure(5.5 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        panel(fig, ax)
    return save_figure_atomic(fig, path)


def write_output(result: Compressed, out_dir, force: bool = False, extra_manifest: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``pruned.pt``, ``manifest.json`` and ``scores.png`` atomically into ``out_dir`` (a path or the
    checked :func:`output_dir`); return the checkpoint path."""
    from ..io import atomic_torch_save, atomic_write_text

    out = output_dir(out_dir, force)
    out.prepare()
    path = atomic_torch_save(result.checkpoint, out.file(CHECKPOINT_NAME))
    manifest = build_manifest(result, path, extra_manifest)
    plot_scores(result, out.file(PLOT_NAME))
    atomic_write_text(out.file(MANIFEST_NAME), json.dumps(manifest, indent=2) + "\n")
    return path
