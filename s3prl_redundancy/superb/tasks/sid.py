"""SID: speaker identification on VoxCeleb1 (s3prl's ``voxceleb1`` downstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ...errors import UserInputError
from .. import datafiles
from .base import LayoutError, Task, need_dir, need_file, probe_audio


def check(datarc: Mapping) -> dict:
    root = Path(datarc["file_path"])
    need_dir(root, "SID file_path (VoxCeleb1 root)", "Point it at the folder holding dev/wav/ and test/wav/.")
    try:
        speakers = datafiles.scan_voxceleb1(root)
    except UserInputError as exc:
        raise LayoutError(exc.message) from exc
    files = {rel for paths in speakers.values() for rel in paths}
    first = next(iter(speakers.values()))[0]
    matches = list(root.glob("*/wav/" + first))
    probe_audio(matches[0], 16000)
    out = {"speakers": len(speakers), "utterances": len(files)}
    if "meta_data" in datarc:
        path = need_file(Path(datarc["meta_data"]), "SID meta_data (identification split)",
                          "Use VoxCeleb1's iden_split.txt or write one with datafiles.write_voxceleb1_split(root, path).")
        try:
            rows = datafiles.read_voxceleb1_split(path)
        except UserInputError as exc:
            raise LayoutError(exc.message) from exc
        split_counts = {1: 0, 2: 0, 3: 0}
        for split, rel in rows:
            if rel not in files:
                raise LayoutError(
                    f"{path} lists {rel}, but no {root}/*/wav/{rel} exists (the expert globs exactly that). "
                    "Regenerate the split for this root or fix file_path."
                )
            split_counts[split] += 1
        for split, name in ((1, "train"), (2, "dev"), (3, "test")):
            if not split_counts[split]:
                raise LayoutError(f"{path} has no '{split} ...' ({name}) lines; the expert needs train, dev and test.")
        out.update(train=split_counts[1], dev=split_counts[2], test=split_counts[3])
    return out



TASK = Task(
    name="sid", order=1, downstream="voxceleb1", recipe="sid.yaml", data_keys=("file_path", "meta_data"),
    description="speaker identification, VoxCeleb1 (1251 speakers), accuracy",
    source="s3prl/s3prl@752c3fcc617a293675bc6eb8765faff39fc6ef43:s3prl/downstream/voxceleb1/config.yaml",
    metric="acc", higher_is_better=True, unit="fraction", evaluate_split="test", dev_split="dev",
    tensorboard_prefix="voxceleb1",
    dataset_layout={"file_path": ("VoxCeleb1",), "meta_data": ("VoxCeleb1/iden_split.txt",)},
    # HuBERT Base SID: 81.4 % at 1e-1 but 67.4 % at the official 1e-4 (s3prl issue #268): search upwards
    check=check, lr_grid=(1e-1, 1e-2, 1e-3, 1e-4), aliases=("voxceleb1",),
)
