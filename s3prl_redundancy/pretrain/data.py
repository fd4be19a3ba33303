"""Synthetic pretraining speech for ``tiny_hubert``: espeak-ng sentences spoken by many voices.

Every clip is a random sentence (or a short phrase) from an English word list, spoken by a random
voice: one of 8 English accents x one of the *training* voice variants, with random pitch, speed,
word gap, intonation width and amplitude, padded with a little silence and mixed with faint white
noise (20-40 dB SNR). Voice variants in :data:`HELDOUT_VARIANTS` never occur in pretraining: the
probes (``probe_sets``) use only them, so probe speakers are unseen voices.

Nothing here reproduces the mini-SUPERB test corpus's test utterances: no clip is a command word
alone (the KS test set) and no sentence equals one of its ER sentences (checked in :func:`plan_clips`).

Determinism: the plan (texts, voices) comes from ``random.Random(seed)`` and each clip's own
randomness (offset, gain, noise) from ``sha256(seed, index)``, so threads do not change the output.
"""

from __future__ import annotations

import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io import atomic_path, atomic_write_text
from ..superb.corpus import _BASE_VOICES, _ER_SENTENCES, _VOCAB, KS_COMMANDS
from ..superb.tts import SAMPLE_RATE, Voice, espeak_version, find_espeak, synthesize

DATA_FORMAT = 1

TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m8", "f1", "f2", "f3", "klatt", "klatt2", "klatt3",
    "Adam", "Alex", "Alicia", "Andrea", "Annie", "Antonio", "Auntie", "Belinda", "Benjamin", "Boris",
    "Caleb", "David", "Denis", "Diogo", "Ed", "Edward", "Gene", "Gustave", "Henrique", "Hugo", "Iven",
    "Iven2", "Jacky", "John", "Lee", "Linda", "Marcelo", "Marco", "Mario", "Max", "Michael", "Michel",
    "Miguel", "Mike", "Nguyen", "Pablo", "Paul", "Pedro", "Quincy", "Rob", "Robert", "Steph", "Steph2",
    "Storm", "Tweaky", "Zac", "anika", "grandpa", "grandma", "norbert", "sandro", "shelby", "travis",
    "victor", "whisper", "croak",
)
"""espeak-ng voice variants used for pretraining (68)."""

HELDOUT_VARIANTS = (
    "m6", "m7", "f4", "f5", "klatt4", "klatt5", "Andy", "Edward2", "Gene2", "Iven3", "Steph3", "anxiousAndy",
)
"""Variants kept out of pretraining; the probe sets use only these (12)."""

_EXTRA_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand "
    "monday tuesday friday sunday january april july october morning evening weather rain snow cloud "
    "kitchen garden window bottle coffee music doctor teacher station market village bridge mountain "
    "forest island orange yellow purple silver golden quiet happy angry tired hungry early late "
    "quickly slowly suddenly gently open close carry listen speak answer wonder travel jump swim "
    "climb build break fix paint wash cook drive fly sleep dream laugh smile wait arrive remember "
    "forget believe choose decide explain follow imagine improve notice promise receive return "
    "science history language picture market minute second machine computer engine garden planet "
    "ocean desert valley castle kingdom captain soldier farmer driver singer player writer"
).split()

WORDS: Tuple[str, ...] = tuple(sorted(set(_VOCAB) | set(_EXTRA_WORDS)))
"""The pretraining vocabulary (529 words): the corpus word list plus numbers, days, nouns and verbs."""

_PITCH_RANGES = (None, None, "low", "medium", "high", "x-high")


