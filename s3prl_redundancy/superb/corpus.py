"""Mini-SUPERB: a small corpus of real synthesised speech (espeak-ng) in the exact on-disk layouts that
s3prl's ``speech_commands`` (KS), ``voxceleb1`` (SID), ``emotion`` (ER) and ``asr`` experts read.

Layout under ``out_dir`` (``corpus.json`` lists the datarc values, relative to ``out_dir``)::

    speech_commands_v0.01/<word>/<speaker>_nohash_<n>.wav      KS train+dev (split by sha1 of <speaker>)
    speech_commands_v0.01/_background_noise_/*.wav             white / pink / brown noise (the _silence_ class)
    speech_commands_test_set_v0.01/<class>/*.wav               KS test: 10 commands, _unknown_, _silence_
    VoxCeleb1/{dev,test}/wav/idXXXXX/<youtube id>/NNNNN.wav    SID, one espeak voice per speaker
    VoxCeleb1/iden_split.txt                                   "<1|2|3> idXXXXX/<yt>/NNNNN.wav"
    IEMOCAP/Session<N>/sentences/wav/<dialog>/<utt>.wav        ER, 5 sessions x 2 speakers x 4 emotions
    IEMOCAP/Session<N>/dialog/EmoEvaluation/<dialog>.txt       IEMOCAP label files
    IEMOCAP/meta_data/Session<N>/{train,test}_meta_data.json   the emotion expert's fold files
    LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac (+ .trans.txt)
    LibriSpeech/len_for_bucket/<split>.csv, LibriSpeech/char.dict

Everything is 16 kHz 16-bit mono. A build is deterministic for a seed (same espeak-ng build): the
planning RNG is seeded with ``seed`` and every file's own randomness (offset, gain, noise) with
``sha256(seed, relative path)``, so the files do not depend on thread scheduling.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import UserInputError
from ..io import OutputDir, atomic_path, atomic_write_text, read_json
from . import datafiles
from .recipe_files import recipe_override_string
from .tasks import TASKS, normalize_task
from .tasks.ks import KS_COMMANDS, ks_hash_band
from .tts import SAMPLE_RATE, Voice, espeak_version, find_espeak, synthesize

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST = "corpus.json"
BUILD_MARKER = ".mini_superb_building"
GENERATOR = "s3prl_redundancy.superb.corpus"
FORMAT_VERSION = 1
SNR_DB = 30.0
"""Signal-to-noise ratio of the faint white noise added to every speech file."""

KS_AUXILIARY = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
                "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
"""Speech Commands v0.01's 20 auxiliary words (the ``_unknown_`` class)."""
KS_NOISES = ("white_noise", "pink_noise", "brown_noise")

EMOTIONS = ("neu", "hap", "ang", "sad")
_EMOTION_NAMES = {"neu": "Neutral", "hap": "Happiness", "ang": "Anger", "sad": "Sadness"}
_EMOTION_VAD = {"neu": (2.5, 2.5, 2.5), "hap": (4.0, 3.5, 3.0), "ang": (1.5, 4.0, 4.0), "sad": (1.5, 2.0, 2.0)}

ASR_SPLITS = datafiles.ASR_SPLITS

_BASE_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                "en-gb-x-gbcwmd", "en-us-nyc")
_MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
_FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")

