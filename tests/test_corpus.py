"""The mini-SUPERB corpus, read the way s3prl's experts read it.

The tiny corpus is built once per module. Where s3prl's dataset classes import on this stack they are
used directly (voxceleb1, emotion, asr; torchaudio.load is swapped for a soundfile reader because
torchaudio >= 2.9 needs torchcodec). speech_commands/dataset.py imports torchaudio.sox_effects, which
torchaudio 2.9+ removed, so a soundfile-based apply_effects_file is injected for its import; its
expert.py (split_dataset) imports catalyst, which fails on Python 3.11, so split_dataset is replicated
verbatim below.
"""

import filecmp
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy import cli
from s3prl_redundancy.io import MARKER
from s3prl_redundancy.superb import corpus as cp
from s3prl_redundancy.superb import datafiles
from s3prl_redundancy.superb import recipe_files as rf
from s3prl_redundancy.superb import tasks
from s3prl_redundancy.superb.tasks import ks as ks_task
from s3prl_redundancy.superb import tts

needs_espeak = pytest.mark.skipif(
    not tts.espeak_available(), reason="espeak-ng is not installed (apt-get install -y espeak-ng)"
)

COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not tts.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    return cp.build_corpus(tmp_path_factory.mktemp("mini_superb") / "tiny", size="tiny", seed=0)


@pytest.fixture
def sf_torchaudio(monkeypatch):
    """torchaudio.load backed by soundfile (torchaudio 2.9+ needs torchcodec for load)."""
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")

    def load(path, *args, **kwargs):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    monkeypatch.setattr(torchaudio, "load", load)
    return load


@pytest.fixture
def ks_dataset_module(monkeypatch, sf_torchaudio):
    """s3prl.downstream.speech_commands.dataset, importable with a soundfile apply_effects_file."""
    import torch

    name = "s3prl.downstream.speech_commands.dataset"
    try:
        from torchaudio.sox_effects import apply_effects_file  # noqa: F401  (old torchaudio or a compat layer)
        injected = False
    except ImportError:
        def apply_effects_file(path, effects):
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            assert sr == 16000 and ["rate", "16000"] in effects
            wav = data.mean(axis=1, keepdims=True).T * 10 ** (-3.0 / 20)
            return torch.from_numpy(wav.copy()), 16000

        fake = types.ModuleType("torchaudio.sox_effects")
        fake.apply_effects_file = apply_effects_file
        monkeypatch.setitem(sys.modules, "torchaudio.sox_effects", fake)
        monkeypatch.delitem(sys.modules, name, raising=False)
        injected = True
    module = importlib.import_module(name)
    yield module
    if injected:
        sys.modules.pop(name, None)


def split_dataset(root_dir, max_uttr_per_class=2 ** 27 - 1):
    """Verbatim logic of s3prl.downstream.speech_commands.expert.split_dataset (s3prl 0.4.18)."""
    train_list, valid_list = [], []
    for entry in Path(root_dir).iterdir():
        if not entry.is_dir() or entry.name == "_background_noise_":
            continue
        for audio_path in entry.glob("*.wav"):
            speaker_hashed = re.sub(r"_nohash_.*$", "", audio_path.name)
            hashed_again = hashlib.sha1(speaker_hashed.encode("utf-8")).hexdigest()
            percentage_hash = (int(hashed_again, 16) % (max_uttr_per_class + 1)) * (100.0 / max_uttr_per_class)
            if percentage_hash < 10:
                valid_list.append((entry.name, audio_path))
            elif percentage_hash < 20:
                pass
            else:
                train_list.append((entry.name, audio_path))
    return train_list, valid_list


def _tree(root: Path) -> list:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# tts
# --------------------------------------------------------------------------------------------------