@dataclass(frozen=True)
class DataConfig:
    """What to synthesise. Defaults: 1900 clips, about 110 minutes of speech."""

    seed: int = 0
    n_sentences: int = 1500
    n_phrases: int = 400
    min_words: int = 4
    max_words: int = 16
    min_snr_db: float = 20.0
    max_snr_db: float = 40.0

    def key(self) -> str:
        blob = json.dumps(dict(asdict(self), format=DATA_FORMAT, words=len(WORDS)), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ClipPlan:
    index: int
    text: str
    voice: Voice


def random_voice(rng: random.Random, variants: Sequence[str]) -> Voice:
    """A random voice: accent x variant x pitch x speed x word gap x intonation width x amplitude."""
    return Voice(
        name=rng.choice(_BASE_VOICES),
        variant=rng.choice(list(variants)),
        pitch=rng.randint(15, 85),
        speed=rng.randint(115, 230),
        amplitude=rng.randint(70, 150),
        word_gap=rng.choice((0, 0, 0, 1, 2, 4)),
        pitch_range=rng.choice(_PITCH_RANGES),
    )


def _forbidden_texts() -> set:
    return {s.lower() for s in _ER_SENTENCES} | set(KS_COMMANDS)


def plan_clips(cfg: DataConfig) -> List[ClipPlan]:
    """The texts and voices of every clip (deterministic for ``cfg.seed``)."""
    if cfg.n_sentences < 0 or cfg.n_phrases < 0 or cfg.n_sentences + cfg.n_phrases == 0:
        raise ValueError(f"need a positive number of clips, got {cfg.n_sentences} sentences + {cfg.n_phrases} phrases")
    if not 1 <= cfg.min_words <= cfg.max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {cfg.min_words}, {cfg.max_words}")
    rng = random.Random(cfg.seed)
    forbidden = _forbidden_texts()
    plans: List[ClipPlan] = []
    while len(plans) < cfg.n_sentences + cfg.n_phrases:
        if len(plans) < cfg.n_sentences:
            n = rng.randint(cfg.min_words, cfg.max_words)
        else:
            n = rng.randint(1, 3)
        text = " ".join(rng.choice(WORDS) for _ in range(n))
        voice = random_voice(rng, TRAIN_VARIANTS)
        if text.lower() in forbidden:  # never a test utterance (a lone command word, an ER sentence)
            continue
        plans.append(ClipPlan(len(plans), text, voice))
    return plans


def _clip_rng(seed: int, tag: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{tag}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render(speech: np.ndarray, rng: np.random.Generator, snr_db: Tuple[float, float] = (20.0, 40.0),
           pad_s: Tuple[float, float] = (0.0, 0.3), target_peak: Tuple[float, float] = (0.3, 0.9)) -> np.ndarray:
    """Pad with silence, scale to a random peak, add white noise at a random SNR (float32)."""
    speech = np.asarray(speech, dtype=np.float32)
    peak = float(np.abs(speech).max()) or 1.0
    speech = speech * (rng.uniform(*target_peak) / peak)
    lead, tail = (int(rng.uniform(*pad_s) * SAMPLE_RATE) for _ in range(2))
    out = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    power = float(np.mean(speech.astype(np.float64) ** 2)) or 1e-8
    noise_std = np.sqrt(power / 10 ** (rng.uniform(*snr_db) / 10))
    out = out + rng.standard_normal(out.shape[0]).astype(np.float32) * np.float32(noise_std)
    return out.astype(np.float32)


def _synth_all(jobs: Sequence[Tuple[str, Voice]], workers: int) -> List[np.ndarray]:
    exe = find_espeak()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda job: synthesize(job[0], job[1], espeak=exe), jobs))


def synthesize_clips(cfg: DataConfig, workers: int = 4, limit: Optional[int] = None) -> Tuple[List[np.ndarray], List[ClipPlan]]:
    """Synthesise the planned clips (the first ``limit`` only, if given); returns (waveforms, plans)."""
    plans = plan_clips(cfg)[:limit]
    raw = _synth_all([(p.text, p.voice) for p in plans], workers)
    wavs = [render(w, _clip_rng(cfg.seed, f"clip{p.index}"), (cfg.min_snr_db, cfg.max_snr_db)) for w, p in zip(raw, plans)]
    return wavs, plans


# --------------------------------------------------------------------------------------------------
# cache on disk: <data_dir>/pretrain_<key>.npz (+ .json metadata), written atomically
# --------------------------------------------------------------------------------------------------


