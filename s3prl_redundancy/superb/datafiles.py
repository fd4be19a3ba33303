"""The data files s3prl's pip package does not ship, and their readers.

Writers (each validates its input and names the missing folder or file and the fix; every file is written
atomically, and an existing different file is only replaced with ``force=True``):
    :func:`write_char_dict` (the 28-symbol fairseq ``char.dict`` of s3prl's ASR),
    :func:`write_voxceleb1_split` (``<1|2|3> idXXXXX/<yt>/NNNNN.wav`` lines),
    :func:`write_iemocap_meta` (``Session<N>/{train,test}_meta_data.json`` as the emotion expert reads them),
    :func:`write_len_for_bucket` (``<split>.csv`` as s3prl's ``preprocess/generate_len_for_bucket.py`` writes them).

Only the standard library, numpy and soundfile are imported (soundfile lazily). Nothing here knows the task
registry (:mod:`.tasks` reads these files to check a layout).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import UserInputError
from ..io import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]

ER_LABELS = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
"""The label map s3prl's ``IEMOCAP_preprocess.py`` writes (``exc`` is merged into ``hap``)."""

ASR_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
"""The LibriSpeech splits SUPERB ASR uses (train / dev-clean / test-clean)."""

# --------------------------------------------------------------------------------------------------
# small file helpers
# --------------------------------------------------------------------------------------------------


def write_if_changed(path: PathLike, text: str, *, force: bool, what: str, argument: str = "out_path") -> Path:
    """Write ``text`` atomically (:func:`..io.atomic_write_bytes`). An existing file with the same content is
    left alone; a different one is only replaced with ``force=True``."""
    path, data = Path(path), text.encode("utf-8")
    if path.is_dir():
        raise UserInputError(f"cannot write the {what} to {path}: it is a folder; pass a file path", argument=argument)
    if path.exists():
        if path.read_bytes() == data:
            return path
        if not force:
            raise UserInputError(
                f"{path} already exists with different content; refusing to overwrite the {what}. "
                "Pass `force=True` to replace it, or choose another path.", argument=argument)
    return atomic_write_bytes(path, data)


def _data_lines(path: Path, missing: str, argument: str = "path"):
    """``(line number, line)`` of the non-blank lines of a data file; ``missing`` is the error when it is absent."""
    if not path.is_file():
        raise UserInputError(missing, argument=argument)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield lineno, line


def _require_dir(path: Path, what: str, fix: str, argument: str = "root") -> Path:
    path = Path(path)
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise UserInputError(f"{what} {path} {state}. {fix}", argument=argument)
    return path


def _visible(name: str) -> bool:
    return not name.startswith(".")


# --------------------------------------------------------------------------------------------------
# char.dict
# --------------------------------------------------------------------------------------------------

CHAR_DICT = (
    ("|", 1980202), ("E", 1091870), ("T", 789572), ("A", 689048), ("O", 647720), ("N", 591778),
    ("I", 585614), ("H", 557204), ("S", 545238), ("R", 499568), ("D", 380912), ("L", 344952),
    ("U", 242014), ("M", 217730), ("C", 210734), ("W", 204598), ("F", 195086), ("G", 174098),
    ("Y", 168548), ("P", 146722), ("B", 129608), ("V", 81496), ("K", 65070), ("'", 19660),
    ("X", 12530), ("J", 12062), ("Q", 8164), ("Z", 4916),
)
"""s3prl's ``downstream/asr/char.dict`` (s3prl/s3prl@4e6775f4): ``|`` word separator, 26 letters and the
apostrophe with their LibriSpeech counts, most frequent first. fairseq adds <s>, <pad>, </s>, <unk>."""


def char_dict_text() -> str:
    """The exact text of s3prl's ``char.dict`` (28 ``<symbol> <count>`` lines, no trailing newline)."""
    return "\n".join(f"{sym} {count}" for sym, count in CHAR_DICT)


def write_char_dict(out_path: PathLike, *, force: bool = False) -> Path:
    """Write the ASR ``char.dict`` to ``out_path`` (the ``dict_path`` datarc key)."""
    return write_if_changed(out_path, char_dict_text(), force=force, what="ASR char.dict")