_VOCAB = (
    "the a and of to in is it that was he she they we you for on with as his her at by from this have "
    "had not but what all were when there can your which their said if do will each about how up out "
    "them then many some so these would other into has more two like him see time could no make than "
    "first been its who now people my made over did down only way find use may water long little very "
    "after words called just where most know get through back much go good new write our me man too "
    "any day same right look think also around another came come work three word must because does "
    "part even place well such here take why things help put years different away again off went old "
    "number great tell men say small every found still between name should home big give air line "
    "set own under read last never us left end along while might next sound below saw something "
    "thought both few those always looked show large often together asked house don't world going "
    "want school important until form food keep children feet land side without boy once animals "
    "life enough took four head above kind began almost live page got earth need far hand high year "
    "mother light country father let night picture being study second soon story since white ever "
    "paper hard near better best across during today sure knew it's try told young sun thing whole "
    "hear example heard several change answer room sea against top turned learn point city play "
    "toward five himself usually money seen didn't car morning i'm body upon family later turn move "
    "face door cut done group true half red fish plants living black eat short run book gave order "
    "open ground cold really table remember tree course front space inside ago early i'll learned "
    "brought close nothing though idea before lived became add become grow draw yet less wind behind "
    "cannot letter among able dog mean rest perhaps certain six feel fire ready green built special "
    "ran full town complete person hot anything hold state list stood hundred ten fast felt kept "
    "can't strong voice probably area horse matter stand box start that's class piece river common "
    "stop talk whether fine round dark past ball girl road blue instead either held already warm gone "
    "finally summer understand moon animal mind outside power problem longer winter deep heavy "
    "carefully follow beautiful everyone leave everything game system bring watch shall"
).split()

_ER_SENTENCES = (
    "I did not expect to see you here today",
    "We have to leave before the train arrives",
    "The letter came this morning with the news",
    "You told me that everything would be fine",
    "They moved the meeting to the end of the week",
    "I have been waiting here for almost an hour",
    "She said the house was ready for us",
    "Nobody called me back after the interview",
    "We are going to the coast next summer",
    "He finally answered the question at the table",
    "Look at what they did with the garden",
    "It is the last day of the school year",
)


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusSize:
    ks_train_speakers: int
    ks_dev_speakers: int
    ks_test_speakers: int
    ks_unknown_words: int
    ks_repeats: int
    ks_noise_seconds: int
    ks_test_silence: int
    sid_speakers: int
    sid_videos: int
    sid_utts_per_video: int
    er_utts_per_emotion: int  # per speaker; 2 speakers per session, 5 sessions
    asr_speakers: tuple  # (train-clean-100, dev-clean, test-clean)
    asr_chapters: tuple
    asr_utts_per_chapter: tuple


SIZES = {
    "tiny": CorpusSize(
        ks_train_speakers=4, ks_dev_speakers=2, ks_test_speakers=2, ks_unknown_words=4, ks_repeats=1,
        ks_noise_seconds=6, ks_test_silence=4,
        sid_speakers=6, sid_videos=2, sid_utts_per_video=3,
        er_utts_per_emotion=2,
        asr_speakers=(4, 2, 2), asr_chapters=(1, 1, 1), asr_utts_per_chapter=(5, 4, 4),
    ),
    "small": CorpusSize(
        ks_train_speakers=12, ks_dev_speakers=4, ks_test_speakers=4, ks_unknown_words=10, ks_repeats=2,
        ks_noise_seconds=20, ks_test_silence=12,
        sid_speakers=16, sid_videos=3, sid_utts_per_video=4,
        er_utts_per_emotion=6,
        asr_speakers=(12, 4, 4), asr_chapters=(2, 1, 1), asr_utts_per_chapter=(5, 6, 6),
    ),
}
"""``tiny`` (304 files, 271 of them audio; ~6 s on 2 cores) and ``small`` (1392 files, ~12 s)."""


# --------------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------------