@needs_espeak
def test_synthesize_is_16k_float32_and_deterministic():
    voice = tts.Voice("en-gb", "f2", pitch=60, speed=170, pitch_range="high")
    a = tts.synthesize("left", voice)
    b = tts.synthesize("left", voice)
    assert a.dtype == np.float32 and a.ndim == 1
    assert 0.2 * tts.SAMPLE_RATE < a.size < 2 * tts.SAMPLE_RATE
    assert np.array_equal(a, b)
    assert 0.05 < np.abs(a).max() <= 1.0
    louder = tts.synthesize("left", voice.with_(amplitude=190))
    assert np.sqrt(np.mean(louder ** 2)) > 1.3 * np.sqrt(np.mean(a ** 2))
    assert not np.array_equal(tts.synthesize("left", voice.with_(pitch=20)), a)


@needs_espeak
def test_synthesize_bad_voice_names_the_fix():
    with pytest.raises(tts.EspeakError, match="espeak-ng --voices"):
        tts.synthesize("hello", tts.Voice("xx-nonexistent"))


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setenv("ESPEAK_NG", "/nonexistent/espeak-ng")
    with pytest.raises(tts.EspeakNotFoundError, match="apt-get install -y espeak-ng"):
        tts.find_espeak()
    assert not tts.espeak_available()
    monkeypatch.delenv("ESPEAK_NG")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UserInputError, match="espeak-ng was not found on PATH.*apt-get"):
        tts.synthesize("hello")


def test_voice_validation():
    with pytest.raises(ValueError, match="pitch"):
        tts.Voice(pitch=120)
    with pytest.raises(ValueError, match="pitch_range"):
        tts.Voice(pitch_range="huge")
    assert tts.Voice("en-us", "m3").espeak_voice == "en-us+m3"


def test_resample_22050_to_16000():
    x = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    y = tts.resample(x, 22050, 16000)
    assert y.dtype == np.float32 and y.size == 16000
    peak = np.argmax(np.abs(np.fft.rfft(y)))
    assert abs(peak - 440) <= 1


# --------------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------------


def test_manifest(corpus):
    root = corpus.root
    manifest = json.loads((root / "corpus.json").read_text())
    assert manifest["size"] == "tiny" and manifest["seed"] == 0 and manifest["sample_rate"] == 16000
    assert manifest["n_files"] == len(_tree(root)) - 2 == corpus.n_files  # corpus.json and the output marker
    assert (root / MARKER).is_file()
    assert set(manifest["tasks"]) == {"ks", "sid", "er", "asr"}
    for task, spec in tasks.TASKS.items():
        entry = manifest["tasks"][task]
        assert entry["downstream"] == spec.downstream
        assert list(entry["datarc"]) == list(spec.data_keys)
        for key, rel in entry["datarc"].items():
            assert not os.path.isabs(rel)
            assert Path(corpus.datarc_for(task)[key]).exists(), (task, key)
    assert not (root / cp.BUILD_MARKER).exists()
    assert not list(root.rglob("*.part"))
    assert corpus.build_seconds < 60  # tiny must build in under a minute on 2 cores
    assert cp.load_corpus(root).datarc == corpus.datarc


def test_override_strings_fill_every_placeholder(corpus):
    helper = pytest.importorskip("s3prl.utility.helper")
    import argparse

    for task in tasks.TASKS:
        cfg = rf.load_recipe(task, "smoke")
        helper.override(corpus.override_string(task), argparse.Namespace(), cfg)
        assert rf.unfilled_placeholders(cfg) == []
        assert tasks.check_layout(task, cfg["downstream_expert"]["datarc"])


# --------------------------------------------------------------------------------------------------
# KS
# --------------------------------------------------------------------------------------------------


