"""One pass of an s3prl upstream over a dataset, handing every layer's hidden states to consumers.

:class:`HiddenStateCollector` runs any s3prl upstream -- an ``s3prl.hub`` entry (whether it returns
``hidden_states`` itself, like ``distiller_local``, or builds them with s3prl's forward hooks, like
``hubert_local``), an ``s3prl.nn.S3PRLUpstream``, or any ``nn.Module`` with the hub contract
(``forward(list of 1-D 16 kHz waveforms) -> {"hidden_states": [(B, T, D), ...], ...}``) -- in
batches and gives each batch to any number of consumers. It adds no hook to the upstream and does
not touch the dict (or tuple) the upstream returns: :meth:`HiddenStateCollector.forward` returns
that very object, so the collector can stand in for a plain call.

**Padding never enters a statistic.** Utterance ``i`` of a batch has ``min(round(len_i / rate), T)``
valid frames, s3prl's own rule (``Featurizer.tolist`` in ``s3prl/upstream/interfaces.py``; ``rate`` is
``get_downsample_rates("hidden_states")``, 320 for HuBERT / wav2vec 2.0 / WavLM; ``T`` the padded
length). An ``S3PRLUpstream`` returns its valid lengths itself and those are used. The valid frames of
the batch are concatenated into one ``(N, D)`` tensor per layer (utterance after utterance, frames in
order) with ``(N,)`` int64 keys ``utterance_index * 2**32 + frame_index`` (:func:`frame_keys`), where
``utterance_index`` is the position of the utterance in the *whole* dataset, so sampling metrics pick
the same frames whatever the batching and the sharding across ranks.

Note that the hidden states themselves can depend on the batch: HuBERT / wav2vec 2.0 base normalise
the first convolution over the padded waveform (``GroupNorm``), exactly as in s3prl's downstream
training. ``batch_size=1`` makes every utterance's hidden states independent of the others.

Consumers are callables ``consumer(batch: HiddenStatesBatch)`` or objects with
``update(layers, keys)`` (every similarity metric). The pluggy hook
``s3prl_redundancy_on_hidden_states(hidden_states, lengths, utterance_ids)`` is called once per batch
too, so an installed plugin consumes the same pass. Non-finite values (NaN / inf) in the valid frames
stop the pass *before* any consumer sees the batch, naming the hidden state and the utterance.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import UserInputError
from ..upstream_loading import _is_s3prl_upstream, downsample_rate

__all__ = [
    "KEY_STRIDE",
    "NonFiniteHiddenStatesError",
    "HiddenStatesBatch",
    "CollectionStats",
    "HiddenStateCollector",
    "frame_counts",
    "frame_keys",
    "extract_hidden_states",
]

KEY_STRIDE = 1 << 32
"""Frame key = ``utterance_index * KEY_STRIDE + frame_index`` (frame indices are below 2**32)."""

Consumer = Union[Callable[["HiddenStatesBatch"], Any], Any]


class NonFiniteHiddenStatesError(UserInputError):
    """NaN or inf in the valid frames of a hidden state; carries the layer and the utterance."""

    def __init__(self, layer: int, utterance_id: str, utterance_index: int, kind: str) -> None:
        self.layer, self.utterance_id, self.utterance_index = layer, utterance_id, utterance_index
        what = "the transformer input" if layer == 0 else f"the output of transformer layer {layer}"
        super().__init__(
            f"hidden state {layer} ({what}) of utterance {utterance_id!r} (index {utterance_index}) contains {kind}; "
            "it is the first layer with non-finite values. Check the checkpoint (`ckpt`) for NaN/inf weights and the "
            "audio file for NaN/inf samples, or leave that utterance out of `dataset`. No statistic includes this batch.",
            argument="dataset",
        )


def frame_counts(wav_lengths: Sequence[int], padded_frames: int, rate: int) -> List[int]:
    """Valid frames per utterance, s3prl's rule: ``min(round(len / rate), padded_frames)``."""
    return [max(0, min(int(round(int(n) / rate)), int(padded_frames))) for n in wav_lengths]


def frame_keys(utterance_indices: Sequence[int], lengths: Sequence[int], device: Any = "cpu") -> torch.Tensor:
    """``(sum(lengths),)`` int64 keys ``utterance_index * KEY_STRIDE + frame_index``, utterance after utterance."""
    parts = []
    for index, n in zip(utterance_indices, lengths):
        if not 0 <= int(index) < (1 << 30):
            raise ValueError(f"utterance index {index} is outside [0, 2**30)")
        parts.append(int(index) * KEY_STRIDE + torch.arange(int(n), dtype=torch.int64, device=device))
    if not parts:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return torch.cat(parts)