@dataclass
class CorpusInfo:
    """What :func:`build_corpus` wrote (also loadable from ``corpus.json`` with :func:`load_corpus`)."""

    root: Path
    size: str
    seed: int
    counts: dict
    datarc: dict  # task -> {datarc key: absolute path}
    downstream: dict  # task -> s3prl downstream name
    n_files: int
    content_sha256: str
    espeak_version: str
    build_seconds: Optional[float] = None
    manifest: dict = field(default_factory=dict, repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def datarc_for(self, task: str) -> dict:
        """``{datarc key: absolute path}`` for ``task`` (ks/sid/er/asr or the s3prl names)."""
        return dict(self.datarc[normalize_task(task)])

    def override_string(self, task: str, **kwargs) -> str:
        """s3prl ``-o`` value filling the data keys of ``task`` with this corpus (see ``recipe_override_string``)."""
        return recipe_override_string(task, self.datarc_for(task), **kwargs)


def load_corpus(root: PathLike) -> CorpusInfo:
    """Read ``<root>/corpus.json`` written by :func:`build_corpus`."""
    root = Path(root).resolve()
    path = root / MANIFEST
    if not path.is_file():
        raise UserInputError(
            f"{path} does not exist: {root} is not a mini-SUPERB corpus. Build one with "
            "s3prl_redundancy.superb.corpus.build_corpus (the corpus command).", argument="root")
    manifest = read_json(path, "mini-SUPERB manifest", argument="root")
    if manifest.get("generator") != GENERATOR:
        raise UserInputError(f"{path} was not written by {GENERATOR}", argument="root")
    tasks = manifest["tasks"]
    return CorpusInfo(
        root=root,
        size=manifest["size"],
        seed=manifest["seed"],
        counts={t: v["counts"] for t, v in tasks.items()},
        datarc={t: {k: str(root / p) for k, p in v["datarc"].items()} for t, v in tasks.items()},
        downstream={t: v["downstream"] for t, v in tasks.items()},
        n_files=manifest["n_files"],
        content_sha256=manifest["content_sha256"],
        espeak_version=manifest["tts"]["version"],
        manifest=manifest,
    )


# --------------------------------------------------------------------------------------------------
# audio helpers
# --------------------------------------------------------------------------------------------------


def _file_rng(seed: int, rel: str) -> np.random.Generator:
    digest = hashlib.sha256(f"mini-superb/{seed}/{rel}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _add_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float = SNR_DB) -> np.ndarray:
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    if power <= 0:
        return audio
    noise = rng.standard_normal(audio.shape[0]) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def _trim(audio: np.ndarray, rel_threshold: float = 0.02, pad: int = 800) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0:
        return audio
    idx = np.flatnonzero(np.abs(audio) > rel_threshold * peak)
    return audio[max(0, idx[0] - pad) : min(audio.size, idx[-1] + 1 + pad)]


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``white``/``pink``/``brown`` noise, ``n`` samples, RMS 0.1."""
    white = rng.standard_normal(n)
    if kind == "white":
        out = white
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1] if n > 1 else 1.0
        spec = spec / (np.sqrt(freqs) if kind == "pink" else freqs)
        out = np.fft.irfft(spec, n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    out = out - out.mean()
    out = out / (np.sqrt(np.mean(out ** 2)) + 1e-12) * 0.1
    return np.clip(out, -0.95, 0.95).astype(np.float32)


def _write_audio(path: Path, audio: np.ndarray, fmt: str) -> None:
    """Atomic 16-bit write (:func:`..io.atomic_path`)."""
    import soundfile as sf

    data = np.clip(audio, -1.0, 32767 / 32768).astype(np.float32)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, SAMPLE_RATE, format=fmt, subtype="PCM_16")


# --------------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    rel: str  # path relative to out_dir (posix)
    kind: str  # ks_word / noise / ks_silence / speech
    text: str = ""
    voice: Optional[Voice] = None
    fmt: str = "WAV"
    noise_kind: str = ""
    seconds: float = 0.0
    gain: bool = False


def _voices(rng: random.Random, n: int, variants: Sequence[str], pitch=(30, 70), speed=(150, 190)) -> list:
    combos = [(b, v) for b in _BASE_VOICES for v in variants]
    if n > len(combos):
        raise ValueError(f"cannot make {n} distinct voices from {len(combos)} base x variant combinations")
    picked = rng.sample(combos, n)
    return [Voice(b, v, pitch=rng.randint(*pitch), speed=rng.randint(*speed)) for b, v in picked]


def _sentence(rng: random.Random, lo: int = 5, hi: int = 10) -> str:
    return " ".join(rng.choice(_VOCAB) for _ in range(rng.randint(lo, hi)))


def _emotion_voice(base: Voice, emotion: str) -> Voice:
    """Emotion as prosody: pitch level, tempo, loudness, intonation range and pauses."""
    p, s = base.pitch, base.speed
    if emotion == "neu":
        return base.with_(pitch_range="medium", amplitude=100)
    if emotion == "hap":
        return base.with_(pitch=min(99, p + 18), speed=min(450, s + 35), amplitude=125, pitch_range="x-high")
    if emotion == "ang":
        return base.with_(pitch=max(0, p - 8), speed=min(450, s + 50), amplitude=190, pitch_range="high")
    if emotion == "sad":
        return base.with_(pitch=max(0, p - 20), speed=max(80, s - 55), amplitude=55, pitch_range="x-low", word_gap=3)
    raise ValueError(emotion)


def _plan(size: CorpusSize, seed: int) -> tuple:
    """All jobs, the extra text files, the datarc (relative) and counts, from the seeded planning RNG
    (one RNG drawn task after task, in this order, so a corpus depends on the seed only)."""
    rng = random.Random(f"mini-superb/{seed}")
    jobs: list = []
    datarc, counts, meta = {}, {}, {"er_turns": {}}
    datarc["ks"], counts["ks"] = _plan_ks(rng, size, jobs)
    datarc["sid"] = _plan_sid(rng, size, jobs)
    datarc["er"], counts["er"] = _plan_er(rng, size, jobs, meta["er_turns"])
    datarc["asr"], counts["asr"], texts = _plan_asr(rng, size, jobs)
    return jobs, texts, datarc, counts, meta


def _plan_ks(rng: random.Random, size: CorpusSize, jobs: list) -> tuple:
    """Speech Commands: speakers drawn until each hash band (train / dev / test) has its count."""
    sc, sc_test = "speech_commands_v0.01", "speech_commands_test_set_v0.01"
    want = {"train": size.ks_train_speakers, "dev": size.ks_dev_speakers, "test": size.ks_test_speakers}
    got: dict = {"train": [], "dev": [], "test": []}
    while any(len(got[b]) < want[b] for b in want):
        spk = f"{rng.getrandbits(32):08x}"
        band = ks_hash_band(spk)
        if len(got[band]) < want[band] and all(spk not in v for v in got.values()):
            got[band].append(spk)
    n_spk = sum(want.values())
    voices = dict(zip(got["train"] + got["dev"] + got["test"], _voices(rng, n_spk, _MALE_VARIANTS + _FEMALE_VARIANTS)))
    unknown = sorted(rng.sample(KS_AUXILIARY, size.ks_unknown_words))
    words = list(KS_COMMANDS) + unknown
    for spk in got["train"] + got["dev"]:
        for word in words:
            for rep in range(size.ks_repeats):
                jobs.append(_Job(f"{sc}/{word}/{spk}_nohash_{rep}.wav", "ks_word", word, voices[spk], gain=True))
    for kind in KS_NOISES:
        jobs.append(_Job(f"{sc}/_background_noise_/{kind}.wav", "noise", noise_kind=kind.split("_")[0],
                         seconds=size.ks_noise_seconds))
    n_test_unknown = 0
    for spk in got["test"]:
        for word in KS_COMMANDS:
            jobs.append(_Job(f"{sc_test}/{word}/{spk}_nohash_0.wav", "ks_word", word, voices[spk], gain=True))
        for k, word in enumerate(unknown):
            jobs.append(_Job(f"{sc_test}/_unknown_/{spk}_nohash_{k}.wav", "ks_word", word, voices[spk], gain=True))
            n_test_unknown += 1
    for i in range(size.ks_test_silence):
        jobs.append(_Job(f"{sc_test}/_silence_/silence_{i:03d}_nohash_0.wav", "ks_silence",
                         noise_kind=KS_NOISES[i % len(KS_NOISES)].split("_")[0], seconds=1.0))
    per_spk = len(words) * size.ks_repeats
    counts = {
        "speakers": {b: len(v) for b, v in got.items()},
        "commands": list(KS_COMMANDS),
        "unknown_words": unknown,
        "train_clips": len(got["train"]) * per_spk,
        "dev_clips": len(got["dev"]) * per_spk,
        "background_noise_files": len(KS_NOISES),
        "test_clips": len(got["test"]) * len(KS_COMMANDS) + n_test_unknown + size.ks_test_silence,
    }
    return {"speech_commands_root": sc, "speech_commands_test_root": sc_test}, counts



def _plan_sid(rng: random.Random, size: CorpusSize, jobs: list) -> dict:
    """VoxCeleb1: one voice per speaker id, a third of the speakers in the test subset."""
    vox = "VoxCeleb1"
    ids = sorted(rng.sample(range(datafiles.VOXCELEB1_FIRST_ID, datafiles.VOXCELEB1_FIRST_ID + datafiles.VOXCELEB1_NUM_SPEAKERS),
                            size.sid_speakers))
    sid_voices = _voices(rng, size.sid_speakers, _MALE_VARIANTS + _FEMALE_VARIANTS, pitch=(20, 80), speed=(140, 200))
    n_test_subset = max(1, size.sid_speakers // 3)
    yt_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    for i, (num, voice) in enumerate(zip(ids, sid_voices)):
        subset = "test" if i >= size.sid_speakers - n_test_subset else "dev"
        utt = 0
        for _ in range(size.sid_videos):
            yt = "".join(rng.choice(yt_chars) for _ in range(11))
            for _ in range(size.sid_utts_per_video):
                utt += 1
                jobs.append(_Job(f"{vox}/{subset}/wav/id{num}/{yt}/{utt:05d}.wav", "speech",
                                 _sentence(rng, 6, 12), voice))
    return {"file_path": vox, "meta_data": f"{vox}/iden_split.txt"}



def _plan_er(rng: random.Random, size: CorpusSize, jobs: list, turns: dict) -> tuple:
    """IEMOCAP: 5 sessions x (one female, one male voice) x 4 emotions; ``turns`` gets the label lines."""
    iem = "IEMOCAP"
    for n in range(1, 6):
        session = f"Session{n}"
        female = _voices(rng, 1, _FEMALE_VARIANTS, pitch=(45, 70), speed=(150, 180))[0]
        male = _voices(rng, 1, _MALE_VARIANTS, pitch=(25, 50), speed=(150, 180))[0]
        dialogs = [f"Ses{n:02d}F_impro01", f"Ses{n:02d}M_impro01"]
        turn_counter: dict = {}
        for gender, voice in (("F", female), ("M", male)):
            for emotion in EMOTIONS:
                for k in range(size.er_utts_per_emotion):
                    dialog = dialogs[k % len(dialogs)]
                    idx = turn_counter.get((dialog, gender), 0)
                    turn_counter[(dialog, gender)] = idx + 1
                    utt = f"{dialog}_{gender}{idx:03d}"
                    rel = f"{iem}/{session}/sentences/wav/{dialog}/{utt}.wav"
                    jobs.append(_Job(rel, "speech", rng.choice(_ER_SENTENCES), _emotion_voice(voice, emotion)))
                    turns.setdefault((session, dialog), []).append((utt, emotion, rel))
    counts = {"sessions": 5, "speakers_per_session": 2, "utterances": 5 * 2 * 4 * size.er_utts_per_emotion,
                    "per_label_per_session": 2 * size.er_utts_per_emotion}
    return {"root": iem, "meta_data": f"{iem}/meta_data"}, counts



def _plan_asr(rng: random.Random, size: CorpusSize, jobs: list) -> tuple:
    """LibriSpeech: speakers x chapters x utterances per split, with their transcripts."""
    libri = "LibriSpeech"
    spk_ids = rng.sample(range(100, 9000), sum(size.asr_speakers))
    chapter_ids = rng.sample(range(1000, 99999), sum(s * c for s, c in zip(size.asr_speakers, size.asr_chapters)))
    asr_voices = _voices(rng, sum(size.asr_speakers), _MALE_VARIANTS + _FEMALE_VARIANTS, speed=(150, 175))
    counts: dict = {}
    trans: dict = {}
    s_i = c_i = 0
    for split, n_spk, n_ch, n_utt in zip(ASR_SPLITS, size.asr_speakers, size.asr_chapters, size.asr_utts_per_chapter):
        n_files = 0
        for _ in range(n_spk):
            spk, voice = spk_ids[s_i], asr_voices[s_i]
            s_i += 1
            for _ in range(n_ch):
                chapter = chapter_ids[c_i]
                c_i += 1
                lines = []
                for u in range(n_utt):
                    uid = f"{spk}-{chapter}-{u:04d}"
                    text = _sentence(rng, 5, 10)
                    jobs.append(_Job(f"{libri}/{split}/{spk}/{chapter}/{uid}.flac", "speech", text, voice, fmt="FLAC"))
                    lines.append(f"{uid} {text.upper()}\n")
                    n_files += 1
                trans[f"{libri}/{split}/{spk}/{chapter}/{spk}-{chapter}.trans.txt"] = "".join(lines)
        counts[split] = n_files
    counts["speakers"] = dict(zip(ASR_SPLITS, size.asr_speakers))
    return {"libri_root": libri, "bucket_file": f"{libri}/len_for_bucket", "dict_path": f"{libri}/char.dict"}, counts, trans


def _render(job: _Job, seed: int, espeak: str) -> np.ndarray:
    rng = _file_rng(seed, job.rel)
    if job.kind == "noise":
        return colored_noise(job.noise_kind, int(job.seconds * SAMPLE_RATE), rng)
    if job.kind == "ks_silence":
        # like the real test set's _silence_ clips: a 1 s crop of background noise at a random low level
        return colored_noise(job.noise_kind, SAMPLE_RATE, rng) * float(rng.uniform(0.05, 1.0))
    if job.kind == "ks_word":
        voice = job.voice
        for _ in range(4):
            word = _trim(synthesize(job.text, voice, espeak=espeak))
            if word.size <= SAMPLE_RATE:
                break
            voice = voice.with_(speed=min(450, voice.speed + 40))
        word = word[:SAMPLE_RATE]
        clip = np.zeros(SAMPLE_RATE, dtype=np.float32)
        offset = int(rng.integers(0, SAMPLE_RATE - word.size + 1))
        clip[offset : offset + word.size] = word * float(rng.uniform(0.5, 1.0))
        return _add_noise(clip, rng)
    if job.kind == "speech":
        return _add_noise(synthesize(job.text, job.voice, espeak=espeak), rng)
    raise ValueError(job.kind)


def _emo_evaluation(turns: list, durations: dict) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n", "\n"]
    t = 1.0
    for utt, emotion, rel in sorted(turns):
        dur = durations[rel] / SAMPLE_RATE
        v, a, d = _EMOTION_VAD[emotion]
        lines.append(f"[{t:.4f} - {t + dur:.4f}]\t{utt}\t{emotion}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n")
        lines.append(f"C-E1:\t{_EMOTION_NAMES[emotion]};\t()\n")
        lines.append("\n")
        t += dur + 0.5
    return "".join(lines)


# --------------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------------

_OWN_ENTRIES = ("speech_commands_v0.01", "speech_commands_test_set_v0.01", "VoxCeleb1", "IEMOCAP", "LibriSpeech",
                MANIFEST, BUILD_MARKER)
"""Everything a build writes under its folder (the output-folder marker records them)."""


def build_corpus(
    out_dir: PathLike,
    size: str = "tiny",
    seed: int = 0,
    force: bool = False,
    *,
    workers: Optional[int] = None,
    progress: Union[bool, Callable[[int], Any]] = False,
) -> CorpusInfo:
    """Build the mini-SUPERB corpus under ``out_dir`` (see the module docstring for the layout).

    size: ``tiny`` or ``small`` (:data:`SIZES`). seed: same seed -> byte-identical audio with the same
    espeak-ng build. force: rebuild in a folder that holds a previous corpus build (its files are deleted
    first; other files are left alone) or write beside files of others (:class:`..io.OutputDir`, command
    ``corpus``). workers: parallel espeak-ng processes (default ``min(2, cpu count)``). progress: True for a
    tqdm bar, or a callable receiving the number of files just finished.
    """
    if size not in SIZES:
        raise UserInputError(f"unknown corpus size {size!r}; use one of {sorted(SIZES)}", argument="size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserInputError(f"seed must be a non-negative integer, got {seed!r}", argument="seed")
    seed = int(seed)
    out = OutputDir(Path(out_dir).expanduser().resolve(), "corpus", force=force)
    out.check(outputs=_OWN_ENTRIES)  # refuse before anything else
    espeak = find_espeak()
    version = espeak_version(espeak)
    out.prepare()
    out.record(*_OWN_ENTRIES)  # before writing, so that `force` can clean up after a crash mid-build
    start = time.perf_counter()
    out.write_text(BUILD_MARKER, json.dumps({"generator": GENERATOR, "size": size, "seed": seed}) + "\n")
    jobs, texts, datarc, counts, meta = _plan(SIZES[size], seed)
    durations = _render_all(jobs, out.path, seed, espeak, workers, progress, f"mini-SUPERB {size}")
    _write_side_files(out.path, texts, meta, durations)
    extra = _write_data_files(out.path, datarc, seed)
    counts["sid"], counts["er"]["labels"] = extra["sid"], extra["er_labels"]
    files = sorted(p for name in _OWN_ENTRIES[:-2] for p in (out.path / name).rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(out.path).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    manifest = {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "size": size,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "snr_db": SNR_DB,
        "tts": {"engine": "espeak-ng", "version": version},
        "paths_relative_to": "the folder holding this file",
        "n_files": len(files),
        "n_audio_files": len(jobs),
        "content_sha256": digest.hexdigest(),
        "tasks": {t: {"downstream": TASKS[t].downstream, "datarc": datarc[t], "counts": counts[t]} for t in TASKS},
    }
    out.write_json(MANIFEST, manifest)
    (out.path / BUILD_MARKER).unlink()
    info = load_corpus(out.path)
    info.build_seconds = time.perf_counter() - start
    return info


def _render_all(jobs: Sequence[_Job], out: Path, seed: int, espeak: str, workers: Optional[int],
                progress: Union[bool, Callable[[int], Any]], title: str) -> dict:
    """Synthesise every job in parallel espeak-ng processes; returns ``{relative path: samples}``."""
    n_workers = max(1, int(workers)) if workers is not None else max(1, min(2, os.cpu_count() or 1))
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=title, unit="file")
        step = bar.update
    else:
        step = progress if callable(progress) else None

    def run(job: _Job) -> int:
        try:
            audio = _render(job, seed, espeak)
        except Exception as exc:  # name the file in the error
            raise RuntimeError(f"could not render {job.rel}: {exc}") from exc
        _write_audio(out / job.rel, audio, job.fmt)
        return int(audio.shape[0])

    durations: dict = {}
    try:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for job, n in zip(jobs, pool.map(run, jobs)):
                durations[job.rel] = n
                if step is not None:
                    step(1)
    finally:
        if bar is not None:
            bar.close()
    return durations


def _write_side_files(out: Path, texts: Mapping[str, str], meta: Mapping[str, Any], durations: Mapping[str, int]) -> None:
    """The transcripts and the IEMOCAP label files (they need the rendered durations)."""
    for rel, text in texts.items():
        atomic_write_text(out / rel, text)
    for (session, dialog), turns in meta["er_turns"].items():
        atomic_write_text(out / "IEMOCAP" / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
                          _emo_evaluation(turns, durations))


def _write_data_files(out: Path, datarc: Mapping[str, Mapping[str, str]], seed: int) -> dict:
    """The files s3prl's pip package lacks, written by the same writers users call on real data; returns the
    counts they add (``sid`` split counts, ``er`` labels)."""
    sid, er, asr = datarc["sid"], datarc["er"], datarc["asr"]
    counts = {"sid": datafiles.write_voxceleb1_split(out / sid["file_path"], out / sid["meta_data"], seed=seed,
                                                     force=True)}
    labels = datafiles.write_iemocap_meta(out / er["root"], out / er["meta_data"], force=True)
    datafiles.write_len_for_bucket(out / asr["libri_root"], out / asr["bucket_file"], ASR_SPLITS, force=True)
    datafiles.write_char_dict(out / asr["dict_path"], force=True)
    return {"sid": counts["sid"], "er_labels": labels}