def test_ks_train_dev_test_cover_every_command(corpus, ks_dataset_module):
    datarc = corpus.datarc_for("ks")
    train_list, valid_list = split_dataset(datarc["speech_commands_root"])
    assert train_list and valid_list
    ours_train, ours_dev = ks_task.ks_split(datarc["speech_commands_root"])
    assert sorted(map(str, ours_train)) == sorted(map(str, train_list))
    assert sorted(map(str, ours_dev)) == sorted(map(str, valid_list))
    ds = ks_dataset_module
    train = ds.SpeechCommandsDataset(train_list, **datarc)
    dev = ds.SpeechCommandsDataset(valid_list, **datarc)
    test = ds.SpeechCommandsTestingDataset(**datarc)
    for name, dataset in (("train", train), ("dev", dev), ("test", test)):
        classes = {c for c, _ in dataset.data}
        assert classes == set(ds.CLASSES), (name, set(ds.CLASSES) - classes)
    counts = corpus.counts["ks"]
    n_noise = counts["background_noise_files"]
    assert len(train) == counts["train_clips"] + n_noise
    assert len(dev) == counts["dev_clips"] + n_noise
    assert len(test) == counts["test_clips"]
    assert all(w > 0 for w in train.sample_weights)
    for dataset, idx in ((train, 0), (dev, len(dev) - 1), (test, 0)):
        wav, label, fileid = dataset[idx]
        assert wav.shape == (16000,) and 0 <= label < 12


def test_ks_files(corpus):
    root = Path(corpus.datarc_for("ks")["speech_commands_root"])
    test_root = Path(corpus.datarc_for("ks")["speech_commands_test_root"])
    assert sorted(p.name for p in test_root.iterdir()) == sorted(ks_task.KS_CLASSES)
    unknown = corpus.counts["ks"]["unknown_words"]
    assert len(unknown) == 4 and not set(unknown) & set(COMMANDS)
    assert sorted(p.name for p in root.iterdir()) == sorted(COMMANDS + unknown + ["_background_noise_"])
    for path in list(root.glob("*/*_nohash_*.wav")) + list(test_root.glob("*/*.wav")):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16"), path
        assert re.fullmatch(r"[0-9a-z_]+_nohash_\d+\.wav", path.name), path.name
    noises = sorted(root.glob("_background_noise_/*.wav"))
    assert [p.stem for p in noises] == ["brown_noise", "pink_noise", "white_noise"]
    for path in noises:
        assert sf.info(str(path)).duration >= 5.0
    # a spoken word has energy concentrated somewhere inside its 1 s clip
    wav, _ = sf.read(str(next(root.glob("yes/*.wav"))))
    frames = np.sqrt(np.mean(wav.reshape(20, 800) ** 2, axis=1))
    assert frames.max() > 8 * np.median(frames)


# --------------------------------------------------------------------------------------------------
# SID
# --------------------------------------------------------------------------------------------------


