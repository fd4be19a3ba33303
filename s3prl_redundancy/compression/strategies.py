"""Layer-selection strategies: which transformer layers to remove, for a target.

Every strategy ranks the removable layers into a *removal order* (first = removed first) and gives each
layer a score; a :class:`Target` says how many to remove (``--drop N``, ``--keep N``, ``--ratio R``, a
parameter or latency budget) and :func:`plan_layers` takes that many from the front of the order. So a
strategy's plans are nested: dropping 3 layers removes the 2 that dropping 2 removes, plus one.

Layer ``l`` (0-based) maps boundary state ``l`` (its input; state 0 = the transformer input) to state
``l + 1``. At least one layer is always kept.

=====================  ================================================================================
``backward``           drop the last layers first (``L-1, L-2, ...``)
``forward``            drop from layer 1 upwards (``1, 2, ...``); layer 0 is never dropped
``forward-backward``   alternate the ends: ``L-1, 1, L-2, 2, ...`` (never layer 0)
``explicit``           the layers given by ``--keep-layers`` (``--drop-layers``)
``shallow``            keep the first k layers (shallow layer inference, arXiv 2105.00812): the same
                       selection as ``backward``, named for the literature, target usually ``--keep k``
``block-influence``    ``BI_l = 1 - mean cos(h_l, h_{l+1})`` over frames; lowest BI removed first
``knn-block-influence``  the same with ``1 - mutual k-NN alignment(h_l, h_{l+1})`` (k = 10)
``similarity-blocks``  blocks of mutually similar boundary states (``similarity.blocks``); keep the first
                       ``--per-block`` layers whose output lies in each block, remove the rest (most
                       similar to its input first); that is also the default target
``convexity``          graph convexity of labelled class regions per boundary state; remove the layers
                       after the convexity peak (``--convexity-mode peak``, also the default target) or
                       those adding least convexity (``least-added``)
=====================  ================================================================================

Plugins add strategies through the ``s3prl_redundancy_pruning_strategies`` hook: a class with the
interface of :class:`LayerSelectionStrategy`. Strategies are looked up by name only through
:func:`s3prl_redundancy.plugins.build_strategy` (built-ins are registered like any plugin's), so this
module never imports the plugin manager.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Type

import numpy as np

from ..errors import UserInputError

__all__ = [
    "Target",
    "Ranking",
    "LayerPlan",
    "LayerSelectionStrategy",
    "BUILTIN_STRATEGIES",
    "plan_layers",
    "parse_count",
]


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def parse_count(text: str, what: str) -> float:
    """``"94.7M"`` / ``"9e7"`` / ``"250k"`` -> a number; ``"60%"`` -> the fraction ``-0.6`` (negative = relative)."""
    s = str(text).strip().lower().replace("_", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|[kmgb]?)", s)
    if not m:
        raise UserInputError(f"{text!r} is not a number like 50M, 2.5e7 or 60%", argument=what)
    value = float(m.group(1))
    if m.group(2) == "%":
        if not 0 < value < 100:
            raise UserInputError(f"a percentage must be between 0 and 100, got {text!r}", argument=what)
        return -value / 100.0
    return value * _SUFFIX[m.group(2)]


@dataclass(frozen=True)
class Target:
    """How many layers to remove. ``kind``: ``drop`` / ``keep`` / ``ratio`` / ``layers`` / ``param_budget`` /
    ``latency_budget`` / ``default`` (the strategy's own choice)."""

    kind: str
    value: Any = None

    KINDS: ClassVar[tuple] = ("drop", "keep", "ratio", "layers", "param_budget", "latency_budget", "default")

    @classmethod
    def from_options(
        cls,
        drop: Optional[int] = None,
        keep: Optional[int] = None,
        ratio: Optional[float] = None,
        keep_layers: Optional[str] = None,
        param_budget: Optional[str] = None,
        latency_budget: Optional[str] = None,
    ) -> "Target":
        given = {k: v for k, v in dict(drop=drop, keep=keep, ratio=ratio, layers=keep_layers,
                                         param_budget=param_budget, latency_budget=latency_budget).items() if v is not None}
        if len(given) > 1:
            names = {"layers": "keep_layers"}  # the argument's name where the target's kind is shorter
            raise UserInputError(f"give one target, not {' and '.join(f'`{names.get(k, k)}`' for k in given)}")
        if not given:
            return cls("default")
        kind, value = next(iter(given.items()))
        if kind in ("drop", "keep"):
            if int(value) != value or value < 0:
                raise UserInputError(f"must be a non-negative whole number of layers, got {value}", argument=kind)
            return cls(kind, int(value))
        if kind == "ratio":
            value = float(value)
            if not 0.0 < value < 1.0:
                raise UserInputError(f"`ratio` is the fraction of layers to remove, strictly between 0 and 1; got {value}")
            return cls(kind, value)
        if kind == "layers":
            from .layers import parse_keep_layers

            return cls(kind, tuple(parse_keep_layers(value)))
        if kind == "param_budget":
            return cls(kind, parse_count(value, "param_budget"))
        text, scale = str(value).strip().lower(), 1.0
        if text.endswith("%"):
            return cls(kind, parse_count(text, "latency_budget"))  # relative: a fraction of the full model's
        if text.endswith("ms"):
            text, scale = text[:-2], 1e-3
        elif text.endswith("s"):
            text = text[:-1]
        try:
            budget = float(text) * scale
        except ValueError:
            raise UserInputError(f"`latency_budget`: {value!r} is not a time like 0.25, 0.25s, 250ms or 80%") from None
        if budget <= 0:
            raise UserInputError(f"`latency_budget` must be positive, got {value!r}")
        return cls(kind, budget)

    def describe(self) -> str:
        return {
            "drop": lambda: f"drop {self.value} layer(s)",
            "keep": lambda: f"keep {self.value} layer(s)",
            "ratio": lambda: f"remove a fraction {self.value} of the layers",
            "layers": lambda: f"keep layers {list(self.value)}",
            "param_budget": lambda: f"at most {self.value:.4g} parameters" if self.value > 0 else f"at most {-self.value:.0%} of the parameters",
            "latency_budget": lambda: f"at most {self.value:.4g} s latency" if self.value > 0 else f"at most {-self.value:.0%} of the latency",
            "default": lambda: "the strategy's default",
        }[self.kind]()


# --------------------------------------------------------------------------------------
# Rankings and plans
# --------------------------------------------------------------------------------------
@dataclass
class Ranking:
    """A strategy's verdict on a model: ``order`` = removable layers, removed first to last."""

    order: List[int]
    scores: Optional[List[float]] = None  # one per layer, higher = more important (kept longer)
    score_name: str = "removal rank"
    default_drop: Optional[List[int]] = None  # what the strategy removes with no target (None: needs one)
    details: Dict[str, Any] = field(default_factory=dict)
    reasons: Dict[int, str] = field(default_factory=dict)  # per layer, why it sits where it does


@dataclass
class LayerPlan:
    strategy: str
    target: Target
    num_layers: int
    keep: List[int]
    remove: List[int]  # in removal order
    ranking: Ranking
    cost: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        r = self.ranking
        layers = []
        for l in range(self.num_layers):
            entry = {"layer": l, "kept": l in self.keep}
            if r.scores is not None:
                entry["score"] = _num(r.scores[l])
            if l in r.order:
                entry["removal_rank"] = r.order.index(l)
            if l in r.reasons:
                entry["why"] = r.reasons[l]
            layers.append(entry)
        return {
            "strategy": self.strategy,
            "target": {"kind": self.target.kind, "value": list(self.target.value) if isinstance(self.target.value, tuple) else self.target.value,
                       "description": self.target.describe()},
            "num_layers": self.num_layers,
            "keep_layers": list(self.keep),
            "removed_layers": sorted(self.remove),
            "removal_order": list(self.remove),
            "score_name": r.score_name,
            "layers": layers,
            "details": _jsonable(r.details),
            **({"cost": _jsonable(self.cost)} if self.cost else {}),
        }


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return _num(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


CostFunction = Callable[[Sequence[int]], float]


def _count_for_target(target: Target, num_layers: int, ranking: Ranking, strategy: str,
                      cost: Optional[Mapping[str, CostFunction]]) -> int:
    n_order = len(ranking.order)
    if target.kind == "drop":
        n = target.value
    elif target.kind == "keep":
        if target.value > num_layers:
            raise UserInputError(f"`keep` {target.value}: the model has only {num_layers} transformer layers")
        n = num_layers - target.value
    elif target.kind == "ratio":
        n = int(round(target.value * num_layers))
        if n == 0:
            raise UserInputError(
                f"`ratio` {target.value} of {num_layers} layers rounds to 0 layers: it removes no layer; use a larger ratio"
            )
    elif target.kind == "default":
        if ranking.default_drop is None:
            raise UserInputError(
                f"strategy {strategy!r} needs a target: `drop` N, `keep` N, `ratio` R, `param_budget` P or `latency_budget` S"
            )
        n = len(ranking.default_drop)
        if n == 0:
            raise UserInputError(
                f"strategy {strategy!r} finds nothing to remove by default ({ranking.details.get('default_reason', 'no layer qualifies')}); "
                "give a target such as `drop` N"
            )
    elif target.kind in ("param_budget", "latency_budget"):
        n = _count_for_budget(target, num_layers, ranking, strategy, cost)
    else:
        raise UserInputError(f"strategy {strategy!r} does not take a {target.kind} target")
    argument = {"layers": "keep_layers", "default": None}.get(target.kind, target.kind)  # the target's argument
    if n <= 0:
        raise UserInputError(f"the target ({target.describe()}) removes no layer; nothing to prune", argument=argument)
    if n >= num_layers:
        raise UserInputError(
            f"the target ({target.describe()}) removes every one of the {num_layers} layers; keep at least one",
            argument=argument)
    if n > n_order:
        raise UserInputError(
            f"strategy {strategy!r} can remove at most {n_order} of {num_layers} layers "
            f"(it never removes layer(s) {sorted(set(range(num_layers)) - set(ranking.order))}); the target asks for {n}"
        )
    return n


def _count_for_budget(target: Target, num_layers: int, ranking: Ranking, strategy: str,
                      cost: Optional[Mapping[str, CostFunction]]) -> int:
    what = "parameters" if target.kind == "param_budget" else "latency"
    fn = (cost or {}).get(what)
    if fn is None:
        raise UserInputError(f"needs a cost model for {what}; none was given", argument=target.kind)
    full = fn(list(range(num_layers)))
    budget = target.value if target.value > 0 else -target.value * full
    front = fn([])
    unit = "s" if what == "latency" else ""
    if budget < front:
        raise UserInputError(
            f"`{target.kind}={budget:.4g}{unit}` is below the front end's own cost ({front:.4g}{unit} of {what} with no transformer "
            f"layer at all; the full model: {full:.4g}{unit}); no layer selection can meet it"
        )
    if full <= budget:
        raise UserInputError(
            f"`{target.kind}={budget:.4g}{unit}` is at or above the full model's {what} ({full:.4g}{unit}): it removes no layer"
        )
    for n in range(1, len(ranking.order) + 1):
        kept = [l for l in range(num_layers) if l not in ranking.order[:n]]
        if not kept:
            break
        if fn(kept) <= budget:
            return n
    raise UserInputError(
        f"`{target.kind}={budget:.4g}{unit}`: even removing every layer strategy {strategy!r} may remove leaves "
        f"{fn([l for l in range(num_layers) if l not in ranking.order]):.4g}{unit}; raise the budget"
    )


def plan_layers(
    strategy: "LayerSelectionStrategy",
    num_layers: int,
    target: Target,
    stats: Any = None,
    cost: Optional[Mapping[str, CostFunction]] = None,
) -> LayerPlan:
    """Rank the layers with ``strategy`` and remove as many as ``target`` asks."""
    if num_layers < 2:
        raise UserInputError(f"the model has {num_layers} transformer layer(s); removing one would leave none")
    if target.kind == "layers" and not isinstance(strategy, ExplicitStrategy):
        raise UserInputError(
            f"`keep_layers` picks the layers itself: use it with `strategy` explicit (or no `strategy`), not {strategy.name!r}"
        )
    ranking = strategy.rank(num_layers, stats)
    _check_ranking(ranking, num_layers, strategy.name)
    if isinstance(strategy, ExplicitStrategy):
        remove = list(ranking.order)
        if not remove:
            raise UserInputError(f"`keep_layers` keeps all {num_layers} layers: it removes no layer; nothing to prune")
    else:
        n = _count_for_target(target, num_layers, ranking, strategy.name, cost)
        remove = list(ranking.order[:n])
    keep = [l for l in range(num_layers) if l not in remove]
    plan = LayerPlan(strategy.name, target, num_layers, keep, remove, ranking)
    if cost:
        plan.cost = {what: {"before": fn(list(range(num_layers))), "after": fn(keep)} for what, fn in cost.items()}
    return plan


def _check_ranking(r: Ranking, num_layers: int, name: str) -> None:
    if len(set(r.order)) != len(r.order) or any(not 0 <= l < num_layers for l in r.order):
        raise ValueError(f"strategy {name!r} returned an invalid removal order {r.order} for {num_layers} layers")
    if r.scores is not None and len(r.scores) != num_layers:
        raise ValueError(f"strategy {name!r} returned {len(r.scores)} scores for {num_layers} layers")


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------
class LayerSelectionStrategy(abc.ABC):
    """Ranks the transformer layers of one model for removal.

    ``needs``: statistics of one pass over ``--data`` (names of
    :data:`s3prl_redundancy.compression.statistics.STATISTICS`); ``needs_labels``: class labels too.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[FrozenSet[str]] = frozenset()
    needs_labels: ClassVar[bool] = False
    options: ClassVar[Dict[str, Any]] = {}  # constructor options and their defaults

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise UserInputError(f"strategy {self.name!r} takes no option(s) {sorted(unknown)}; it takes {sorted(self.options) or 'none'}")
        self.config = {**self.options, **options}

    @property
    def needs_data(self) -> bool:
        return bool(self.needs)

    def advice(self, ckpt: Mapping[str, Any]) -> Optional[str]:
        """A note for the user about applying this strategy to ``ckpt`` (None: nothing to say)."""
        return None

    @abc.abstractmethod
    def rank(self, num_layers: int, stats: Any = None) -> Ranking:
        """The removal order (and scores) for a model of ``num_layers`` layers."""

    def _stats(self, stats: Any) -> Any:
        if stats is None:
            raise UserInputError(
                f"strategy {self.name!r} needs statistics from a forward pass over audio: pass `data` DIR "
                f"(a folder of audio files or a file list){' and class labels (`labels` CSV, or one sub-folder per class)' if self.needs_labels else ''}"
            )
        return stats


def _position_scores(order: Sequence[int], num_layers: int) -> List[float]:
    """A score from the removal position: removed first = 0, never removed = len(order)."""
    pos = {l: i for i, l in enumerate(order)}
    return [float(pos.get(l, len(order))) for l in range(num_layers)]


class BackwardStrategy(LayerSelectionStrategy):
    name = "backward"
    summary = "drop the last layers first"

    def rank(self, num_layers, stats=None):
        order = list(range(num_layers - 1, 0, -1))
        return Ranking(order, _position_scores(order, num_layers), reasons={l: "position: later layers first" for l in order})


class ShallowStrategy(BackwardStrategy):
    name = "shallow"
    summary = ("keep the first k layers (shallow layer inference): meant for layer-consistent models (lc_tiny_hubert, "
               "lc-finetune output, served at any depth by lc_hubert); on other models it is backward")

    def advice(self, ckpt):
        from ..layer_consistency import META_KEY

        if META_KEY in ckpt:
            return None
        return ("this model was not trained with layer consistency, so `shallow` is `backward`: it cuts a network "
                "never trained to exit early (on KS it loses far more than a layer-consistent model). Train the "
                "shallow exits first with `s3prl-redundancy lc-finetune`, then serve any depth with lc_hubert / "
                "lc_wav2vec2 / lc_wavlm and `depth: k`")


class ForwardStrategy(LayerSelectionStrategy):
    name = "forward"
    summary = "drop from layer 1 upwards (never layer 0)"

    def rank(self, num_layers, stats=None):
        order = list(range(1, num_layers))
        return Ranking(order, _position_scores(order, num_layers), reasons={l: "position: earlier layers first (not 0)" for l in order})


class ForwardBackwardStrategy(LayerSelectionStrategy):
    name = "forward-backward"
    summary = "alternate the ends: last, 1, second to last, 2, ... (never layer 0)"

    def rank(self, num_layers, stats=None):
        lo, hi, order = 1, num_layers - 1, []
        while lo <= hi:
            order.append(hi)
            hi -= 1
            if lo <= hi:
                order.append(lo)
                lo += 1
        return Ranking(order, _position_scores(order, num_layers), reasons={l: "position: alternating ends" for l in order})


class ExplicitStrategy(LayerSelectionStrategy):
    name = "explicit"
    summary = "the layers given by `keep_layers`"
    options = {"keep_layers": None}

    def rank(self, num_layers, stats=None):
        keep = self.config["keep_layers"]
        if keep is None:
            raise UserInputError("strategy 'explicit' needs `keep_layers` 0,1,3 (0-based layers to keep)")
        bad = [l for l in keep if not 0 <= l < num_layers]
        if bad:
            raise UserInputError(
                f"layers {bad} do not exist: the model has {num_layers} transformer layers (valid indices 0..{num_layers - 1})",
                argument="keep_layers")
        order = [l for l in range(num_layers) if l not in keep]
        return Ranking(order, None, score_name="", default_drop=order, reasons={l: "given by `keep_layers`" for l in order})


class _ScoreStrategy(LayerSelectionStrategy):
    """Lowest score removed first; ties broken towards the later layer."""

    statistic: ClassVar[str] = ""
    score_name: ClassVar[str] = ""

    def rank(self, num_layers, stats=None):
        stats = self._stats(stats)
        scores = np.asarray(stats.require(self.statistic, self.name), dtype=np.float64)
        if scores.shape != (num_layers,):
            raise ValueError(f"{self.statistic}: expected {num_layers} scores, got shape {scores.shape}")
        if not np.isfinite(scores).all():
            bad = np.flatnonzero(~np.isfinite(scores)).tolist()
            raise UserInputError(f"{self.score_name} of layer(s) {bad} is not finite (silent or constant audio?); check `data`")
        order = sorted(range(num_layers), key=lambda l: (scores[l], -l))
        reasons = {l: f"{self.score_name} {scores[l]:.4g} (rank {i + 1} of {num_layers}, lowest first)" for i, l in enumerate(order)}
        return Ranking(order, scores.tolist(), score_name=self.score_name, reasons=reasons)


class BlockInfluenceStrategy(_ScoreStrategy):
    name = "block-influence"
    summary = "BI = 1 - mean cos(input, output) of each layer; lowest first"
    needs = frozenset({"block_influence"})
    statistic = "block_influence"
    score_name = "block influence (1 - cos)"


class KnnBlockInfluenceStrategy(_ScoreStrategy):
    name = "knn-block-influence"
    summary = "1 - mutual k-NN alignment of each layer's input and output; lowest first"
    needs = frozenset({"knn"})
    statistic = "knn_block_influence"
    score_name = "k-NN block influence (1 - mutual k-NN)"


class SimilarityBlocksStrategy(LayerSelectionStrategy):
    name = "similarity-blocks"
    summary = "keep the first `per_block` layers of each block of similar states, remove the rest"
    needs = frozenset({"similarity"})
    options = {"per_block": 1, "threshold": None, "penalty": 0.0}

    def rank(self, num_layers, stats=None):
        from ..similarity.blocks import find_blocks

        stats = self._stats(stats)
        s = np.asarray(stats.require("similarity", self.name), dtype=np.float64)
        if s.shape != (num_layers + 1, num_layers + 1):
            raise ValueError(f"similarity: expected ({num_layers + 1}, {num_layers + 1}), got {s.shape}")
        per_block = int(self.config["per_block"])
        if per_block < 1:
            raise UserInputError(f"`per_block` must be at least 1, got {per_block}")
        structure = find_blocks(s, threshold=self.config["threshold"], penalty=float(self.config["penalty"]))
        adjacent = np.array([s[l, l + 1] for l in range(num_layers)])  # how much layer l preserves its input
        block_of_layer = [structure.block_of(l + 1) for l in range(num_layers)]  # the block of its output
        representatives, reasons = set(), {}
        for b in range(len(structure.blocks)):
            members = [l for l in range(num_layers) if block_of_layer[l] == b]
            for l in members[:per_block]:
                representatives.add(l)
        representatives.add(0)
        redundant = [l for l in range(num_layers) if l not in representatives]
        redundant.sort(key=lambda l: (-adjacent[l], -l))
        rest = sorted((l for l in representatives if l != 0), key=lambda l: (-adjacent[l], -l))
        order = redundant + rest
        for l in range(num_layers):
            first, last = structure.blocks[block_of_layer[l]]
            role = "representative" if l in representatives else "redundant member"
            reasons[l] = f"output in block of states {first}..{last}; {role}; similarity to its input {adjacent[l]:.4g}"
        scores = (1.0 - adjacent).tolist()
        return Ranking(order, scores, score_name=f"1 - {stats.similarity_metric or 'similarity'}(input, output)",
                       default_drop=redundant, reasons=reasons,
                       details={"blocks": structure.to_dict(), "representatives": sorted(representatives),
                                "default_reason": "every block has only its representatives"})


class ConvexityStrategy(LayerSelectionStrategy):
    name = "convexity"
    summary = "graph convexity of labelled class regions; remove layers after the peak (or adding least)"
    needs = frozenset({"pooled"})
    needs_labels = True
    options = {"mode": "peak", "k": 10, "max_pairs": 5000, "seed": 0}

    def rank(self, num_layers, stats=None):
        from .convexity import convexity_removal_order, layer_convexity

        stats = self._stats(stats)
        pooled = stats.require("pooled", self.name)
        labels = stats.labels
        if labels is None:
            raise UserInputError(
                "strategy 'convexity' needs class labels: `labels` CSV (rows path,label) or a `data` folder with one sub-folder per class"
            )
        if pooled.shape[1] != num_layers + 1:
            raise ValueError(f"pooled features have {pooled.shape[1]} states, expected {num_layers + 1}")
        results = layer_convexity(pooled, labels, k=int(self.config["k"]), max_pairs=int(self.config["max_pairs"]),
                                  seed=int(self.config["seed"]))
        conv = [r.score for r in results]
        choice = convexity_removal_order(conv, self.config["mode"])
        gain = choice["gain"]
        reasons = {l: f"adds convexity {gain[l]:+.4g} (state {l} -> {l + 1}: {conv[l]:.4g} -> {conv[l + 1]:.4g})"
                   + ("; after the convexity peak" if choice["default_drop"] and l in choice["default_drop"] else "")
                   for l in range(num_layers)}
        return Ranking(choice["order"], list(gain), score_name="convexity added by the layer",
                       default_drop=choice["default_drop"], reasons=reasons,
                       details={"convexity": conv, "peak_state": choice["peak"], "mode": self.config["mode"],
                                "per_class": [r.per_class for r in results],
                                "pairs": [r.pairs for r in results],
                                "default_reason": f"the convexity peaks at the last state ({choice['peak']})"})


BUILTIN_STRATEGIES: Dict[str, Type[LayerSelectionStrategy]] = {
    cls.name: cls
    for cls in (BackwardStrategy, ForwardStrategy, ForwardBackwardStrategy, ExplicitStrategy, ShallowStrategy,
                BlockInfluenceStrategy, KnnBlockInfluenceStrategy, SimilarityBlocksStrategy, ConvexityStrategy)
}