def read_char_dict(path: PathLike) -> list:
    """Parse a fairseq-style dictionary (``<symbol> <count>`` per line); returns the symbols in order."""
    path = Path(path)
    symbols = []
    missing = (f"ASR dictionary {path} does not exist. Write it with "
               "s3prl_redundancy.superb.datafiles.write_char_dict(path) or use downstream_recipes/asr/char.dict.")
    for lineno, line in _data_lines(path, missing):
        parts = line.rstrip("\n").split(" ")
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserInputError(f"{path}:{lineno}: expected '<symbol> <count>', got {line!r}", argument="path")
        symbols.append(parts[0])
    if len(set(symbols)) != len(symbols):
        raise UserInputError(f"{path} lists a symbol twice; rewrite it with write_char_dict()", argument="path")
    return symbols


# --------------------------------------------------------------------------------------------------
# VoxCeleb1 identification split
# --------------------------------------------------------------------------------------------------

VOXCELEB1_SPEAKER_RE = re.compile(r"^id(\d{5})$")
VOXCELEB1_FIRST_ID, VOXCELEB1_NUM_SPEAKERS = 10001, 1251
"""The voxceleb1 expert labels a speaker ``int(name[2:]) - 10001`` with 1251 output classes."""


def voxceleb1_speaker_label(name: str) -> int:
    """The class index the voxceleb1 expert gives speaker folder ``name`` (``id10001`` -> 0); raises
    :class:`UserInputError` for names it cannot handle."""
    match = VOXCELEB1_SPEAKER_RE.match(name)
    label = int(match.group(1)) - VOXCELEB1_FIRST_ID if match else -1
    if not 0 <= label < VOXCELEB1_NUM_SPEAKERS:
        raise UserInputError(
            f"VoxCeleb1 speaker folder {name!r} is not id10001..id11251: s3prl's voxceleb1 expert derives the "
            "class as int(name[2:]) - 10001 over 1251 classes. Rename the speaker folders to idXXXXX in that range.", argument="name"
        )
    return label


def scan_voxceleb1(root: PathLike) -> dict:
    """``{speaker: [relative paths 'idXXXXX/<yt>/NNNNN.wav', sorted]}`` of a VoxCeleb1 root holding
    ``<subset>/wav/idXXXXX/<youtube id>/*.wav`` (subset = dev / test), exactly what the expert globs
    (``root.glob('*/wav/' + relpath)``)."""
    root = _require_dir(
        Path(root), "VoxCeleb1 root (file_path)",
        "Point it at the folder holding dev/wav/ and test/wav/ (the unpacked vox1_dev_wav.zip / vox1_test_wav.zip).",
    )
    wav_dirs = sorted(p for p in root.glob("*/wav") if p.is_dir() and _visible(p.parent.name))
    if not wav_dirs:
        raise UserInputError(
            f"VoxCeleb1 root {root} has no <subset>/wav/ folder; expected {root}/dev/wav/idXXXXX/<youtube id>/NNNNN.wav "
            "(and/or test/wav/...). Unpack vox1_dev_wav.zip into dev/ and vox1_test_wav.zip into test/, or point "
            "file_path at the folder that holds them.", argument="root"
        )
    speakers: dict = {}
    seen: dict = {}
    for wav_dir in wav_dirs:
        for spk in sorted(p for p in wav_dir.iterdir() if p.is_dir() and _visible(p.name)):
            voxceleb1_speaker_label(spk.name)
            for video in sorted(p for p in spk.iterdir() if p.is_dir() and _visible(p.name)):
                for wav in sorted(video.glob("*.wav")):
                    if not _visible(wav.name):
                        continue
                    rel = f"{spk.name}/{video.name}/{wav.name}"
                    if rel in seen:
                        raise UserInputError(
                            f"{rel} exists under both {seen[rel]} and {wav_dir}; the voxceleb1 expert would pick one "
                            "arbitrarily. Keep each utterance in a single <subset>/wav/ folder.", argument="root"
                        )
                    seen[rel] = wav_dir
                    speakers.setdefault(spk.name, []).append(rel)
    if not speakers:
        raise UserInputError(
            f"no utterances found under {', '.join(str(d) for d in wav_dirs)}; expected "
            "idXXXXX/<youtube id>/NNNNN.wav files below each wav/ folder.", argument="root"
        )
    return {spk: sorted(paths) for spk, paths in sorted(speakers.items())}


