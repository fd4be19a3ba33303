"""ER: emotion recognition on IEMOCAP, 5-fold leave-one-session-out (s3prl's ``emotion`` downstream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from .base import LayoutError, Task, need_dir, need_file, probe_audio

ER_FOLDS = tuple(f"fold{i}" for i in range(1, 6))
"""The IEMOCAP sessions held out for testing, one run each; SUPERB averages the test accuracies."""


def check(datarc: Mapping) -> dict:
    root = need_dir(Path(datarc["root"]), "ER root (IEMOCAP)",
                     "Point it at IEMOCAP_full_release/, the folder holding Session1/ .. Session5/.")
    out: dict = {"sessions": []}
    for n in range(1, 6):
        session = root / f"Session{n}"
        need_dir(session / "sentences" / "wav", f"IEMOCAP Session{n} audio",
                  f"IEMOCAP keeps utterances at Session{n}/sentences/wav/<dialog>/<utt>.wav.")
        out["sessions"].append(session.name)
    if "meta_data" not in datarc:
        for n in range(1, 6):
            need_dir(root / f"Session{n}" / "dialog" / "EmoEvaluation", f"IEMOCAP Session{n} labels",
                      "write_iemocap_meta() reads Session<N>/dialog/EmoEvaluation/<dialog>.txt.")
        return out
    meta = need_dir(Path(datarc["meta_data"]), "ER meta_data folder",
                     "Write it with datafiles.write_iemocap_meta(root, meta_data_dir).")
    folds = [datarc["test_fold"]] if datarc.get("test_fold") else list(ER_FOLDS)
    probed = False
    for fold in folds:
        session = str(fold).replace("fold", "Session")
        for name in ("train_meta_data.json", "test_meta_data.json"):
            path = need_file(meta / session / name, f"ER {fold} meta data",
                              "Write it with datafiles.write_iemocap_meta(root, meta_data_dir).")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                labels, entries = data["labels"], data["meta_data"]
            except (ValueError, KeyError, TypeError) as exc:
                raise LayoutError(f"{path} is not an emotion meta file ({exc}); rewrite it with write_iemocap_meta().") from exc
            if not entries:
                raise LayoutError(f"{path} lists no utterances; rewrite it with write_iemocap_meta().")
            for entry in entries:
                if entry.get("label") not in labels:
                    raise LayoutError(f"{path}: label {entry.get('label')!r} is not in its labels {labels}.")
                wav = root / entry["path"]
                if not wav.is_file():
                    raise LayoutError(
                        f"{path} lists {entry['path']}, but {wav} does not exist (paths are relative to the ER root). "
                        "Fix the root or rewrite the meta data for this root."
                    )
                if not probed:
                    probe_audio(wav)
                    probed = True
            out[f"{fold}:{name.split('_')[0]}"] = len(entries)
    return out



TASK = Task(
    name="er", order=2, downstream="emotion", recipe="er.yaml", data_keys=("root", "meta_data"),
    description="emotion recognition, IEMOCAP (neu/hap/ang/sad), 5-fold leave-one-session-out accuracy",
    source="s3prl/s3prl@227829f5b2381809aade3fdcfc37db6133ed8f5e:s3prl/downstream/emotion/config.yaml",
    metric="acc", higher_is_better=True, unit="fraction", evaluate_split="test", dev_split="dev",
    tensorboard_prefix="emotion-{fold}",
    dataset_layout={"root": ("IEMOCAP", "IEMOCAP_full_release"), "meta_data": ("{root}/meta_data",)},
    check=check, folds=ER_FOLDS, aliases=("emotion",),
)
