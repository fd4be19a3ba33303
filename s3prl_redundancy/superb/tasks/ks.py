"""KS: keyword spotting on Speech Commands v0.01 (s3prl's ``speech_commands`` downstream)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Mapping, Union

PathLike = Union[str, "os.PathLike[str]"]

from .base import LayoutError, Task, need_dir, probe_audio

KS_COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KS_CLASSES = KS_COMMANDS + ("_unknown_", "_silence_")
"""The 12 classes of SUPERB KS (s3prl's test set folders)."""


def ks_hash_band(speaker: str) -> str:
    """Which split s3prl's ``split_dataset`` puts ``<speaker>_nohash_*`` files in (dev / test / train)."""
    max_uttr = 2 ** 27 - 1
    hashed = hashlib.sha1(speaker.encode("utf-8")).hexdigest()
    pct = (int(hashed, 16) % (max_uttr + 1)) * (100.0 / max_uttr)
    return "dev" if pct < 10 else "test" if pct < 20 else "train"


def ks_split(root: PathLike) -> tuple:
    """s3prl's ``speech_commands.expert.split_dataset``: ``([(class, path)] train, [(class, path)] dev)``."""
    train, dev = [], []
    for entry in Path(root).iterdir():
        if not entry.is_dir() or entry.name == "_background_noise_":
            continue
        for audio_path in entry.glob("*.wav"):
            band = ks_hash_band(re.sub(r"_nohash_.*$", "", audio_path.name))
            if band == "dev":
                dev.append((entry.name, audio_path))
            elif band == "train":
                train.append((entry.name, audio_path))
    return train, dev


def check(datarc: Mapping) -> dict:
    root = need_dir(Path(datarc["speech_commands_root"]), "KS speech_commands_root",
                     "Unpack speech_commands_v0.01.tar.gz there (it holds one folder per word and _background_noise_/).")
    for word in KS_COMMANDS:
        folder = need_dir(root / word, f"KS command word {word!r}",
                           "speech_commands_root must hold one folder per word (yes, no, up, ... go).")
        if not any(folder.glob("*.wav")):
            raise LayoutError(f"KS folder {folder} has no .wav files; expected <speaker>_nohash_<n>.wav clips.")
    noise = need_dir(root / "_background_noise_", "KS background noise (the _silence_ class)",
                      "Speech Commands ships _background_noise_/*.wav; restore it.")
    n_noise = len(list(noise.glob("*.wav")))
    if not n_noise:
        raise LayoutError(f"{noise} has no .wav files; the _silence_ class is cut from them.")
    train, dev = ks_split(root)
    for name, items in (("train", train), ("dev", dev)):
        if not items:
            raise LayoutError(
                f"the KS {name} split of {root} is empty: s3prl assigns a clip to dev when sha1(<speaker>) of its "
                f"'<speaker>_nohash_<n>.wav' name falls in the first 10%, to nothing in the next 10%, else to train. "
                "Add clips from more speakers (file names must follow <speaker>_nohash_<n>.wav)."
            )
    out = {"train": len(train), "dev": len(dev), "background_noise": n_noise}
    probe = train[0][1]
    probe_audio(probe)
    if "speech_commands_test_root" in datarc:
        test = need_dir(Path(datarc["speech_commands_test_root"]), "KS speech_commands_test_root",
                         "Unpack speech_commands_test_set_v0.01.tar.gz there (12 class folders).")
        per_class = {}
        for class_dir in sorted(test.iterdir()):
            if not class_dir.is_dir():
                continue
            if class_dir.name not in KS_CLASSES:
                raise LayoutError(
                    f"KS test folder {class_dir} is not one of the 12 classes {list(KS_CLASSES)}; s3prl's test "
                    "dataset uses every sub-folder name as a label and would fail on it. Remove or rename it."
                )
            per_class[class_dir.name] = len(list(class_dir.glob("*.wav")))
        if not sum(per_class.values()):
            raise LayoutError(f"KS test root {test} holds no <class>/*.wav files.")
        out["test"] = sum(per_class.values())
        out["test_per_class"] = per_class
    return out



TASK = Task(
    name="ks", order=0, downstream="speech_commands", recipe="ks.yaml",
    data_keys=("speech_commands_root", "speech_commands_test_root"),
    description="keyword spotting, Speech Commands v0.01 (12 classes), accuracy",
    source="s3prl/s3prl@3c50982280e8b6a0c0c4a45eee6ed26ae1da09f2:s3prl/downstream/speech_commands/config.yaml",
    metric="acc", higher_is_better=True, unit="fraction", evaluate_split="test", dev_split="dev",
    tensorboard_prefix="speech_commands",
    dataset_layout={"speech_commands_root": ("speech_commands_v0.01",),
                    "speech_commands_test_root": ("speech_commands_test_set_v0.01",)},
    check=check, aliases=("speech_commands",),
)
