"""Distillation: the replaced stack against the teacher's, the whole upstream, and training throughput.

Teacher: HuBERT Base's architecture (12 layers, 768 dims, 12 heads, FFN 3072, 512-channel CNN; random
weights: size and speed do not depend on them). Students: the frozen front end plus a mimicker of every
architecture (``mlp``, ``linear``, ``transformer``; h = 64, all 12 layers as targets).

1. Replaced stack: parameters, MACs (:func:`s3prl_redundancy.compression.cost.macs`) and latency of each
   mimicker as a fraction of the teacher's transformer stack (``TeacherStack``), all timed side by side on
   the same transformer input (``BENCH_AUDIO_SECONDS`` of audio; a mimicker's time per round is the mean of
   ``MIMICKER_CALLS`` calls). Asserted: at most 5% of the parameters
   and MACs and at most 6% of the latency. ``distill.report.build_report`` is checked to count the same.
2. Whole upstream: student against teacher, with the front end alone as the floor (the frozen CNN is most
   of what is left).
3. Whole upstream with a light front end (``distill --front-end light``): teacher, teacher-front-end student
   and light-front-end student side by side at batch 1 and 8 (parameters, MACs, latency). Asserted: the
   light student at most 10% of the teacher's latency (aim 6%) and under 5% of its parameters.
4. Training throughput, seconds of audio per second of training: one training step of
   :class:`~s3prl_redundancy.distill.trainer.Trainer` (its ``step_losses``, backward and Adam step, as
   ``Trainer.train`` runs them) against the teacher's forward on the same batch (the floor: a step needs
   the teacher's hidden states), and the step with the teacher's states cached on disk
   (``--cache-teacher``) against the uncached step.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from s3prl_redundancy.testing.benchmarks import (DISTILL_ARCH, DISTILL_HIDDEN, ROUNDS, SECONDS, median, perturbed_student, record_context,
                      record_ratios, round_ratios, waveforms)
from s3prl_redundancy.compression.cost import count_module_parameters, macs, time_rounds

ARCHS = ("mlp", "linear", "transformer")
TRAIN_BATCH = 4
STACK_PARAMS_TARGET, STACK_MACS_TARGET, STACK_LATENCY_TARGET = 0.05, 0.05, 0.06
MIMICKER_CALLS = 40  # a mimicker takes milliseconds: timed over 40 calls per round, so jitter does not dominate


@pytest.fixture(scope="module")
def students(base_ckpt):
    return {arch: perturbed_student(base_ckpt, arch=arch) for arch in ARCHS}


def test_replaced_stack_against_the_teacher_stack(benchmark, base_upstream, students):
    from s3prl_redundancy.distill.report import build_report
    from s3prl_redundancy.distill.teacher import TeacherStack

    benchmark.group = "distillation: replaced stack vs the teacher's stack"
    stack = TeacherStack(base_upstream.model, "hubert").eval()
    with torch.inference_mode():
        x0, mask = students["mlp"].front_end(waveforms(1))
    fns = {"teacher_stack": lambda: stack(x0)}
    calls = {arch: (lambda s=s: s.mimicker(x0, mask)) for arch, s in students.items()}
    fns.update({arch: (lambda c=c: [c() for _ in range(MIMICKER_CALLS)]) for arch, c in calls.items()})
    times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=1), rounds=1, iterations=1)
    for arch in calls:
        times[arch] = [t / MIMICKER_CALLS for t in times[arch]]

    stack_params, stack_macs = count_module_parameters(stack), macs(fns["teacher_stack"])
    context = {"audio_seconds": SECONDS, "frames": int(x0.shape[1]), "teacher_stack_parameters": stack_params,
               "teacher_stack_macs_per_audio_s": stack_macs / SECONDS,
               "teacher_stack_s": median(times["teacher_stack"])}
    for arch, student in students.items():
        params, mac = count_module_parameters(student.mimicker), macs(calls[arch])
        record_ratios(benchmark, f"{arch}: latency / teacher stack", round_ratios(times, arch, "teacher_stack"),
                      "teacher's 12-layer stack on the same input, same round", target=f"<= {STACK_LATENCY_TARGET}")
        record_ratios(benchmark, f"{arch}: parameters / teacher stack", [params / stack_params],
                      "teacher stack's parameters", target=f"<= {STACK_PARAMS_TARGET}")
        record_ratios(benchmark, f"{arch}: MACs / teacher stack", [mac / stack_macs], "teacher stack's MACs",
                      target=f"<= {STACK_MACS_TARGET}")
        context.update({f"{arch}_parameters": params, f"{arch}_macs_per_audio_s": mac / SECONDS,
                        f"{arch}_s": median(times[arch])})
        assert params / stack_params <= STACK_PARAMS_TARGET
        assert mac / stack_macs <= STACK_MACS_TARGET
        assert median(round_ratios(times, arch, "teacher_stack")) <= STACK_LATENCY_TARGET
    record_context(benchmark, **context)

    # the distillation report counts the same parameters and MACs (one quick timing round only)
    report = build_report(students["mlp"], base_upstream, "hubert", waveforms(1, seconds=1.0), repeats=1,
                          seconds=SECONDS, audio_note="random audio (benchmark)")
    assert report["parameters"]["teacher_stack"] == stack_params
    assert report["parameters"]["student_replaced"] == count_module_parameters(students["mlp"].mimicker)
    assert report["macs_per_second_of_audio"]["teacher_stack"] * SECONDS == pytest.approx(stack_macs, rel=1e-9)


def test_whole_upstream(benchmark, base_upstream, students):
    benchmark.group = "distillation: whole upstream"
    student = students[DISTILL_ARCH]
    wavs = waveforms(1)
    fns = {"front_end": lambda: student.front_end(wavs), "student": lambda: student(wavs),
           "teacher": lambda: base_upstream(wavs)}
    times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=1), rounds=1, iterations=1)
    front_share = round_ratios(times, "front_end", "teacher")
    record_ratios(benchmark, f"{DISTILL_ARCH} student / teacher (latency)", round_ratios(times, "student", "teacher"),
                  "teacher upstream (s3prl's HuBERT expert), same round", floor=median(front_share))
    record_ratios(benchmark, f"front end / {DISTILL_ARCH} student (latency)", round_ratios(times, "front_end", "student"),
                  "student upstream, same round", target=">= 0.8")
    params = {n: count_module_parameters(m) for n, m in (("front_end", student.front_end), ("student", student),
                                                          ("teacher", base_upstream.model))}
    record_ratios(benchmark, f"{DISTILL_ARCH} student / teacher (parameters)", [params["student"] / params["teacher"]],
                  "teacher model's parameters (pre-training heads included)", target="< 0.2")
    record_context(benchmark, audio_seconds=SECONDS, hidden=DISTILL_HIDDEN,
                   **{f"{n}_s": median(v) for n, v in times.items()}, **{f"{n}_parameters": p for n, p in params.items()})
    assert median(times["student"]) < median(times["teacher"])
    assert median(round_ratios(times, "front_end", "student")) > 0.8  # what remains is mostly the frozen CNN


LIGHT_LATENCY_TARGET, LIGHT_PARAMS_TARGET = 0.10, 0.05


@pytest.fixture(scope="module")
def light_student(base_ckpt):
    """A light-front-end student of the Base teacher (random front end, mimicker made non-zero as after training)."""
    from s3prl_redundancy.distill.student import Student

    torch.manual_seed(0)
    student = Student.from_teacher("hubert", base_ckpt, arch=DISTILL_ARCH, hidden=DISTILL_HIDDEN, front_end="light").eval()
    with torch.no_grad():
        for p in student.mimicker.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return student


@pytest.mark.parametrize("batch", [1, 8])
def test_whole_upstream_with_a_light_front_end(benchmark, base_upstream, students, light_student, batch):
    from s3prl_redundancy.distill.front_end import teacher_front_end_parameters
    from s3prl_redundancy.distill.teacher import TeacherStack

    benchmark.group = f"distillation: whole upstream with a light front end, batch {batch}"
    wavs = waveforms(batch)
    fns = {"teacher": lambda: base_upstream(wavs), "teacher_front": lambda: students[DISTILL_ARCH](wavs),
           "light_front": lambda: light_student(wavs), "light_front_end_alone": lambda: light_student.front_end(wavs)}
    times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=1), rounds=1, iterations=1)
    model = base_upstream.model
    params = {"teacher": teacher_front_end_parameters(model) + count_module_parameters(TeacherStack(model, "hubert")),
              "teacher_front": count_module_parameters(students[DISTILL_ARCH]),
              "light_front": count_module_parameters(light_student)}
    mac = {n: macs(fns[n]) for n in ("teacher", "teacher_front", "light_front")}
    reference = "teacher upstream (s3prl's HuBERT expert), same round"
    for name, label in (("teacher_front", "teacher-front-end student"), ("light_front", "light-front-end student")):
        target = f"<= {LIGHT_LATENCY_TARGET}" if name == "light_front" else None
        record_ratios(benchmark, f"{label} / teacher (latency)", round_ratios(times, name, "teacher"), reference, target=target)
        record_ratios(benchmark, f"{label} / teacher (parameters)", [params[name] / params["teacher"]],
                      "teacher's front end + transformer stack", target=f"< {LIGHT_PARAMS_TARGET}" if target else None)
        record_ratios(benchmark, f"{label} / teacher (MACs)", [mac[name] / mac["teacher"]], "teacher's MACs, same audio")
    record_ratios(benchmark, "light-front-end student / teacher-front-end student (latency)",
                  round_ratios(times, "light_front", "teacher_front"), "teacher-front-end student, same round")
    record_context(benchmark, batch=batch, audio_seconds=SECONDS, **{f"{n}_s": median(v) for n, v in times.items()},
                   **{f"{n}_parameters": p for n, p in params.items()},
                   **{f"{n}_macs_per_audio_s": m / (SECONDS * batch) for n, m in mac.items()})
    assert params["light_front"] / params["teacher"] < LIGHT_PARAMS_TARGET
    assert median(round_ratios(times, "light_front", "teacher")) <= LIGHT_LATENCY_TARGET


@pytest.fixture(scope="module")
def trainers(base_ckpt, tmp_path_factory):
    """An uncached and a cached-teacher trainer on ``2 * TRAIN_BATCH`` tone utterances of ``SECONDS``."""
    from s3prl_redundancy.testing.audio import write_tone_corpus
    from s3prl_redundancy.distill.trainer import DistillConfig, Trainer

    root = tmp_path_factory.mktemp("distill_bench")
    ckpt_path = root / "teacher.pt"
    torch.save(base_ckpt, ckpt_path)
    write_tone_corpus(root / "data", 2 * TRAIN_BATCH, seed=0, seconds=(SECONDS, SECONDS))
    out = {}
    for name, cache in (("uncached", False), ("cached", True)):
        cfg = DistillConfig(teacher="hubert_local", ckpt=str(ckpt_path), data=str(root / "data"), out=str(root / name),
                            arch=DISTILL_ARCH, hidden=DISTILL_HIDDEN, steps=1000, batch_size=TRAIN_BATCH,
                            save_every=1000, report=False, progress=False, heldout=0, cache_teacher=cache)
        trainer = Trainer(cfg)
        trainer.prepare()
        trainer.student.mimicker.train()
        out[name] = trainer
    return out


def _step_fn(trainer):
    """One training step as ``Trainer.train`` runs it (batch ``i`` on the i-th call)."""
    counter = itertools.count()

    def step():
        terms = trainer.step_losses(next(counter))
        trainer.optimizer.zero_grad(set_to_none=True)
        (terms.sum() * trainer.ctx.world_size).backward()
        trainer.optimizer.step()

    return step


def _teacher_fn(trainer):
    """The teacher's forward on the batch a step would load (batch ``i`` on the i-th call), loading included."""
    counter = itertools.count()

    def forward():
        wavs = [trainer.train_set[j][1] for j in trainer.batches.batch(next(counter))]
        trainer.teacher_states(wavs)

    return forward


def test_training_throughput(benchmark, trainers):
    benchmark.group = "distillation: training throughput"
    plain, cached = trainers["uncached"], trainers["cached"]
    fns = {"teacher_forward": _teacher_fn(plain), "step": _step_fn(plain), "step_cached": _step_fn(cached)}
    times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=1, grad=True),
                               rounds=1, iterations=1)
    audio = TRAIN_BATCH * SECONDS
    record_ratios(benchmark, "training throughput / teacher inference throughput",
                  round_ratios(times, "teacher_forward", "step"),
                  "teacher's forward on the same batch (audio s per s), same round", target=">= 0.8", floor=1.0)
    record_ratios(benchmark, "cached-teacher step / uncached step", round_ratios(times, "step_cached", "step"),
                  "uncached training step, same round")
    record_context(benchmark, batch=TRAIN_BATCH, audio_seconds_per_step=audio,
                   training_audio_s_per_s=audio / median(times["step"]),
                   cached_training_audio_s_per_s=audio / median(times["step_cached"]),
                   teacher_inference_audio_s_per_s=audio / median(times["teacher_forward"]),
                   **{f"{n}_s": median(v) for n, v in times.items()})
    assert median(times["step_cached"]) < median(times["step"])