def test_sid_with_expert_dataset(corpus, sf_torchaudio, monkeypatch, tmp_path):
    ds_mod = pytest.importorskip("s3prl.downstream.voxceleb1.dataset")
    monkeypatch.setattr(ds_mod, "CACHE_PATH", str(tmp_path / "cache") + "/")  # keep site-packages clean
    datarc = corpus.datarc_for("sid")
    root = Path(datarc["file_path"])
    sets = {}
    for mode in ("train", "dev", "test"):
        ds = ds_mod.SpeakerClassifiDataset(mode, root, datarc["meta_data"], 128000 if mode == "train" else None)
        sets[mode] = ds
        assert len(ds) == corpus.counts["sid"][mode]
        assert all(0 <= label < 1251 for label in ds.label)
    speakers = {mode: set(ds.label) for mode, ds in sets.items()}
    assert len(speakers["train"]) == 6 and speakers["train"] == speakers["dev"] == speakers["test"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["dev", "test"]
    wav, label, name = sets["test"][0]
    assert wav.ndim == 1 and wav.size > 16000 and name.startswith("id")


def test_sid_speakers_are_distinct_voices(corpus):
    root = Path(corpus.datarc_for("sid")["file_path"])
    ids = sorted(p.name for p in root.glob("*/wav/id*"))
    assert len(ids) == len(set(ids)) == corpus.counts["sid"]["speakers"] == 6
    for spk in ids:
        videos = list(root.glob(f"*/wav/{spk}/*"))
        assert len(videos) == 2 and all(re.fullmatch(r"[A-Za-z0-9_-]{11}", v.name) for v in videos)
        assert len(list(root.glob(f"*/wav/{spk}/*/[0-9][0-9][0-9][0-9][0-9].wav"))) == 6
    # the voices differ: per-speaker median pitch proxies (zero-crossing rate of the first utterance) are not all equal
    zcr = []
    for spk in ids:
        wav, _ = sf.read(str(sorted(root.glob(f"*/wav/{spk}/*/*.wav"))[0]))
        voiced = wav[np.abs(wav) > 0.1 * np.abs(wav).max()]
        zcr.append(round(float(np.mean(np.abs(np.diff(np.sign(voiced))) > 0)), 3))
    assert len(set(zcr)) >= 4


# --------------------------------------------------------------------------------------------------
# ER
# --------------------------------------------------------------------------------------------------


def test_er_with_expert_dataset(corpus, sf_torchaudio):
    ds_mod = pytest.importorskip("s3prl.downstream.emotion.dataset")
    datarc = corpus.datarc_for("er")
    total = 0
    for n in range(1, 6):
        # what the expert does for test_fold=fold<n>
        meta = os.path.join(datarc["meta_data"], f"fold{n}".replace("fold", "Session"))
        test = ds_mod.IEMOCAPDataset(datarc["root"], os.path.join(meta, "test_meta_data.json"), pre_load=False)
        train = ds_mod.IEMOCAPDataset(datarc["root"], os.path.join(meta, "train_meta_data.json"), pre_load=False)
        assert test.class_num == 4 and test.class_dict == {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
        labels = [e["label"] for e in test.meta_data]
        assert sorted(set(labels)) == ["ang", "hap", "neu", "sad"]
        assert {e["path"].split("/")[0] for e in test.meta_data} == {f"Session{n}"}
        assert f"Session{n}" not in {e["path"].split("/")[0] for e in train.meta_data}
        assert len(train) == 4 * len(test)
        genders = {Path(e["path"]).stem.split("_")[-1][0] for e in test.meta_data}
        assert genders == {"F", "M"}  # two speakers per session
        wav, label, name = test[0]
        assert wav.ndim == 1 and wav.size > 8000 and label in range(4)
        total += len(test)
    assert total == corpus.counts["er"]["utterances"] == 80


def test_er_emotions_differ_in_prosody(corpus):
    root = Path(corpus.datarc_for("er")["root"])
    meta = json.loads((root / "meta_data" / "Session2" / "test_meta_data.json").read_text())["meta_data"]
    stats = {}
    for e in meta:
        wav, _ = sf.read(str(root / e["path"]))
        stats.setdefault(e["label"], []).append((wav.size, np.sqrt(np.mean(wav ** 2))))
    dur = {k: np.mean([s[0] for s in v]) for k, v in stats.items()}
    rms = {k: np.mean([s[1] for s in v]) for k, v in stats.items()}
    assert rms["ang"] > rms["neu"] > rms["sad"]
    assert dur["sad"] > dur["neu"] > dur["ang"]


def test_er_label_files_follow_iemocap(corpus):
    root = Path(corpus.datarc_for("er")["root"])
    for n in range(1, 6):
        files = sorted((root / f"Session{n}" / "dialog" / "EmoEvaluation").glob("*.txt"))
        assert [f.stem for f in files] == [f"Ses0{n}F_impro01", f"Ses0{n}M_impro01"]
        for f in files:
            for line in f.read_text().splitlines():
                if line.startswith("["):
                    fields = line.split("\t")
                    assert re.fullmatch(r"\[\d+\.\d{4} - \d+\.\d{4}\]", fields[0])
                    assert (root / f"Session{n}" / "sentences" / "wav" / f.stem / f"{fields[1]}.wav").is_file()


# --------------------------------------------------------------------------------------------------
# ASR
# --------------------------------------------------------------------------------------------------


def test_asr_transcripts_match_files(corpus):
    root = Path(corpus.datarc_for("asr")["libri_root"])
    symbols = set(datafiles.read_char_dict(corpus.datarc_for("asr")["dict_path"]))
    for split in datafiles.ASR_SPLITS:
        flacs = sorted((root / split).glob("*/*/*.flac"))
        assert len(flacs) == corpus.counts["asr"][split] > 0
        transcripts = {}
        for trans in (root / split).glob("*/*/*.trans.txt"):
            spk, chapter = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{spk}-{chapter}.trans.txt"
            for line in trans.read_text().splitlines():
                uid, text = line.split(" ", 1)
                assert uid.startswith(f"{spk}-{chapter}-") and text == text.upper()
                assert set(text.replace(" ", "|")) <= symbols
                transcripts[uid] = text
        assert sorted(transcripts) == sorted(f.stem for f in flacs)
        for flac in flacs[:5]:
            wav, sr = sf.read(str(flac))
            assert sr == 16000 and wav.ndim == 1 and wav.size > 16000
            assert sf.info(str(flac)).format == "FLAC"
    spk_sets = [{p.name for p in (root / s).iterdir()} for s in datafiles.ASR_SPLITS]
    assert not (spk_sets[0] & spk_sets[1]) and not (spk_sets[0] & spk_sets[2])


def test_asr_with_expert_dataset(corpus, sf_torchaudio):
    ds_mod = pytest.importorskip("s3prl.downstream.asr.dataset")
    dict_mod = pytest.importorskip("s3prl.downstream.asr.dictionary")
    datarc = dict(rf.load_recipe("asr", datarc=corpus.datarc_for("asr"))["downstream_expert"]["datarc"])
    dictionary = dict_mod.Dictionary.load(datarc["dict_path"])
    for split, bucket in (("train", 4), ("dev-clean", 1), ("test-clean", 1)):
        ds = ds_mod.SequenceDataset(split, bucket, dictionary, **datarc)
        n = sum(len(batch) for batch in ds.X)
        assert n == corpus.counts["asr"][datarc[split][0]]
        assert all(dictionary.unk() not in y.tolist() for y in ds.Y.values())
        wavs, labels, names = ds.collate_fn([ds[0]])
        assert all(w.ndim == 1 for w in wavs) and len(labels) == len(names)


# --------------------------------------------------------------------------------------------------
# check_layout
# --------------------------------------------------------------------------------------------------


def test_check_layout_accepts_the_corpus(corpus):
    ks = tasks.check_layout("ks", corpus.datarc_for("ks"))
    assert ks["train"] == 56 and ks["dev"] == 28 and ks["test"] == 32 and ks["background_noise"] == 3
    assert set(ks["test_per_class"]) == set(ks_task.KS_CLASSES)
    sid = tasks.check_layout("voxceleb1", corpus.datarc_for("sid")["file_path"], meta_data=corpus.datarc_for("sid")["meta_data"])
    assert sid == {"speakers": 6, "utterances": 36, "train": 24, "dev": 6, "test": 6}
    er = tasks.check_layout("er", corpus.datarc_for("er"), test_fold="fold2")
    assert er["fold2:test"] == 16 and er["fold2:train"] == 64
    asr = tasks.check_layout("asr", corpus.datarc_for("asr"))
    assert asr == {"train-clean-100": 20, "dev-clean": 8, "test-clean": 8, "dict_symbols": 28}


@pytest.fixture
def scratch(corpus, tmp_path):
    """A private copy of the corpus to break."""
    dst = tmp_path / "copy"
    shutil.copytree(corpus.root, dst)
    return dst


def test_check_layout_ks_errors(scratch):
    sc, test = scratch / "speech_commands_v0.01", scratch / "speech_commands_test_set_v0.01"
    shutil.rmtree(test / "up")
    (test / "marvin").mkdir()
    with pytest.raises(tasks.LayoutError, match=r"marvin is not one of the 12 classes"):
        tasks.check_layout("ks", sc, speech_commands_test_root=test)
    shutil.rmtree(sc / "stop")
    with pytest.raises(tasks.LayoutError, match=r"expected folder .*speech_commands_v0.01/stop.*one folder per word"):
        tasks.check_layout("ks", sc)
    with pytest.raises(tasks.LayoutError, match=r"expected folder .*nowhere.*speech_commands_v0.01.tar.gz"):
        tasks.check_layout("ks", scratch / "nowhere")
    shutil.copytree(sc / "go", sc / "stop")
    for wav in list(sc.glob("*/*_nohash_*.wav")):  # drop the dev-band speakers: the dev split becomes empty
        if ks_task.ks_hash_band(wav.name.split("_nohash_")[0]) == "dev":
            wav.unlink()
    with pytest.raises(tasks.LayoutError, match=r"dev split .* is empty.*sha1"):
        tasks.check_layout("ks", sc)


def test_check_layout_sid_errors(scratch):
    vox = scratch / "VoxCeleb1"
    lines = (vox / "iden_split.txt").read_text().splitlines()
    victim = lines[0].split()[1]
    next(vox.glob("*/wav/" + victim)).unlink()
    with pytest.raises(tasks.LayoutError, match=re.escape(victim) + r".*no .*/\*/wav/"):
        tasks.check_layout("sid", vox, meta_data=vox / "iden_split.txt")
    (vox / "iden_split.txt").write_text("\n".join(l for l in lines[1:] if not l.startswith("2 ")) + "\n")
    with pytest.raises(tasks.LayoutError, match=r"no '2 \.\.\.' \(dev\) lines"):
        tasks.check_layout("sid", vox, meta_data=vox / "iden_split.txt")
    with pytest.raises(tasks.LayoutError, match=r"missing_split.txt.*iden_split.txt.*write_voxceleb1_split"):
        tasks.check_layout("sid", vox, meta_data=vox / "missing_split.txt")
    next(vox.glob("*/wav/" + victim.split("/")[0])).rename(vox / "dev" / "wav" / "speaker7")
    with pytest.raises(tasks.LayoutError, match=r"speaker7.*id10001\.\.id11251"):
        tasks.check_layout("sid", vox)


def test_check_layout_er_errors(scratch):
    iem = scratch / "IEMOCAP"
    shutil.rmtree(iem / "meta_data" / "Session4")
    with pytest.raises(tasks.LayoutError, match=r"Session4/train_meta_data.json.*write_iemocap_meta"):
        tasks.check_layout("er", iem, meta_data=iem / "meta_data")
    tasks.check_layout("er", iem, meta_data=iem / "meta_data", test_fold="fold1")  # other folds are fine
    wav = next((iem / "Session1" / "sentences" / "wav").rglob("*.wav"))
    wav.unlink()
    with pytest.raises(tasks.LayoutError, match=re.escape(wav.name) + r".*relative to the ER root"):
        tasks.check_layout("er", iem, meta_data=iem / "meta_data", test_fold="fold1")
    shutil.rmtree(iem / "Session3")
    with pytest.raises(tasks.LayoutError, match=r"Session3/sentences/wav"):
        tasks.check_layout("er", iem)


def test_check_layout_asr_errors(scratch):
    libri = scratch / "LibriSpeech"
    trans = next((libri / "dev-clean").rglob("*.trans.txt"))
    lines = trans.read_text().splitlines()
    trans.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(tasks.LayoutError, match=lines[0].split()[0] + r".flac has no line in"):
        tasks.check_layout("asr", libri)
    trans.unlink()
    with pytest.raises(tasks.LayoutError, match=re.escape(trans.name) + r".*needs <spk>-<chapter>.trans.txt"):
        tasks.check_layout("asr", libri)
    with pytest.raises(tasks.LayoutError, match=r"expected folder .*bucket_missing.*write_len_for_bucket"):
        tasks.check_layout("asr", libri, splits=["test-clean"], bucket_file=scratch / "bucket_missing")
    (scratch / "bucket").mkdir()
    with pytest.raises(tasks.LayoutError, match=r"bucket/test-clean.csv.*write_len_for_bucket"):
        tasks.check_layout("asr", libri, splits=["test-clean"], bucket_file=scratch / "bucket")
    with pytest.raises(tasks.LayoutError, match="placeholder"):
        tasks.check_layout("asr", "<SET_BY_RUNNER:libri_root>")


# --------------------------------------------------------------------------------------------------
# determinism, refusal, CLI
# --------------------------------------------------------------------------------------------------


def test_same_seed_identical_other_seed_differs_and_force(corpus, tmp_path):
    other = tmp_path / "again"
    # one worker instead of two: the files must not depend on thread scheduling
    assert cli.main(["corpus", "--out", str(other), "--size", "tiny", "--seed", "0", "--quiet", "--workers", "1"]) == 0
    assert _tree(other) == _tree(corpus.root)
    match, mismatch, errors = filecmp.cmpfiles(corpus.root, other, _tree(corpus.root), shallow=False)
    assert not mismatch and not errors and len(match) == corpus.n_files + 2  # + corpus.json, output marker
    with pytest.raises(UserInputError, match=r'previous "corpus" run.*`force=True`'):
        cp.build_corpus(other, "tiny", seed=1)
    assert cp.load_corpus(other).seed == 0  # untouched
    (other / "notes.txt").write_text("mine")
    info = cp.build_corpus(other, "tiny", seed=1, force=True)
    assert info.seed == 1 and (other / "notes.txt").read_text() == "mine"  # only its own folders are replaced
    assert info.content_sha256 != corpus.content_sha256
    a = sorted(p.name for p in (corpus.root / "VoxCeleb1").glob("*/wav/id*"))
    b = sorted(p.name for p in (other / "VoxCeleb1").glob("*/wav/id*"))
    assert a != b
    assert (other / "corpus.json").read_text() != (corpus.root / "corpus.json").read_text()


def test_refuses_foreign_folder_even_with_force(tmp_path, capsys):
    foreign = tmp_path / "data"
    (foreign / "LibriSpeech").mkdir(parents=True)
    (foreign / "LibriSpeech" / "keep.txt").write_text("user data")
    assert cli.main(["corpus", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "--out: " in err and "not empty" in err and "--force" in err
    assert cli.main(["corpus", "--out", str(foreign), "--force"]) == 2  # its LibriSpeech/ would be overwritten
    err = capsys.readouterr().err
    assert "holds LibriSpeech, which" in err and "did not write and would overwrite" in err
    assert (foreign / "LibriSpeech" / "keep.txt").read_text() == "user data"


def test_small_is_a_few_times_tiny_and_keeps_every_split():
    tiny_jobs = cp._plan(cp.SIZES["tiny"], 0)[0]
    jobs, texts, datarc, counts, _ = cp._plan(cp.SIZES["small"], 0)
    assert 3 <= len(jobs) / len(tiny_jobs) <= 6
    assert counts["ks"]["speakers"] == {"train": 12, "dev": 4, "test": 4}
    for spk_band in ("train", "dev", "test"):
        spks = {j.rel.split("/")[-1].split("_nohash_")[0] for j in jobs if j.kind == "ks_word"
                and ks_task.ks_hash_band(j.rel.split("/")[-1].split("_nohash_")[0]) == spk_band}
        assert len(spks) == counts["ks"]["speakers"][spk_band]
    assert len({j.rel for j in jobs}) == len(jobs)  # no two jobs write the same file
    assert len(texts) == sum(s * c for s, c in zip(cp.SIZES["small"].asr_speakers, cp.SIZES["small"].asr_chapters))
    assert cp._plan(cp.SIZES["small"], 0)[0] == jobs and cp._plan(cp.SIZES["small"], 1)[0] != jobs


def test_cli_arguments():
    with pytest.raises(SystemExit):
        cli.main(["corpus", "--out", "x", "--size", "huge"])
    with pytest.raises(SystemExit):
        cli.main(["corpus"])
    with pytest.raises(UserInputError, match="seed"):
        cp.build_corpus("unused", seed=-1)
