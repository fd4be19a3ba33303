"""The stages of the demo study. Each stage runs one ``s3prl-redundancy`` command (the command a user would
type, printed before it runs), except the keyword probe (:mod:`.probe`, computed in this process), and is
skipped when its output already exists, so a second run reuses finished stages and an interrupted run
continues where it stopped."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserInputError
from ..io import atomic_write_text
from . import probe

PRUNE_STRATEGIES = ("block-influence", "backward")


@dataclass
class StudyPlan:
    """What the demo runs. ``quick`` shrinks every stage to the minimum that still exercises it (tests, CI)."""

    out: Path
    upstream: str = "tiny_hubert"
    quick: bool = False
    full: bool = False  # also ER and ASR
    device: str = "cpu"
    prune_ratio: float = 0.4
    strategies: tuple = PRUNE_STRATEGIES
    probe_voices: Optional[int] = None  # voices of the measured keyword probe (default: probe.VOICES, quick: QUICK_VOICES)
    log: List[Dict] = field(default_factory=list)

    @property
    def tasks(self) -> List[str]:
        return ["ks", "sid", "er", "asr"] if self.full else ["ks", "sid"]

    @property
    def source(self) -> Dict[str, Optional[str]]:
        """The family entry + checkpoint that prune / distill start from."""
        if self.upstream == "tiny_hubert":
            from s3prl_redundancy.upstreams.tiny.expert import resolve_ckpt

            return {"entry": "hubert_local", "ckpt": resolve_ckpt(None)}
        if self.upstream in ("hubert", "wav2vec2", "wavlm"):
            return {"entry": self.upstream, "ckpt": None}  # s3prl's default weights (downloaded)
        raise UserInputError(f"{self.upstream!r}: use tiny_hubert (embedded) or hubert / wav2vec2 / wavlm",
                             argument="upstream")

    def upstream_args(self) -> List[str]:
        src = self.source
        return ["--upstream", src["entry"]] + (["--ckpt", src["ckpt"]] if src["ckpt"] else [])


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (s3prl processes, espeak-ng): on a shared machine the
    wall time of a stage says little; its CPU time is what it costs."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(plan: StudyPlan, name: str, argv: List[str], done: Path) -> None:
    """A stage that is one ``s3prl-redundancy`` command, reused when ``done`` exists."""
    from ..cli import main

    def step() -> None:
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"demo stage {name!r} failed (exit {code}); its command is printed above. Fix the "
                               "cause and run the demo again: finished stages are reused.")

    _run_step(plan, name, step, done, shown=f"{name}: s3prl-redundancy {' '.join(argv)}")


def _run_step(plan: StudyPlan, name: str, step, done: Path, shown: str = "") -> None:
    """A stage computed by ``step()``, reused like the others when ``done`` exists; its wall and CPU seconds
    are logged."""
    if done.exists():
        print(f"[demo] {name}: done earlier ({done}), reused", flush=True)
        plan.log.append({"stage": name, "status": "reused", "output": str(done)})
        return
    print(f"[demo] {shown or name}", flush=True)
    start, cpu = time.time(), _cpu_seconds()
    step()
    plan.log.append({"stage": name, "status": "ran", "seconds": round(time.time() - start, 1),
                     "cpu_seconds": round(_cpu_seconds() - cpu, 1), "output": str(done)})


def check_source_available(plan: StudyPlan) -> None:
    """Fail fast (before any stage) where real weights cannot be downloaded."""
    if plan.upstream == "tiny_hubert":
        plan.source
        return
    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.upstreams.pruned.expert import resolve_source

    resolve_source(FAMILIES[plan.upstream].name, None)


def run_study(plan: StudyPlan) -> Dict[str, Path]:
    """Run (or reuse) every stage; return the output folders by stage."""
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    check_source_available(plan)
    corpus = out / "corpus"
    paths = {"corpus": corpus, "similarity": out / "similarity", "distilled": out / "distilled", "superb": out / "superb"}
    _run(plan, "corpus", ["corpus", "--out", str(corpus), "--size", "tiny"], corpus / "corpus.json")
    speech = _speech_folder(corpus)

    sim_args = ["similarity", "--upstream", plan.upstream, "--data", str(speech), "--out", str(paths["similarity"]),
                "--device", plan.device, "--quiet"]
    if plan.quick:
        sim_args += ["--max-utterances", "6"]
    _run(plan, "similarity", sim_args, paths["similarity"] / "similarity.json")

    pruned = {}
    for strategy in plan.strategies:
        folder = out / f"pruned_{strategy.replace('-', '_')}"
        argv = ["prune", *plan.upstream_args(), "--strategy", strategy, "--ratio", str(plan.prune_ratio), "--out", str(folder)]
        if strategy not in ("backward", "forward", "forward-backward", "shallow"):
            argv += ["--data", str(speech)] + (["--max-utterances", "6"] if plan.quick else [])
        _run(plan, f"prune ({strategy})", argv, folder / "manifest.json")
        pruned[strategy] = folder
    paths["pruned"] = pruned

    paths["distilled_light"] = out / "distilled_light"
    for label, front_end in (("distilled", "teacher"), ("distilled_light", "light")):
        _distill_stage(plan, speech, paths[label], front_end)

    students = {label: paths[label] / "student.pt" for label in ("distilled", "distilled_light")}
    paths["probe"] = _probe_stage(plan, pruned, students)

    labels = [f"original={plan.upstream}"]
    upstream_args = []
    for strategy, folder in pruned.items():
        label = f"pruned_{strategy.replace('-', '_')}"
        labels.append(f"{label}=pruned_{_family(plan)}")
        upstream_args += ["--upstream-args", f"{label}:k={folder / 'pruned.pt'}"]
    for label, student in students.items():
        labels.append(f"{label}=distilled_{_family(plan)}")
        upstream_args += ["--upstream-args", f"{label}:k={student}"]
    superb = ["superb", "--upstreams", ",".join(labels), "--tasks", ",".join(plan.tasks), "--data-root", str(corpus),
              "--out", str(paths["superb"]), "--profile", "smoke", "--device", plan.device, "--threads", "1",
              "--jobs", str(min(2, os.cpu_count() or 1)),  # one single-threaded s3prl process per core
              "--er-folds", "1", "--reference", "original", *upstream_args]
    if plan.quick:
        superb += ["--recipe-override", "runner.total_steps=6", "--recipe-override", "runner.eval_step=3",
                   "--recipe-override", "runner.save_step=3", "--cost-repeats", "2"]
    _run(plan, "superb + leaderboard", superb, paths["superb"] / "leaderboard.json")
    atomic_write_text(out / "stages.json", json.dumps(plan.log, indent=2) + "\n")
    return paths


def _distill_stage(plan: StudyPlan, speech: Path, folder: Path, front_end: str) -> None:
    """A student with the teacher's frozen CNN front end, or with a light one distilled too (``--front-end``)."""
    teacher = plan.source
    argv = ["distill", "--teacher", teacher["entry"], "--data", str(speech), "--out", str(folder),
            "--front-end", front_end, "--steps", "40" if plan.quick else "400", "--batch-size", "4",
            "--max-seconds", "4", "--save-every", "100", "--device", plan.device, "--no-progress",
            "--force"]  # not done: start over, deleting only what an interrupted distill stage wrote
    if teacher["ckpt"]:
        argv += ["--ckpt", teacher["ckpt"]]
    if plan.quick:
        argv += ["--report-repeats", "2"]
    _run(plan, f"distill ({front_end} front end)", argv, folder / "student.pt")


