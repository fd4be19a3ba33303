"""HuBERT targets: k-means clusters of 39-dim MFCC frames at 50 Hz (iteration 1), or of a trained
model's hidden states (iteration 2, :func:`model_layer_features`).

MFCC: Kaldi-compatible (``torchaudio.compliance.kaldi.mfcc``), 13 coefficients, 25 ms window, 20 ms
shift, ``snip_edges=True``, plus first and second deltas, mean removed per utterance. With a 400-sample
window and 320-sample hop, frame ``t`` covers samples ``[320 t, 320 t + 400)``: exactly the receptive
field and stride of HuBERT's convolutional front end (``[(C,10,5)] + [(C,3,2)]*4 + [(C,2,2)]*2``),
so an utterance of ``n`` samples gives ``1 + (n - 400) // 320`` MFCC frames and as many conv frames.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 20.0
WINDOW = 400
HOP = 320


def num_frames(n_samples: int) -> int:
    """MFCC frames (and HuBERT conv frames) of an utterance of ``n_samples`` at 16 kHz."""
    return 0 if n_samples < WINDOW else 1 + (n_samples - WINDOW) // HOP


def mfcc39(wav: np.ndarray, sample_rate: int = 16000, cmn: bool = True) -> np.ndarray:
    """(frames, 39) float32: 13 MFCC + deltas + delta-deltas; per-utterance mean removed when ``cmn``."""
    import torch
    import torchaudio

    if len(wav) < WINDOW:
        raise ValueError(f"an utterance needs at least {WINDOW} samples (25 ms) for one MFCC frame, got {len(wav)}")
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).unsqueeze(0) * 32768.0
    with torch.no_grad():
        mfcc = torchaudio.compliance.kaldi.mfcc(
            x, sample_frequency=sample_rate, frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS,
            num_ceps=13, use_energy=False, dither=0.0, snip_edges=True,
        )  # (T, 13)
        feats = mfcc.transpose(0, 1)  # (13, T)
        d1 = torchaudio.functional.compute_deltas(feats)
        d2 = torchaudio.functional.compute_deltas(d1)
        out = torch.cat([feats, d1, d2], dim=0).transpose(0, 1)
        if cmn:
            out = out - out.mean(dim=0, keepdim=True)
    return out.numpy().astype(np.float32)


def fit_kmeans(features: Sequence[np.ndarray], n_clusters: int = 100, seed: int = 0, max_frames: int = 200_000):
    """MiniBatchKMeans on (at most ``max_frames``, sampled deterministically) MFCC frames."""
    from sklearn.cluster import MiniBatchKMeans

    frames = np.concatenate(list(features), axis=0)
    if len(frames) < n_clusters:
        raise ValueError(f"k-means with K={n_clusters} needs at least {n_clusters} frames, got {len(frames)}")
    rng = np.random.default_rng(seed)
    if len(frames) > max_frames:
        frames = frames[np.sort(rng.choice(len(frames), max_frames, replace=False))]
    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, batch_size=10_000, n_init=3,
                         max_iter=100, max_no_improvement=100, reassignment_ratio=0.0, compute_labels=False)
    km.fit(frames.astype(np.float64))
    return km


def assign(km, feats: np.ndarray) -> np.ndarray:
    """Cluster index per frame (int16)."""
    return km.predict(feats.astype(np.float64)).astype(np.int16)


def build_targets(wavs: Sequence[np.ndarray], n_clusters: int = 100, seed: int = 0, cmn: bool = True):
    """``(labels per utterance, cluster centres)`` for a list of 16 kHz waveforms."""
    feats = [mfcc39(w, cmn=cmn) for w in wavs]
    km = fit_kmeans(feats, n_clusters, seed)
    labels: List[np.ndarray] = [assign(km, f) for f in feats]
    return labels, km.cluster_centers_.astype(np.float32)


def assign_with_centres(feats: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest centre per frame (for held-out data, without the fitted estimator)."""
    f = feats.astype(np.float64)
    c = centres.astype(np.float64)
    d = (f**2).sum(1, keepdims=True) - 2 * f @ c.T + (c**2).sum(1)[None, :]
    return d.argmin(1).astype(np.int16)


def model_layer_features(ckpt, wavs: Sequence[np.ndarray], layer: int, log=None) -> List[np.ndarray]:
    """HuBERT's second iteration: per utterance, the ``(frames, D)`` hidden state ``layer`` (0 = the
    transformer input, ``n`` = the last layer after the final norm) of the ``hubert_local`` checkpoint
    ``ckpt`` through s3prl's HuBERT expert, one utterance at a time (no padding), float32.
    The frames are the conv frames, so they align with :func:`num_frames` like the MFCCs."""
    import torch
    from s3prl.upstream.hubert.expert import UpstreamExpert

    up = UpstreamExpert(str(ckpt)).eval()
    out: List[np.ndarray] = []
    with torch.no_grad():
        for k, w in enumerate(wavs):
            hs = up([torch.as_tensor(np.asarray(w, np.float32))])["hidden_states"]
            if not 0 <= layer < len(hs):
                raise ValueError(f"--target-layer {layer}: the model has hidden states 0..{len(hs) - 1}")
            h = hs[layer][0].float().numpy()
            n = num_frames(len(w))
            if len(h) < n:
                raise RuntimeError(f"the model gave {len(h)} frames for a {len(w)}-sample clip, expected {n}")
            out.append(np.ascontiguousarray(h[:n], dtype=np.float32))
            if log is not None and (k + 1) % 500 == 0:
                log(f"  features of {k + 1}/{len(wavs)} clips")
    return out


MFCC_DIM = 39


def read_centres(path, argument: str = "targets") -> np.ndarray:
    """The k-means centres of MFCC frames in ``path``: ``pretrain-tiny``'s target cache (``targets_*.npz``,
    key ``centres``) or a ``.npy`` array, (K, 39). Read without pickles."""
    from pathlib import Path

    from ..errors import UserInputError

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; give k-means centres of MFCC frames (pretrain-tiny's "
                             "targets_*.npz in its data folder, or a (K, 39) .npy array)", argument=argument)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "centres" not in z:
                    raise UserInputError(f"{path} has no `centres` array (keys: {', '.join(z.files)}); give "
                                         "pretrain-tiny's targets_*.npz", argument=argument)
                centres = z["centres"]
        else:
            centres = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserInputError(f"{path} is not a numpy .npz / .npy file ({e})", argument=argument) from None
    if centres.ndim != 2 or centres.shape[1] != MFCC_DIM or len(centres) < 2:
        raise UserInputError(f"{path}: centres of shape {tuple(centres.shape)}, expected (K, {MFCC_DIM}) k-means "
                             "centres of MFCC frames (targets from a model's hidden states are not supported here)",
                             argument=argument)
    return centres.astype(np.float32)


def mfcc_labels(wavs: Sequence[np.ndarray], centres: np.ndarray, cmn: bool = True) -> List[np.ndarray]:
    """Per utterance, the nearest of ``centres`` for each MFCC frame (HuBERT's first-iteration targets)."""
    return [assign_with_centres(mfcc39(w, cmn=cmn), centres) for w in wavs]
