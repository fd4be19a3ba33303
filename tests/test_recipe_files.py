"""Recipes (load/merge/write/override) and the writers of the files s3prl's pip package lacks.

The writers are checked against s3prl's own code where it can run on this stack: the fairseq Dictionary
of the ASR expert, the official IEMOCAP_preprocess.py, the ASR SequenceDataset, s3prl's -o parser, and a
pandas re-run of preprocess/generate_len_for_bucket.py's table code. No espeak-ng needed here.
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb import datafiles
from s3prl_redundancy.superb import recipe_files as rf
from s3prl_redundancy.superb import tasks

REPO = Path(__file__).resolve().parents[1]

# s3prl/s3prl@4e6775f4 s3prl/downstream/asr/char.dict, verbatim (244 characters, no final newline)
OFFICIAL_CHAR_DICT = (
    "| 1980202\nE 1091870\nT 789572\nA 689048\nO 647720\nN 591778\nI 585614\nH 557204\nS 545238\n"
    "R 499568\nD 380912\nL 344952\nU 242014\nM 217730\nC 210734\nW 204598\nF 195086\nG 174098\n"
    "Y 168548\nP 146722\nB 129608\nV 81496\nK 65070\n' 19660\nX 12530\nJ 12062\nQ 8164\nZ 4916"
)


def _wav(path: Path, n: int = 1600, sr: int = 16000, fmt: str = "WAV", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.random.default_rng(seed).standard_normal(n) * 0.05).astype(np.float32)
    sf.write(str(path), data, sr, format=fmt, subtype="PCM_16")
    return path


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------------------------------
# char.dict
# --------------------------------------------------------------------------------------------------


def test_char_dict_matches_official_file(tmp_path):
    assert datafiles.char_dict_text() == OFFICIAL_CHAR_DICT
    assert len(OFFICIAL_CHAR_DICT) == 244
    shipped = (REPO / "downstream_recipes" / "asr" / "char.dict").read_text(encoding="utf-8")
    assert shipped == OFFICIAL_CHAR_DICT
    out = datafiles.write_char_dict(tmp_path / "char.dict")
    assert out.read_text(encoding="utf-8") == OFFICIAL_CHAR_DICT
    symbols = datafiles.read_char_dict(out)
    assert len(symbols) == 28
    assert symbols[0] == "|" and "'" in symbols
    assert sorted(s for s in symbols if s.isalpha()) == [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def test_char_dict_loads_in_s3prl_dictionary(tmp_path):
    dictionary_mod = pytest.importorskip("s3prl.downstream.asr.dictionary")
    path = datafiles.write_char_dict(tmp_path / "char.dict")
    d = dictionary_mod.Dictionary.load(str(path))
    assert len(d.symbols) == 4 + 28  # <s> <pad> </s> <unk> + 28 characters
    line = " ".join("DON'T STOP".replace(" ", "|")) + " |"
    ids = d.encode_line(line, line_tokenizer=lambda x: x.split(), add_if_not_exist=False).tolist()
    assert d.unk() not in ids
    assert d.string(ids[:-1]).replace(" ", "") == "DON'T|STOP|"


def test_char_dict_writer_refuses_to_overwrite_other_content(tmp_path):
    path = tmp_path / "char.dict"
    path.write_text("A 1\n")
    with pytest.raises(UserInputError, match="force=True"):
        datafiles.write_char_dict(path)
    assert path.read_text() == "A 1\n"
    datafiles.write_char_dict(path, force=True)
    assert path.read_text() == OFFICIAL_CHAR_DICT
    datafiles.write_char_dict(path)  # same content: no error


def test_read_char_dict_errors(tmp_path):
    with pytest.raises(UserInputError, match="write_char_dict"):
        datafiles.read_char_dict(tmp_path / "missing.dict")
    bad = tmp_path / "bad.dict"
    bad.write_text("A 1\nB\n")
    with pytest.raises(UserInputError, match=r"bad.dict:2"):
        datafiles.read_char_dict(bad)


# --------------------------------------------------------------------------------------------------
# VoxCeleb1 split
# --------------------------------------------------------------------------------------------------


def _voxceleb(root: Path, speakers=("id10001", "id10002", "id10270"), per_video=(3, 2)) -> Path:
    for i, spk in enumerate(speakers):
        subset = "test" if spk == "id10270" else "dev"
        utt = 0
        for v, n in enumerate(per_video):
            for _ in range(n):
                utt += 1
                _wav(root / subset / "wav" / spk / f"yt{i}video{v}xx" / f"{utt:05d}.wav", n=160)
    return root


def test_voxceleb1_split_format_and_expert_glob(tmp_path):
    root = _voxceleb(tmp_path / "VoxCeleb1")
    out = tmp_path / "split.txt"
    counts = datafiles.write_voxceleb1_split(root, out, seed=0)
    assert counts == {"speakers": 3, "train": 9, "dev": 3, "test": 3}
    lines = out.read_text().splitlines()
    assert len(lines) == 15 and lines == sorted(lines, key=lambda l: l.split()[1])
    per_speaker = {}
    for line in lines:
        split, rel = line.split()
        assert split in ("1", "2", "3")
        spk, video, name = rel.split("/")
        assert spk.startswith("id") and name.endswith(".wav")
        # exactly what SpeakerClassifiDataset does: root.glob("*/wav/" + relpath) -> one hit
        assert len(list(root.glob("*/wav/" + rel))) == 1
        per_speaker.setdefault(spk, []).append(split)
    for splits in per_speaker.values():
        assert sorted(splits) == ["1", "1", "1", "2", "3"]


def test_voxceleb1_split_deterministic_and_seeded(tmp_path):
    root = _voxceleb(tmp_path / "VoxCeleb1", per_video=(6, 6))
    a = datafiles.write_voxceleb1_split(root, tmp_path / "a.txt", seed=0)
    b = datafiles.write_voxceleb1_split(root, tmp_path / "b.txt", seed=0)
    assert a == b and (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    texts = set()
    for seed in range(4):
        datafiles.write_voxceleb1_split(root, tmp_path / f"s{seed}.txt", seed=seed)
        texts.add((tmp_path / f"s{seed}.txt").read_text())
    assert len(texts) > 1  # the seed changes which utterances are held out


def test_voxceleb1_split_with_s3prl_dataset(tmp_path, monkeypatch):
    ds_mod = pytest.importorskip("s3prl.downstream.voxceleb1.dataset")
    monkeypatch.setattr(ds_mod, "CACHE_PATH", str(tmp_path / "cache") + "/")  # never touch site-packages
    root = _voxceleb(tmp_path / "VoxCeleb1")
    split = tmp_path / "split.txt"
    datafiles.write_voxceleb1_split(root, split)
    sizes = {}
    for mode in ("train", "dev", "test"):
        ds = ds_mod.SpeakerClassifiDataset(mode, root, str(split))
        sizes[mode] = len(ds)
        assert sorted(set(ds.label)) == [0, 1, 269]  # id10001, id10002, id10270
    assert sizes == {"train": 9, "dev": 3, "test": 3}


def test_voxceleb1_split_errors(tmp_path):
    with pytest.raises(UserInputError, match=r"does not exist.*dev/wav"):
        datafiles.write_voxceleb1_split(tmp_path / "nope", tmp_path / "s.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match=r"no <subset>/wav/ folder"):
        datafiles.write_voxceleb1_split(tmp_path / "empty", tmp_path / "s.txt")
    few = _voxceleb(tmp_path / "few", speakers=("id10001",), per_video=(2,))
    with pytest.raises(UserInputError, match=r"id10001 has 2 utterance"):
        datafiles.write_voxceleb1_split(few, tmp_path / "s.txt")
    bad = _voxceleb(tmp_path / "bad", speakers=("id00042",))
    with pytest.raises(UserInputError, match=r"id00042.*id10001\.\.id11251"):
        datafiles.write_voxceleb1_split(bad, tmp_path / "s.txt")
    assert not (tmp_path / "s.txt").exists()
    good = _voxceleb(tmp_path / "good")
    (tmp_path / "s.txt").write_text("something else\n")
    with pytest.raises(UserInputError, match="force"):
        datafiles.write_voxceleb1_split(good, tmp_path / "s.txt")
    assert (tmp_path / "s.txt").read_text() == "something else\n"


def test_read_voxceleb1_split_rejects_bad_lines(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 id10001/abc/00001.wav\n4 id10001/abc/00002.wav\n")
    with pytest.raises(UserInputError, match=r"s.txt:2"):
        datafiles.read_voxceleb1_split(p)


# --------------------------------------------------------------------------------------------------
# IEMOCAP meta data
# --------------------------------------------------------------------------------------------------

_LABELS = ["neu", "hap", "ang", "sad", "exc", "fru", "xxx"]


def _iemocap(root: Path, hidden=False) -> Path:
    for n in range(1, 6):
        session = root / f"Session{n}"
        for dialog in (f"Ses0{n}F_impro01", f"Ses0{n}M_script01_1"):
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n", "\n"]
            for i, label in enumerate(_LABELS):
                gender = "FM"[i % 2]
                utt = f"{dialog}_{gender}{i:03d}"
                _wav(session / "sentences" / "wav" / dialog / f"{utt}.wav", n=160, seed=i)
                lines += [f"[{i}.0000 - {i}.5000]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]\n",
                          f"C-E1:\tNeutral;\t()\n", "\n"]
            # a labelled turn without audio is skipped, as in the official script
            lines.append(f"[9.0 - 9.5]\t{dialog}_F099\tneu\t[2.5, 2.5, 2.5]\n")
            label_dir = session / "dialog" / "EmoEvaluation"
            label_dir.mkdir(parents=True, exist_ok=True)
            (label_dir / f"{dialog}.txt").write_text("".join(lines))
            if hidden:
                (label_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
                (session / "sentences" / "wav" / dialog / f"._{dialog}_F000.wav").write_bytes(b"\x00\x05")
    return root


def test_iemocap_meta_matches_the_official_preprocess(tmp_path):
    pre = pytest.importorskip("s3prl.downstream.emotion.IEMOCAP_preprocess")
    ours_root = _iemocap(tmp_path / "ours" / "IEMOCAP")
    theirs_root = tmp_path / "theirs" / "IEMOCAP"
    shutil.copytree(ours_root, theirs_root)
    counts = datafiles.write_iemocap_meta(ours_root, tmp_path / "ours_meta")
    pre.main(str(theirs_root))  # writes <root>/meta_data/Session<N>/{train,test}_meta_data.json
    for n in range(1, 6):
        for name in ("train_meta_data.json", "test_meta_data.json"):
            ours = json.loads((tmp_path / "ours_meta" / f"Session{n}" / name).read_text())
            theirs = json.loads((theirs_root / "meta_data" / f"Session{n}" / name).read_text())
            assert ours["labels"] == theirs["labels"] == {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
            key = lambda e: e["path"]
            assert sorted(ours["meta_data"], key=key) == sorted(theirs["meta_data"], key=key)
    # neu, hap, ang, sad + exc (-> hap) per dialog, 2 dialogs per session; fru/xxx dropped
    assert counts["Session3"] == {"neu": 2, "hap": 4, "ang": 2, "sad": 2}


def test_iemocap_meta_content(tmp_path):
    root = _iemocap(tmp_path / "IEMOCAP", hidden=True)  # AppleDouble files must be ignored
    datafiles.write_iemocap_meta(root)
    meta = root / "meta_data"
    test2 = json.loads((meta / "Session2" / "test_meta_data.json").read_text())
    train2 = json.loads((meta / "Session2" / "train_meta_data.json").read_text())
    assert {e["path"].split("/")[0] for e in test2["meta_data"]} == {"Session2"}
    assert {e["path"].split("/")[0] for e in train2["meta_data"]} == {"Session1", "Session3", "Session4", "Session5"}
    assert len(train2["meta_data"]) == 4 * len(test2["meta_data"]) == 4 * 10
    entry = test2["meta_data"][0]
    assert set(entry) == {"path", "label", "speaker"}
    assert entry["path"] == "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_F000.wav"
    assert entry["speaker"] == "Ses02F" and entry["label"] == "neu"
    assert {e["label"] for e in test2["meta_data"]} == {"neu", "hap", "ang", "sad"}
    assert all((root / e["path"]).is_file() for e in train2["meta_data"])


def test_iemocap_meta_with_s3prl_dataset(tmp_path, monkeypatch):
    ds_mod = pytest.importorskip("s3prl.downstream.emotion.dataset")
    torch = pytest.importorskip("torch")

    def load(path, *args, **kwargs):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    monkeypatch.setattr(ds_mod.torchaudio, "load", load)
    root = _iemocap(tmp_path / "IEMOCAP")
    datafiles.write_iemocap_meta(root)
    ds = ds_mod.IEMOCAPDataset(str(root), str(root / "meta_data" / "Session1" / "test_meta_data.json"), pre_load=True)
    assert ds.class_num == 4 and len(ds) == 10
    wav, label, name = ds[0]
    assert wav.ndim == 1 and wav.shape[0] == 160 and label == 0 and name == "Ses01F_impro01_F000"


def test_iemocap_meta_errors(tmp_path):
    with pytest.raises(UserInputError, match="IEMOCAP_full_release"):
        datafiles.write_iemocap_meta(tmp_path / "none")
    root = _iemocap(tmp_path / "IEMOCAP")
    shutil.rmtree(root / "Session4" / "dialog" / "EmoEvaluation")
    with pytest.raises(UserInputError, match=r"Session4/dialog/EmoEvaluation"):
        datafiles.write_iemocap_meta(root)
    assert not (root / "meta_data").exists()
    only = tmp_path / "one"
    (only / "Session1" / "sentences" / "wav").mkdir(parents=True)
    with pytest.raises(UserInputError, match="at least two Session"):
        datafiles.write_iemocap_meta(only)


# --------------------------------------------------------------------------------------------------
# len_for_bucket
# --------------------------------------------------------------------------------------------------


def _libri(root: Path) -> dict:
    """A miniature LibriSpeech with distinct lengths; returns {uid: text}."""
    texts = {}
    n = 4000
    for split, speakers in (("train-clean-100", (19, 26)), ("dev-clean", (84,)), ("test-clean", (121,))):
        for spk in speakers:
            chapter = spk * 10 + 1
            lines = []
            for u in range(3):
                uid = f"{spk}-{chapter}-{u:04d}"
                n += 37
                _wav(root / split / str(spk) / str(chapter) / f"{uid}.flac", n=n, fmt="FLAC", seed=n)
                text = ["HELLO WORLD", "IT'S A TEST", "GO UP"][u]
                lines.append(f"{uid} {text}\n")
                texts[uid] = text
            (root / split / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return texts


def test_len_for_bucket_equals_official_table(tmp_path):
    pd = pytest.importorskip("pandas")
    root = tmp_path / "LibriSpeech"
    _libri(root)
    counts = datafiles.write_len_for_bucket(root, tmp_path / "len_for_bucket")
    assert counts == {"train-clean-100": 6, "dev-clean": 3, "test-clean": 3}
    for split in datafiles.ASR_SPLITS:
        # the table code of s3prl/preprocess/generate_len_for_bucket.py, lengths in samples (num_frames)
        todo = sorted((root / split).rglob("*.flac"))
        tr_x = [sf.info(str(f)).frames for f in todo]
        sorted_todo = [os.path.join(split, str(todo[i]).split(split + "/")[-1]) for i in reversed(np.argsort(tr_x))]
        df = pd.DataFrame(data={"file_path": sorted_todo, "length": list(reversed(sorted(tr_x))), "label": None})
        expected = tmp_path / f"expected-{split}.csv"
        df.to_csv(expected)
        assert (tmp_path / "len_for_bucket" / f"{split}.csv").read_text() == expected.read_text()
        table = pd.read_csv(tmp_path / "len_for_bucket" / f"{split}.csv")
        assert list(table.columns[1:]) == ["file_path", "length", "label"]
        assert table["file_path"].str.startswith(split + "/").all()


def test_len_for_bucket_with_s3prl_asr_dataset(tmp_path):
    ds_mod = pytest.importorskip("s3prl.downstream.asr.dataset")
    dict_mod = pytest.importorskip("s3prl.downstream.asr.dictionary")
    root = tmp_path / "LibriSpeech"
    texts = _libri(root)
    datafiles.write_len_for_bucket(root, tmp_path / "bucket")
    dictionary = dict_mod.Dictionary.load(str(datafiles.write_char_dict(tmp_path / "char.dict")))
    ds = ds_mod.SequenceDataset("train", 2, dictionary, str(root), str(tmp_path / "bucket"),
                                train=["train-clean-100"])
    names = [Path(x).stem for batch in ds.X for x in batch]
    assert sorted(names) == sorted(u for u in texts if u.startswith(("19-", "26-")))
    for name, ids in ds.Y.items():
        assert dictionary.unk() not in ids.tolist()
        assert dictionary.string(ids[:-1]).replace(" ", "").replace("|", " ").strip() == texts[name]


def test_len_for_bucket_errors(tmp_path):
    root = tmp_path / "LibriSpeech"
    _libri(root)
    with pytest.raises(UserInputError, match=r"dev-other does not exist.*openslr"):
        datafiles.write_len_for_bucket(root, tmp_path / "b", ["dev-other"])
    (root / "dev-clean" / "84" / "841" / "84-841.trans.txt").unlink()
    with pytest.raises(UserInputError, match=r"84-841.trans.txt is missing"):
        datafiles.write_len_for_bucket(root, tmp_path / "b", ["dev-clean"])
    _wav(root / "test-clean" / "121" / "1211" / "121-1211-0009.flac", n=800, sr=8000, fmt="FLAC")
    with pytest.raises(UserInputError, match=r"8000 Hz.*16000"):
        datafiles.write_len_for_bucket(root, tmp_path / "b", ["test-clean"])
    with pytest.raises(UserInputError, match="LibriSpeech/ folder"):
        datafiles.write_len_for_bucket(tmp_path / "missing", tmp_path / "b")


# --------------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------------

OFFICIAL = {
    # task: (total_steps, gradient_accumulate_steps, eval_step, optimizer, batch key, batch size)
    "ks": (200000, 1, 4000, "Adam", "batch_size", 32),
    "sid": (200000, 4, 4000, "Adam", "train_batch_size", 8),
    "er": (30000, 8, 1000, "Adam", "train_batch_size", 4),
    "asr": (200000, 1, 2000, "Adam", "batch_size", 32),
}


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_official_recipe_values(task):
    steps, accum, eval_step, optim, batch_key, batch = OFFICIAL[task]
    rec = {}
    cfg = rf.load_recipe(task, record=rec)
    assert cfg["runner"]["total_steps"] == steps
    assert cfg["runner"]["gradient_accumulate_steps"] == accum
    assert cfg["runner"]["eval_step"] == eval_step
    assert cfg["runner"]["gradient_clipping"] == 1
    assert cfg["optimizer"] == {"name": "TorchOptim", "torch_optim_name": optim, "lr": 1.0e-4}
    assert "scheduler" not in cfg
    assert cfg["downstream_expert"]["datarc"][batch_key] == batch
    placeholders = rf.unfilled_placeholders(cfg)
    assert placeholders == [f"downstream_expert.datarc.{k}" for k in tasks.TASKS[task].data_keys]
    assert rec["unfilled_data_keys"] == list(tasks.TASKS[task].data_keys)
    assert rec["changes"] == {} and rec["effective_learning_rate"] == 1e-4


def test_task_specific_official_values():
    asr = rf.load_recipe("asr")
    rnn = asr["downstream_expert"]["modelrc"]["RNNs"]
    assert asr["downstream_expert"]["modelrc"]["select"] == "RNNs"
    assert rnn["module"] == "LSTM" and rnn["bidirection"] is True and rnn["dim"] == [1024, 1024]
    assert asr["downstream_expert"]["datarc"]["decoder_args"]["decoder_type"] == "None"  # no LM
    assert asr["runner"]["eval_dataloaders"] == ["dev-clean"]
    assert asr["downstream_expert"]["datarc"]["train"] == ["train-clean-100"]
    assert asr["specaug"]["num_time_mask"] == 2
    er = rf.load_recipe("emotion")
    assert er["downstream_expert"]["datarc"]["test_fold"] == "fold1"
    assert er["downstream_expert"]["datarc"]["valid_ratio"] == 0.2
    sid = rf.load_recipe("voxceleb1")
    assert sid["downstream_expert"]["datarc"]["max_timestep"] == 128000
    ks = rf.load_recipe("speech_commands")
    assert ks["runner"]["eval_dataloaders"] == ["dev", "test"]
    assert ks["downstream_expert"]["modelrc"]["select"] == "UtteranceLevel"


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_smoke_profile_overrides_only_what_it_says(task):
    official = _flatten(rf.load_recipe(task))
    rec = {}
    smoke = _flatten(rf.load_recipe(task, "smoke", record=rec))
    profile = _flatten(yaml.safe_load((REPO / "downstream_recipes/profiles/smoke.yaml").read_text())[task])
    assert profile, "smoke profile has no section for the task"
    assert set(smoke) == set(official)
    for key, value in smoke.items():
        assert value == profile.get(key, official[key]), key
    assert set(rec["changes"]) == {k for k in profile if profile[k] != official[k]}
    assert smoke["runner.total_steps"] <= 100 and smoke["downstream_expert.datarc.num_workers"] == 0
    assert smoke["optimizer.lr"] == 1e-4  # not touched by the profile
    if task == "ks":
        assert official["runner.total_steps"] == 200000


def test_profile_keys_must_exist_and_overrides_merge():
    with pytest.raises(UserInputError, match=r"runner.total_stepz"):
        rf.deep_merge({"runner": {"total_steps": 1}}, {"runner": {"total_stepz": 2}}, strict=True)
    cfg = rf.load_recipe("ks", "smoke", {"runner.total_steps": 7, "scheduler": {"name": "linear_schedule_with_warmup"}})
    assert cfg["runner"]["total_steps"] == 7 and cfg["runner"]["eval_step"] == 15
    assert cfg["scheduler"] == {"name": "linear_schedule_with_warmup"}
    with pytest.raises(UserInputError, match="available"):
        rf.load_recipe("ks", "nonexistent")
    with pytest.raises(UserInputError, match="unknown SUPERB task"):
        rf.load_recipe("pr")


def test_learning_rate_and_fold_are_recorded():
    rec = {}
    cfg = rf.load_recipe("er", "smoke", learning_rate=5e-5, test_fold=3, record=rec)
    assert cfg["optimizer"]["lr"] == 5e-5
    assert cfg["downstream_expert"]["datarc"]["test_fold"] == "fold3"
    assert rec["learning_rate"] == 5e-5 and rec["official_learning_rate"] == 1e-4
    assert rec["effective_learning_rate"] == 5e-5 and rec["test_fold"] == "fold3"
    assert rec["changes"]["optimizer.lr"] == [1e-4, 5e-5]
    assert rec["profile"] == "smoke" and rec["downstream"] == "emotion"
    assert "s3prl/downstream/emotion/config.yaml" in rec["recipe_source"]
    with pytest.raises(UserInputError, match="fold1"):
        rf.load_recipe("er", test_fold="fold6")
    with pytest.raises(UserInputError, match=r"test_fold: only applies to a task with folds \(er\), not ks"):
        rf.load_recipe("ks", test_fold="fold1")
    with pytest.raises(UserInputError, match="positive"):
        rf.load_recipe("ks", learning_rate=0)


def test_override_string_round_trips_through_s3prl(tmp_path):
    helper = pytest.importorskip("s3prl.utility.helper")
    datarc = {"libri_root": tmp_path / "Libri Speech", "bucket_file": tmp_path / "b", "dict_path": tmp_path / "c.dict"}
    text = rf.recipe_override_string("asr", datarc, learning_rate=2e-4)
    cfg = rf.load_recipe("asr")
    helper.override(text, argparse.Namespace(), cfg)
    expected = rf.load_recipe("asr", learning_rate=2e-4, datarc=datarc)
    assert cfg == expected
    assert cfg["downstream_expert"]["datarc"]["libri_root"] == str((tmp_path / "Libri Speech").resolve())
    assert rf.unfilled_placeholders(cfg) == []
    er = rf.recipe_override_string("er", {"root": "/data/IEMOCAP", "meta_data": "/data/meta"}, test_fold="fold2")
    assert er == ("config.downstream_expert.datarc.root='/data/IEMOCAP',,"
                  "config.downstream_expert.datarc.meta_data='/data/meta',,"
                  "config.downstream_expert.datarc.test_fold='fold2'")
    with pytest.raises(UserInputError, match=r"missing \['speech_commands_test_root'\]"):
        rf.recipe_override_string("ks", {"speech_commands_root": "/x"})
    with pytest.raises(UserInputError, match="-o override parser"):
        rf.recipe_override_string("sid", {"file_path": "/a=b", "meta_data": "/m"})


def test_write_recipe(tmp_path):
    datarc = {"file_path": tmp_path / "vox", "meta_data": tmp_path / "vox" / "split.txt"}
    path = tmp_path / "run" / "sid.yaml"
    rec = rf.write_recipe(path, "sid", "smoke", learning_rate=1e-5, datarc=datarc)
    with open(path) as fh:
        written = yaml.load(fh, Loader=yaml.FullLoader)  # the loader run_downstream.py uses
    assert written == rf.load_recipe("sid", "smoke", learning_rate=1e-5, datarc=datarc)
    assert rec["config_path"] == str(path.resolve()) and len(rec["sha256"]) == 64
    assert rec["data_override"].startswith("config.downstream_expert.datarc.file_path=")
    assert rec["effective_learning_rate"] == 1e-5 and rec["unfilled_data_keys"] == []
    assert rf.write_recipe(path, "sid", "smoke", learning_rate=1e-5, datarc=datarc)["sha256"] == rec["sha256"]
    with pytest.raises(UserInputError, match="force=True"):
        rf.write_recipe(path, "sid", "official")
    rf.write_recipe(path, "sid", "official", force=True)
    with open(path) as fh:
        assert yaml.safe_load(fh)["runner"]["total_steps"] == 200000


def test_recipe_files_are_unmodified_official_structure():
    """Every recipe keeps the official blocks and only the data keys are placeholders."""
    for task, spec in tasks.TASKS.items():
        text = (rf.recipes_dir() / spec.recipe).read_text()
        assert spec.source.split(":")[0].startswith("s3prl/s3prl@")
        assert text.count("<SET_BY_RUNNER:") == len(spec.data_keys)
        cfg = yaml.safe_load(text)
        assert set(cfg) >= {"runner", "optimizer", "downstream_expert"}
        assert set(cfg["downstream_expert"]) == {"datarc", "modelrc"}


def test_voxceleb1_cache_dir_points_into_s3prl():
    cache = datafiles.voxceleb1_cache_dir()
    assert cache is not None and cache.parts[-3:] == ("downstream", "voxceleb1", ".cache")
    assert (cache.parent / "dataset.py").is_file()


# --------------------------------------------------------------------------------------------------
# `s3prl-redundancy recipe`: a complete config for a plain s3prl user
# --------------------------------------------------------------------------------------------------


def _placeholders(text: str) -> bool:
    return "SET_BY_RUNNER" in text


def test_recipe_command_writes_a_complete_config(tmp_path, capsys):
    from s3prl_redundancy import cli

    out = tmp_path / "sid.yaml"
    code = cli.main(["recipe", "sid", "--profile", "smoke", "--out", str(out),
                     "--datarc", f"file_path={tmp_path / 'vox'}", f"meta_data={tmp_path / 'vox' / 'iden_split.txt'}"])
    assert code == 0
    text = out.read_text()
    config = yaml.safe_load(text)
    assert not _placeholders(text) and not rf.unfilled_placeholders(config)
    assert config["downstream_expert"]["datarc"]["file_path"] == str(tmp_path / "vox")
    assert config["runner"]["total_steps"] == 30  # the smoke profile merged in
    assert "-d voxceleb1 -c " + str(out) in capsys.readouterr().out


def test_recipe_command_refuses_missing_data_by_key(tmp_path, capsys):
    from s3prl_redundancy import cli

    out = tmp_path / "ks.yaml"
    code = cli.main(["recipe", "ks", "--out", str(out), "--datarc", "speech_commands_root=/data/sc"])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "speech_commands_test_root" in err and "--data-root" in err and "speech_commands_root," not in err
    with pytest.raises(UserInputError, match="not 'nope'"):
        rf.write_user_recipe(out, "ks", datarc={"nope": "/x"})
    with pytest.raises(UserInputError, match="unknown profile"):
        rf.write_user_recipe(out, "ks", "fast", datarc={"speech_commands_root": "/a", "speech_commands_test_root": "/b"})


def test_run_downstream_passes_cpu_when_cuda_is_missing(capsys):
    from s3prl_redundancy.commands.run_downstream import with_device

    argv = ["-m", "evaluate", "-e", "exp/states-4.ckpt"]
    assert with_device(argv, cuda_available=False) == argv + ["--device", "cpu"]
    assert "--device cpu" in capsys.readouterr().err
    assert with_device(argv, cuda_available=True) == argv
    assert with_device(argv + ["--device", "cuda:1"], cuda_available=False) == argv + ["--device", "cuda:1"]
    assert with_device(argv + ["--device=cpu"], cuda_available=False) == argv + ["--device=cpu"]


@pytest.mark.slow
def test_plain_s3prl_accepts_the_written_recipe(tmp_path):
    """s3prl's own run_downstream trains a few steps with `-c` the file `recipe --data-root MINI` wrote."""
    from s3prl_redundancy import cli
    from s3prl_redundancy.superb import tts
    from s3prl_redundancy.testing.processes import run_python

    if not tts.espeak_available():
        pytest.skip("espeak-ng is needed for the mini-SUPERB corpus")
    from s3prl_redundancy.superb.corpus import build_corpus

    corpus = build_corpus(tmp_path / "mini", "tiny", seed=0, workers=2)
    recipe = tmp_path / "ks.yaml"
    assert cli.main(["recipe", "ks", "--profile", "smoke", "--data-root", str(corpus.root), "--out", str(recipe)]) == 0
    assert not _placeholders(recipe.read_text())
    steps = "config.runner.total_steps=2,,config.runner.eval_step=2,,config.runner.save_step=2"
    proc = run_python(["-m", "s3prl.run_downstream", "-m", "train", "-u", "tiny_hubert", "-d", "speech_commands",
                       "-c", str(recipe), "-p", str(tmp_path / "exp"), "--device", "cpu", "-o", steps],
                      cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "exp" / "states-2.ckpt").is_file()
