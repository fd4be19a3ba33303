"""ASR: speech recognition on LibriSpeech train-clean-100 -> test-clean (s3prl's ``asr`` downstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ...errors import UserInputError
from .. import datafiles
from ..datafiles import ASR_SPLITS
from .base import LayoutError, Task, need_dir, need_file, probe_audio


def check(datarc: Mapping) -> dict:
    root = need_dir(Path(datarc["libri_root"]), "ASR libri_root (LibriSpeech)",
                     "Point it at LibriSpeech/, the folder holding train-clean-100/, dev-clean/, test-clean/.")
    splits = list(datarc.get("splits") or ASR_SPLITS)
    out: dict = {}
    for split in splits:
        folder = need_dir(root / split, f"LibriSpeech {split}", f"Download {split} from https://www.openslr.org/12.")
        chapters = [c for s in sorted(folder.iterdir()) if s.is_dir() for c in sorted(s.iterdir()) if c.is_dir()]
        if not chapters:
            raise LayoutError(f"{folder} has no <speaker>/<chapter>/ folders.")
        n = 0
        for chapter in chapters:
            trans = need_file(chapter / f"{chapter.parent.name}-{chapter.name}.trans.txt", "LibriSpeech transcript",
                               "Every <spk>/<chapter>/ folder needs <spk>-<chapter>.trans.txt.")
            flacs = sorted(chapter.glob("*.flac"))
            ids = {line.split(" ", 1)[0] for line in trans.read_text(encoding="utf-8").splitlines() if line.strip()}
            for flac in flacs:
                if flac.stem not in ids:
                    raise LayoutError(f"{flac.name} has no line in {trans}; add its transcript or remove the file.")
            n += len(flacs)
        if not n:
            raise LayoutError(f"{folder} holds no .flac files.")
        probe_audio(next(chapters[0].glob("*.flac")), 16000)
        out[split] = n
    if "bucket_file" in datarc:
        bucket = need_dir(Path(datarc["bucket_file"]), "ASR bucket_file (len_for_bucket folder)",
                           "Write it with datafiles.write_len_for_bucket(libri_root, bucket_dir).")
        for split in splits:
            csv_path = need_file(bucket / f"{split}.csv", f"ASR length table for {split}",
                                  "Write it with datafiles.write_len_for_bucket(libri_root, bucket_dir).")
            lines = csv_path.read_text(encoding="utf-8").splitlines()
            header = lines[0].split(",") if lines else []
            if "file_path" not in header or "length" not in header or len(lines) < 2:
                raise LayoutError(f"{csv_path} is not a len_for_bucket table (needs file_path,length columns and rows).")
            first = lines[1].split(",")[header.index("file_path")]
            if not (root / first).is_file():
                raise LayoutError(f"{csv_path} lists {first}, missing under {root}; regenerate it for this libri_root.")
    if "dict_path" in datarc:
        try:
            symbols = datafiles.read_char_dict(datarc["dict_path"])
        except UserInputError as exc:
            raise LayoutError(exc.message) from exc
        out["dict_symbols"] = len(symbols)
    return out



TASK = Task(
    name="asr", order=3, downstream="asr", recipe="asr.yaml", data_keys=("libri_root", "bucket_file", "dict_path"),
    description="speech recognition, LibriSpeech train-clean-100 -> test-clean, characters + CTC, no LM, WER",
    source="s3prl/s3prl@0cd9acd4bc9073cd71bd356580278cfb7f1566b1:s3prl/downstream/asr/config.yaml",
    metric="wer", higher_is_better=False, unit="percent", evaluate_split="test-clean", dev_split="dev-clean",
    tensorboard_prefix="asr",
    dataset_layout={"libri_root": ("LibriSpeech",), "bucket_file": ("LibriSpeech/len_for_bucket",),
                    "dict_path": ("LibriSpeech/char.dict", "{recipes}/asr/char.dict")},
    # one decade either side of the official 1e-4: ASR runs are the longest, so three explorations instead of four
    check=check, lr_grid=(1e-3, 1e-4, 1e-5),
)