def _probe_stage(plan: StudyPlan, pruned: Dict[str, Path], students: Dict[str, Path]) -> Path:
    """The measurement (:mod:`.probe`): every upstream's keyword probe on unseen voices, paired with the original."""
    upstreams = {"original": (plan.upstream, None),
                 **{f"pruned_{s.replace('-', '_')}": (f"pruned_{_family(plan)}", str(f / "pruned.pt"))
                    for s, f in pruned.items()},
                 **{label: (f"distilled_{_family(plan)}", str(path)) for label, path in students.items()}}
    folder = plan.out / "probe"
    voices = plan.probe_voices or (probe.QUICK_VOICES if plan.quick else probe.VOICES)
    _run_step(plan, f"probe (KS, {voices} unseen voices)",
              lambda: probe.measure(upstreams, "original", folder, voices=voices, device=plan.device),
              folder / probe.RESULT)
    return folder


def _family(plan: StudyPlan) -> str:
    return "hubert" if plan.upstream == "tiny_hubert" else plan.upstream


def _speech_folder(corpus: Path) -> Path:
    """Sentences of many voices for the analysis, pruning statistics and distillation: the ASR train split."""
    folder = corpus / "LibriSpeech" / "train-clean-100"
    if not folder.is_dir():
        candidates = sorted(corpus.rglob("train-clean-100"))
        if not candidates:
            raise UserInputError(f"{corpus} has no train-clean-100 folder; rebuild it with `s3prl-redundancy corpus --force`")
        folder = candidates[0]
    return folder