def _as_layer_list(hidden: Any, where: str) -> List[torch.Tensor]:
    if isinstance(hidden, dict):  # as s3prl's Featurizer._select_feature
        hidden = list(hidden.values())
    if isinstance(hidden, torch.Tensor):
        hidden = [hidden]
    if not isinstance(hidden, (list, tuple)) or not hidden:
        raise ValueError(f"{where}: expected a non-empty list of (B, T, D) hidden states, got {type(hidden).__name__}")
    for i, h in enumerate(hidden):
        if not isinstance(h, torch.Tensor) or h.dim() != 3:
            shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"{where}: hidden state {i} should be a (B, T, D) tensor, got {shape}")
    return list(hidden)


def extract_hidden_states(
    upstream: Any, wavs: Sequence[torch.Tensor], rate: Optional[int] = None
) -> Tuple[Any, List[torch.Tensor], List[int]]:
    """Run ``upstream`` on ``wavs``; return ``(its output, unchanged; hidden states (B, T, D); valid frames)``.

    ``rate`` is the downsample rate (default: asked from the upstream; for an upstream without
    ``get_downsample_rates`` it is estimated like s3prl's Featurizer, ``round(max_len / T)``).
    """
    wav_lengths = [int(w.shape[-1]) for w in wavs]
    if _is_s3prl_upstream(upstream):
        padded = torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
        lens = torch.tensor(wav_lengths, dtype=torch.long, device=padded.device)
        output = upstream(padded, lens)
        all_hs, all_lens = output
        hidden = _as_layer_list(all_hs, "S3PRLUpstream")
        lens0 = [int(v) for v in all_lens[0].tolist()]
        if any([int(v) for v in l.tolist()] != lens0 for l in all_lens[1:]):
            raise ValueError("S3PRLUpstream returned different valid lengths for different layers")
        padded_frames = min(h.shape[1] for h in hidden)
        return output, hidden, [min(n, padded_frames) for n in lens0]
    output = upstream(list(wavs))
    if not isinstance(output, dict) or output.get("hidden_states") is None:
        keys = sorted(output) if isinstance(output, dict) else type(output).__name__
        raise ValueError(
            f"the upstream returned {keys} without 'hidden_states'; s3prl upstreams return a dict with a list of "
            "(B, T, D) hidden states under 'hidden_states'"
        )
    hidden = _as_layer_list(output["hidden_states"], "the upstream's 'hidden_states'")
    padded_frames = min(h.shape[1] for h in hidden)
    if rate is None:
        rate = downsample_rate(upstream)
    if rate is None:
        rate = max(1, round(max(wav_lengths) / max(1, hidden[0].shape[1])))
    return output, hidden, frame_counts(wav_lengths, padded_frames, rate)