def write_voxceleb1_split(
    root: PathLike,
    out_path: PathLike,
    *,
    dev_per_speaker: int = 1,
    test_per_speaker: int = 1,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Write an identification split file (the voxceleb1 ``meta_data`` key) for the corpus at ``root``.

    Every speaker contributes ``test_per_speaker`` utterances to test (3), ``dev_per_speaker`` to dev (2)
    and the rest to train (1), drawn with a per-speaker RNG seeded by ``seed`` and the speaker id, so
    the file only depends on the set of files and the seed. Lines are ``<1|2|3> idXXXXX/<yt>/NNNNN.wav``
    sorted by path. For the real VoxCeleb1 use the official ``iden_split.txt`` instead (same format).
    Returns ``{"speakers", "train", "dev", "test"}`` counts.
    """
    if dev_per_speaker < 1 or test_per_speaker < 1:
        raise ValueError("dev_per_speaker and test_per_speaker must be >= 1 (the expert evaluates dev and test)")
    speakers = scan_voxceleb1(root)
    need = dev_per_speaker + test_per_speaker + 1
    lines, counts = [], {"speakers": len(speakers), "train": 0, "dev": 0, "test": 0}
    for spk, paths in speakers.items():
        if len(paths) < need:
            raise UserInputError(
                f"speaker {spk} has {len(paths)} utterance(s) under {root}; a split with {test_per_speaker} test and "
                f"{dev_per_speaker} dev utterance(s) per speaker needs at least {need}. Add utterances, remove the "
                "speaker, or lower dev_per_speaker/test_per_speaker.", argument="root"
            )
        order = list(paths)
        random.Random(f"voxceleb1-split/{seed}/{spk}").shuffle(order)
        for i, rel in enumerate(order):
            split = 3 if i < test_per_speaker else 2 if i < need - 1 else 1
            counts[{1: "train", 2: "dev", 3: "test"}[split]] += 1
            lines.append((rel, split))
    text = "".join(f"{split} {rel}\n" for rel, split in sorted(lines))
    write_if_changed(out_path, text, force=force, what="VoxCeleb1 split file")
    return counts


def read_voxceleb1_split(path: PathLike) -> list:
    """``[(split:int, relpath:str)]`` of a split file, validated (split in 1/2/3, path idXXXXX/<yt>/<name>.wav)."""
    path = Path(path)
    rows = []
    missing = (f"VoxCeleb1 split file (meta_data) {path} does not exist. Use VoxCeleb1's iden_split.txt or write one "
               "with s3prl_redundancy.superb.datafiles.write_voxceleb1_split(root, path).")
    for lineno, line in _data_lines(path, missing):
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("1", "2", "3") or len(parts[1].split("/")) != 3:
            raise UserInputError(
                f"{path}:{lineno}: expected '<1|2|3> idXXXXX/<youtube id>/NNNNN.wav', got {line!r}", argument="path"
            )
        rows.append((int(parts[0]), parts[1]))
    return rows


# --------------------------------------------------------------------------------------------------
# IEMOCAP meta data
# --------------------------------------------------------------------------------------------------

_IEMOCAP_KEEP = ("neu", "hap", "ang", "sad", "exc")


def iemocap_sessions(root: PathLike) -> list:
    """Sorted ``Session*`` folder names under an IEMOCAP root (the preprocess script's selection)."""
    root = _require_dir(
        Path(root), "IEMOCAP root",
        "Point it at IEMOCAP_full_release/, the folder holding Session1/ .. Session5/.",
    )
    sessions = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[:7] == "Session")
    if not sessions:
        raise UserInputError(
            f"IEMOCAP root {root} has no Session* folders; expected {root}/Session1/sentences/wav/<dialog>/<utt>.wav "
            "and Session1/dialog/EmoEvaluation/<dialog>.txt. Point the root at IEMOCAP_full_release/.", argument="root"
        )
    return sessions


def _iemocap_session_entries(root: Path, session: str) -> list:
    """One session's ``{"path","label","speaker"}`` entries, as s3prl's ``IEMOCAP_preprocess.py`` builds them."""
    wav_root = root / session / "sentences" / "wav"
    label_dir = root / session / "dialog" / "EmoEvaluation"
    _require_dir(wav_root, f"IEMOCAP {session} audio folder", f"Expected {session}/sentences/wav/<dialog>/<utt>.wav.")
    _require_dir(label_dir, f"IEMOCAP {session} label folder", f"Expected {session}/dialog/EmoEvaluation/<dialog>.txt.")
    wavs = {}
    for dirpath, dirnames, filenames in os.walk(wav_root):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filenames):
            if _visible(name) and name.lower().endswith(".wav"):
                wavs[os.path.splitext(name)[0]] = Path(dirpath, name).relative_to(root).as_posix()
    label_files = sorted(p for p in label_dir.iterdir() if p.suffix == ".txt" and p.is_file() and _visible(p.name))
    if not label_files:
        raise UserInputError(f"{label_dir} has no <dialog>.txt label files (IEMOCAP's EmoEvaluation files).", argument="root")
    entries = []
    for label_file in label_files:
        with open(label_file, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.startswith("["):
                    continue
                fields = [f for f in re.split("[\t\n]", line) if f]
                if len(fields) < 3 or fields[2] not in _IEMOCAP_KEEP or fields[1] not in wavs:
                    continue
                path = wavs[fields[1]]
                entries.append({
                    "path": path,
                    "label": fields[2].replace("exc", "hap"),
                    "speaker": re.split("_", os.path.basename(path))[0],
                })
    if not entries:
        raise UserInputError(
            f"IEMOCAP {session}: no utterance labelled neu/hap/ang/sad/exc in {label_dir} matches a wav under "
            f"{wav_root}. Check that the label lines ('[start - end]<TAB><utt><TAB><label><TAB>[v, a, d]') name "
            "existing <utt>.wav files.", argument="root"
        )
    return entries


def write_iemocap_meta(
    root: PathLike,
    out_dir: Optional[PathLike] = None,
    *,
    force: bool = False,
) -> dict:
    """Write the emotion expert's fold files, as s3prl's ``downstream/emotion/IEMOCAP_preprocess.py`` does.

    For every ``Session<N>`` under ``root``: ``<out_dir>/Session<N>/test_meta_data.json`` (that session) and
    ``train_meta_data.json`` (all other sessions), each ``{"labels": {"neu":0,"hap":1,"ang":2,"sad":3},
    "meta_data": [{"path": "Session1/sentences/wav/<dialog>/<utt>.wav", "label", "speaker"}]}`` with paths
    relative to ``root`` (the ``root`` datarc key) and ``out_dir`` the ``meta_data`` datarc key (default
    ``<root>/meta_data``). Labels come from ``Session<N>/dialog/EmoEvaluation/*.txt``; ``exc`` counts as
    ``hap``, other labels are dropped. Returns ``{session: {label: count}}``.
    """
    root = Path(root)
    sessions = iemocap_sessions(root)
    if len(sessions) < 2:
        raise UserInputError(
            f"IEMOCAP root {root} has only {sessions}; leave-one-session-out needs at least two Session* folders.", argument="root"
        )
    out_dir = Path(out_dir) if out_dir is not None else root / "meta_data"
    per_session = {s: _iemocap_session_entries(root, s) for s in sessions}
    for session in sessions:
        train = [e for s in sessions if s != session for e in per_session[s]]
        for name, entries in (("train_meta_data.json", train), ("test_meta_data.json", per_session[session])):
            text = json.dumps({"labels": dict(ER_LABELS), "meta_data": entries})
            write_if_changed(out_dir / session / name, text, force=force, what=f"IEMOCAP {session} {name}",
                             argument="out_dir")
    counts = {}
    for session, entries in per_session.items():
        counts[session] = {label: sum(e["label"] == label for e in entries) for label in ER_LABELS}
    return counts


# --------------------------------------------------------------------------------------------------
# LibriSpeech len_for_bucket
# --------------------------------------------------------------------------------------------------


def _utterance_lengths(root: Path, split: str, audio_extension: str) -> list:
    """``[(path relative to root, samples)]`` of one LibriSpeech split, checked as s3prl's ASR dataset asserts
    (``<spk>/<chapter>/`` folders with their transcript, 16 kHz audio)."""
    import soundfile as sf

    split_dir = root / split
    files = sorted(p for p in split_dir.rglob("*" + audio_extension) if _visible(p.name))
    if not files:
        raise UserInputError(f"no {audio_extension} files under {split_dir}; expected <spk>/<chapter>/<spk>-<chapter>-<utt>{audio_extension}", argument="libri_root")
    rows = []
    checked_chapters = set()
    for path in files:
        rel = path.relative_to(root)
        if len(rel.parts) != 4:
            raise UserInputError(
                f"{path} is not at {split}/<spk>/<chapter>/<utt>{audio_extension}; s3prl's ASR dataset reads the "
                "transcript <spk>-<chapter>.trans.txt from the file's parent folder.", argument="libri_root"
            )
        chapter_dir = path.parent
        if chapter_dir not in checked_chapters:
            trans = chapter_dir / f"{rel.parts[1]}-{rel.parts[2]}.trans.txt"
            if not trans.is_file():
                raise UserInputError(f"transcript {trans} is missing (s3prl's ASR dataset asserts it exists).", argument="libri_root")
            checked_chapters.add(chapter_dir)
        info = sf.info(str(path))
        if info.samplerate != 16000:
            raise UserInputError(
                f"{path} is {info.samplerate} Hz; s3prl's ASR dataset asserts 16000 Hz. Resample the corpus to 16 kHz.", argument="libri_root"
            )
        rows.append((rel.as_posix(), int(info.frames)))
    return rows


def write_len_for_bucket(
    libri_root: PathLike,
    out_dir: PathLike,
    splits: Sequence[str] = ASR_SPLITS,
    *,
    audio_extension: str = ".flac",
    force: bool = False,
) -> dict:
    """Write ``<out_dir>/<split>.csv`` for s3prl's ASR dataset (the ``bucket_file`` datarc key).

    Same format as s3prl's ``preprocess/generate_len_for_bucket.py`` (a pandas ``to_csv`` with index):
    header ``,file_path,length,label``, one row per utterance sorted by length (longest first, ties by
    path), ``file_path`` relative to ``libri_root`` (``train-clean-100/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``),
    ``length`` in samples, ``label`` empty. Checks that every chapter folder has its
    ``<spk>-<chapter>.trans.txt`` and that the audio is 16 kHz (the dataset asserts both).
    Returns ``{split: number of utterances}``.
    """
    root = _require_dir(
        Path(libri_root), "LibriSpeech root (libri_root)",
        "Point it at the LibriSpeech/ folder holding train-clean-100/, dev-clean/ and test-clean/.", "libri_root",
    )
    if isinstance(splits, str):
        splits = [splits]
    if not splits:
        raise ValueError("write_len_for_bucket needs at least one split")
    out_dir = Path(out_dir)
    counts = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserInputError(
                f"LibriSpeech split folder {split_dir} does not exist. Download and unpack {split} from "
                "https://www.openslr.org/12 into the LibriSpeech root, or leave it out of splits.", argument="libri_root"
            )
        rows = _utterance_lengths(root, split, audio_extension)
        rows.sort(key=lambda r: (-r[1], r[0]))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["", "file_path", "length", "label"])
        for i, (rel, length) in enumerate(rows):
            writer.writerow([i, rel, length, ""])
        write_if_changed(out_dir / f"{split}.csv", buf.getvalue(), force=force,
                         what=f"len_for_bucket table for {split}", argument="out_dir")
        counts[split] = len(rows)
    return counts


# --------------------------------------------------------------------------------------------------
# s3prl's voxceleb1 file-list cache
# --------------------------------------------------------------------------------------------------


def voxceleb1_cache_dir() -> Optional[Path]:
    """Where s3prl's voxceleb1 dataset caches its file lists (``<s3prl>/downstream/voxceleb1/.cache``).

    The expert reuses ``{train,dev,test}.pkl`` from there whatever ``file_path``/``meta_data`` say, so a
    run on another VoxCeleb1 root (or a rebuilt corpus) silently uses the old file list; the SUPERB runner
    therefore points it at each run's own folder (:data:`.launch.SID_LAUNCH_CODE`). None when s3prl is not
    installed.
    """
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "downstream" / "voxceleb1" / ".cache"


__all__ = [
    "ER_LABELS", "ASR_SPLITS", "CHAR_DICT", "char_dict_text", "write_char_dict", "read_char_dict",
    "scan_voxceleb1", "voxceleb1_speaker_label", "write_voxceleb1_split", "read_voxceleb1_split",
    "iemocap_sessions", "write_iemocap_meta", "write_len_for_bucket", "write_if_changed",
    "voxceleb1_cache_dir",
]