def load_or_build(cfg: DataConfig, data_dir, workers: int = 4, log=print) -> Tuple[List[np.ndarray], Dict]:
    """Waveforms of ``cfg`` from ``data_dir`` (built and cached there the first time) and their metadata."""
    data_dir = Path(data_dir)
    npz, meta_path = data_dir / f"pretrain_{cfg.key()}.npz", data_dir / f"pretrain_{cfg.key()}.json"
    if npz.exists() and meta_path.exists():
        with np.load(npz, allow_pickle=False) as z:
            audio, offsets = z["audio"], z["offsets"]
        meta = json.loads(meta_path.read_text())
        return [audio[offsets[i] : offsets[i + 1]].astype(np.float32) / 32767.0 for i in range(len(offsets) - 1)], meta
    import time

    t0 = time.time()
    wavs, plans = synthesize_clips(cfg, workers)
    pcm = [np.clip(np.round(w * 32767.0), -32767, 32767).astype(np.int16) for w in wavs]
    offsets = np.cumsum([0] + [len(p) for p in pcm]).astype(np.int64)
    meta = {
        "config": asdict(cfg), "key": cfg.key(), "n_clips": len(pcm), "seconds": float(offsets[-1] / SAMPLE_RATE),
        "min_clip_s": float(min(len(p) for p in pcm) / SAMPLE_RATE), "max_clip_s": float(max(len(p) for p in pcm) / SAMPLE_RATE),
        "n_words": len(WORDS), "train_variants": list(TRAIN_VARIANTS), "base_voices": list(_BASE_VOICES),
        "n_distinct_voices": len({p.voice for p in plans}), "espeak_version": espeak_version(),
        "build_seconds": round(time.time() - t0, 1), "texts": [p.text for p in plans],
    }
    with atomic_path(npz) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, audio=np.concatenate(pcm), offsets=offsets)
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    log(f"synthesised {meta['n_clips']} clips, {meta['seconds'] / 60:.1f} min of speech in {meta['build_seconds']} s -> {npz}")
    return [p.astype(np.float32) / 32767.0 for p in pcm], meta


# --------------------------------------------------------------------------------------------------
# probe sets: held-out voices only
# --------------------------------------------------------------------------------------------------


def heldout_voices(n: int, seed: int) -> List[Voice]:
    """``n`` distinct voices built only from :data:`HELDOUT_VARIANTS` (none occurs in pretraining)."""
    rng = random.Random(f"heldout/{seed}")
    voices: List[Voice] = []
    while len(voices) < n:
        v = random_voice(rng, HELDOUT_VARIANTS).with_(word_gap=0, pitch_range=None, amplitude=100)
        if v not in voices:
            voices.append(v)
    return voices


def _place(speech: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    speech = speech[:length]
    out = np.zeros(length, np.float32)
    start = int(rng.integers(0, length - len(speech) + 1))
    out[start : start + len(speech)] = speech
    return out


def ks_probe_set(n_voices: int = 40, seed: int = 1, workers: int = 4):
    """Keyword set: the 10 command words x ``n_voices`` held-out voices, 1 s clips, word at a random
    offset. Returns ``[(wav, word, voice_index)]``: group by voice to test on unseen voices."""
    voices = heldout_voices(n_voices, seed)
    jobs = [(w, v) for v in voices for w in KS_COMMANDS]
    raw = _synth_all(jobs, workers)
    items = []
    for k, ((word, voice), speech) in enumerate(zip(jobs, raw)):
        rng = _clip_rng(seed, f"ks{k}")
        clip = _place(render(speech, rng, pad_s=(0.0, 0.0)), SAMPLE_RATE, rng)
        items.append((clip, word, voices.index(voice)))
    return items


def sid_probe_set(n_speakers: int = 24, n_sentences: int = 10, seed: int = 2, workers: int = 4):
    """Speaker set: ``n_speakers`` held-out voices x ``n_sentences`` different sentences (the same
    sentences for every speaker). Returns ``[(wav, speaker_index, sentence_index)]``: group by sentence
    so that test utterances are sentences never seen in the probe's training split."""
    voices = heldout_voices(n_speakers, seed)
    rng = random.Random(f"sid/{seed}")
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8))) for _ in range(n_sentences)]
    jobs = [(s, v) for v in voices for s in sentences]
    raw = _synth_all(jobs, workers)
    items = []
    for k, ((sentence, voice), speech) in enumerate(zip(jobs, raw)):
        items.append((render(speech, _clip_rng(seed, f"sid{k}"), pad_s=(0.0, 0.2)), voices.index(voice), sentences.index(sentence)))
    return items