@dataclass
class HiddenStatesBatch:
    """One batch as consumers see it.

    ``hidden_states`` are the upstream's own ``(B, T, D)`` tensors (padding included; do not modify them
    in place), ``lengths`` the valid frames per utterance, ``utterance_indices`` the positions of the
    utterances in the whole dataset. :attr:`frames` / :attr:`keys` are the padding-free ``(N, D)`` per layer
    and the ``(N,)`` frame keys, computed once and shared by all consumers.
    """

    hidden_states: Sequence[torch.Tensor]
    lengths: List[int]
    utterance_ids: List[str]
    utterance_indices: List[int]
    wav_lengths: List[int]
    _frames: Optional[List[torch.Tensor]] = field(default=None, repr=False)
    _keys: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.hidden_states)

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def num_frames(self) -> int:
        return int(sum(self.lengths))

    def _mask(self) -> torch.Tensor:
        h0 = self.hidden_states[0]
        t = min(h.shape[1] for h in self.hidden_states)
        lengths = torch.tensor(self.lengths, dtype=torch.int64, device=h0.device)
        return torch.arange(t, device=h0.device)[None, :] < lengths[:, None]  # (B, T)

    @property
    def frames(self) -> List[torch.Tensor]:
        """L tensors ``(N, D)``: the valid frames of every utterance, concatenated (padding dropped)."""
        if self._frames is None:
            mask = self._mask()
            t = mask.shape[1]
            self._frames = [h[:, :t][mask] for h in self.hidden_states]
        return self._frames

    @property
    def keys(self) -> torch.Tensor:
        """``(N,)`` int64 frame keys matching the rows of :attr:`frames`."""
        if self._keys is None:
            self._keys = frame_keys(self.utterance_indices, self.lengths, self.hidden_states[0].device)
        return self._keys

    def utterance_frames(self, i: int) -> List[torch.Tensor]:
        """The valid frames ``(lengths[i], D)`` of utterance ``i`` of the batch, one tensor per layer."""
        return [h[i, : self.lengths[i]] for h in self.hidden_states]

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteHiddenStatesError` for the first layer (then utterance) with NaN/inf."""
        for layer, frames in enumerate(self.frames):
            if frames.is_floating_point() and not bool(torch.isfinite(frames).all()):
                for i in range(self.batch_size):
                    values = self.hidden_states[layer][i, : self.lengths[i]]
                    if not bool(torch.isfinite(values).all()):
                        kind = "NaN" if bool(torch.isnan(values).any()) else "inf"
                        raise NonFiniteHiddenStatesError(layer, self.utterance_ids[i], self.utterance_indices[i], kind)


@dataclass
class CollectionStats:
    """What one :meth:`HiddenStateCollector.run` processed (this process only)."""

    num_utterances: int = 0
    num_frames: int = 0
    num_batches: int = 0
    num_layers: Optional[int] = None


def _item(item: Any, index: int) -> Tuple[str, torch.Tensor]:
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
        uid, wav = item
    else:
        uid, wav = str(index), item
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(wav)
    if wav.dim() != 1:
        raise ValueError(f"utterance {uid!r}: expected a 1-D waveform, got shape {tuple(wav.shape)}")
    return uid, wav.to(torch.float32) if not wav.is_floating_point() else wav


class HiddenStateCollector:
    """Run an upstream over a dataset in batches and hand each batch's hidden states to consumers.

    Args:
        upstream: an s3prl upstream (hub entry, ``S3PRLUpstream``, or any module with that contract).
        consumers: callables ``f(batch)`` or objects with ``update(layers, keys)``.
        device: where the waveforms go (default: the device of the upstream's first parameter, else CPU).
        plugin_manager: the pluggy manager whose ``s3prl_redundancy_on_hidden_states`` is called per batch
            (default: :func:`s3prl_redundancy.plugins.get_plugin_manager`); ``False`` calls no hook.
        check_finite: stop on NaN/inf in valid frames (before any consumer sees the batch).
        rate: samples per frame; default ``upstream.get_downsample_rates("hidden_states")``.
    """

    def __init__(
        self,
        upstream: Any,
        consumers: Iterable[Consumer] = (),
        device: Any = None,
        plugin_manager: Any = None,
        check_finite: bool = True,
        rate: Optional[int] = None,
    ) -> None:
        self.upstream = upstream
        self.consumers: List[Consumer] = []
        for consumer in consumers:
            self.add_consumer(consumer)
        if device is None:
            param = next(iter(upstream.parameters()), None) if hasattr(upstream, "parameters") else None
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        if plugin_manager is None:
            from ..plugins import get_plugin_manager

            plugin_manager = get_plugin_manager()
        self.plugin_manager = None if plugin_manager is False else plugin_manager
        self.check_finite = check_finite
        self.rate = rate if rate is not None else downsample_rate(upstream)
        self.num_layers: Optional[int] = None
        from ..families import module_min_samples

        self.min_samples = module_min_samples(upstream)  # shorter waveforms make the CNN front end fail

    def add_consumer(self, consumer: Consumer) -> None:
        if not callable(consumer) and not hasattr(consumer, "update"):
            raise TypeError(f"a consumer must be callable(batch) or have update(layers, keys); got {type(consumer).__name__}")
        self.consumers.append(consumer)

    def _dispatch(self, batch: HiddenStatesBatch) -> None:
        for consumer in self.consumers:
            if hasattr(consumer, "update") and not callable(consumer):
                consumer.update(batch.frames, keys=batch.keys)
            else:
                consumer(batch)
        if self.plugin_manager is not None:
            self.plugin_manager.hook.s3prl_redundancy_on_hidden_states(
                hidden_states=list(batch.hidden_states), lengths=list(batch.lengths), utterance_ids=list(batch.utterance_ids)
            )

    def forward(
        self,
        wavs: Sequence[torch.Tensor],
        utterance_ids: Optional[Sequence[str]] = None,
        utterance_indices: Optional[Sequence[int]] = None,
    ) -> Any:
        """Run the upstream on ``wavs``, feed the consumers and return the upstream's output object unchanged.

        The upstream runs under the caller's grad mode (``run`` uses ``torch.inference_mode``). ``utterance_indices``
        (default ``0..B-1``) are the dataset positions used for the frame keys.
        """
        return self._forward_batch(wavs, utterance_ids, utterance_indices)[0]

    __call__ = forward

    def _forward_batch(
        self,
        wavs: Sequence[torch.Tensor],
        utterance_ids: Optional[Sequence[str]],
        utterance_indices: Optional[Sequence[int]],
        inference: bool = False,
    ) -> Tuple[Any, HiddenStatesBatch]:
        if not wavs:
            raise ValueError("forward() needs at least one waveform")
        wavs = [w.to(self.device) for w in wavs]
        ids = [str(i) for i in range(len(wavs))] if utterance_ids is None else [str(u) for u in utterance_ids]
        indices = list(range(len(wavs))) if utterance_indices is None else [int(i) for i in utterance_indices]
        if len(ids) != len(wavs) or len(indices) != len(wavs):
            raise ValueError(f"{len(wavs)} waveforms but {len(ids)} utterance ids and {len(indices)} indices")
        short = [f"{u} ({int(w.shape[-1])} samples)" for u, w in zip(ids, wavs) if int(w.shape[-1]) < self.min_samples]
        if short:  # AudioDataset.without_short_clips skips them up front; other datasets are refused here
            raise UserInputError(f"utterance(s) {', '.join(short)} are shorter than the {self.min_samples} samples the "
                                 "model's convolution front end needs for one frame; drop them from the data")
        with torch.inference_mode() if inference else contextlib.nullcontext():
            output, hidden, lengths = extract_hidden_states(self.upstream, wavs, self.rate)
        if any(h.shape[0] != len(wavs) for h in hidden):
            raise ValueError(f"the upstream returned hidden states of batch sizes {[h.shape[0] for h in hidden]} for {len(wavs)} waveforms")
        if self.num_layers is None:
            self.num_layers = len(hidden)
        elif len(hidden) != self.num_layers:
            raise ValueError(
                f"the upstream returned {len(hidden)} hidden states, earlier batches {self.num_layers}: switch layerdrop "
                "off (s3prl entries do) so every forward has the same layers"
            )
        batch = HiddenStatesBatch(hidden, lengths, ids, indices, [int(w.shape[-1]) for w in wavs])
        with torch.no_grad():  # outside inference mode: consumers' own state stays ordinary tensors
            if self.check_finite:
                batch.check_finite()
            self._dispatch(batch)
        return output, batch

    def run(
        self,
        dataset: Any,
        batch_size: int = 8,
        indices: Optional[Sequence[int]] = None,
        start: int = 0,
        progress: bool = True,
        on_batch_end: Optional[Callable[[int, CollectionStats], None]] = None,
        num_workers: int = 0,
        description: str = "hidden states",
    ) -> CollectionStats:
        """Process ``dataset[start:]`` in consecutive batches of ``batch_size``.

        The upstream runs under ``torch.inference_mode``; consumers run under ``torch.no_grad`` outside it,
        so the statistics they create are ordinary tensors (mergeable, loadable, syncable anywhere) while
        the hidden states they receive are inference tensors (they cannot be modified in place).

        Args:
            dataset: map-style, items ``(utterance_id, 1-D waveform)`` (``AudioDataset``) or bare waveforms.
            indices: the global index of every item (default ``0..len-1``; a shard passes its global indices).
            start: items already processed (a resumed run); batches keep the boundaries ``start + k * batch_size``.
            on_batch_end: ``f(items processed so far, stats)`` after each batch (checkpointing).
            num_workers: >0 loads audio in DataLoader worker processes.

        An upstream in training mode is switched to ``eval()`` first (dropout off), as s3prl's
        ``S3PRLUpstream`` is left in training mode after construction.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = len(dataset)
        indices = list(range(total)) if indices is None else [int(i) for i in indices]
        if len(indices) != total:
            raise ValueError(f"{len(indices)} indices for a dataset of {total} items")
        if not 0 <= start <= total:
            raise ValueError(f"start {start} is outside 0..{total}")
        stats = CollectionStats()
        if hasattr(self.upstream, "eval") and getattr(self.upstream, "training", False):
            self.upstream.eval()
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, unit="utt", desc=description, disable=not progress, file=sys.stderr, dynamic_ncols=True)
        position = start
        try:
            for items in self._batches(dataset, batch_size, start, num_workers):
                pairs = [_item(item, position + j) for j, item in enumerate(items)]
                batch_indices = indices[position : position + len(pairs)]
                batch = self._forward_batch([w for _, w in pairs], [u for u, _ in pairs], batch_indices, inference=True)[1]
                position += len(pairs)
                stats.num_utterances += len(pairs)
                stats.num_frames += batch.num_frames
                stats.num_batches += 1
                stats.num_layers = self.num_layers
                bar.update(len(pairs))
                if on_batch_end is not None:
                    on_batch_end(position, stats)
                del batch
        finally:
            bar.close()
        return stats

    @staticmethod
    def _batches(dataset: Any, batch_size: int, start: int, num_workers: int):
        total = len(dataset)
        if num_workers > 0:
            from torch.utils.data import DataLoader, Subset

            loader = DataLoader(
                Subset(dataset, range(start, total)), batch_size=batch_size, shuffle=False,
                num_workers=num_workers, collate_fn=list,
            )
            yield from loader
            return
        for s in range(start, total, batch_size):
            yield [dataset[i] for i in range(s, min(total, s + batch_size))]
