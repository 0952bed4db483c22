"""How every stage scales with rows: the micro_video shape from 1 M to 20 M clear rows.

For each size — the ``micro_video`` preset's shape (the paper's 37,692 users x 131,690 items,
its truth and feedback) with its density scaled to that many expected clear rows — and each
stage, a fresh subprocess runs the stage through the library's public functions, so the figures
follow whatever the library does:

* ``generate``      ``generate_interactions`` (rows: observed rows, clear and unclear);
* ``build-memory``  ``build_dataset_in_memory`` (generation included: a synthetic build reads
  from the generator; rows: input rows);
* ``build-ray``     ``build_dataset`` with Ray Data on a local Ray (``--num-cpus``; Ray's start-up
  is not counted in the seconds, its processes are in the memory);
* ``load``          ``load_dataset`` of the memory-built folder (rows: every stored row);
* ``ig-gmf``, ``ig-neumf``  a ``Trainer`` for IG: one ``run_epoch`` (its training part is the
  "IG epoch" row, rows = labeled training rows; its validation scoring plus ``Trainer.result()``
  — the test split once, full-catalogue ranking included — are the "evaluation" row, rows =
  valid + test rows). ``trainer setup`` (building the trainer) is printed beside them.

Memory: the peak of PSS (proportional set size, ``/proc/<pid>/smaps_rollup``) summed over the
stage's whole process tree (Ray's raylet, object store and workers included), sampled every
0.2 s by this process. RSS would count Ray's shared-memory object store once per process that
maps it; PSS splits shared pages between them.

Per row the script prints seconds, rows per second, peak GB and the ratio to linear scaling
from the smallest size, ``(t / t_smallest) / (rows / rows_smallest)`` with rows the sizes' clear
rows, and flags ``LINEAR`` (ratio above 1.3) and ``PEAK`` (above 8 GB). Last, the share of a
run's wall time spent evaluating, for a run of ``--run-epochs`` epochs (default: the
``TrainConfig`` default), the way ``Trainer.fit`` spends it — validation every epoch, the test
once: ``(E·valid + test) / (E·(train + valid) + test)``; the target is at most 20 %.

    python benchmarks/scale.py                                     # 1M, 3M, 9.46M, 20M, all stages
    python benchmarks/scale.py --sizes 1M,3M --stages generate,build-memory,load
    python benchmarks/scale.py --smoke                             # tiny preset, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory  # noqa: E402
from invlearn_ray.data.loading import load_dataset  # noqa: E402
from invlearn_ray.data.sources import SourceSpec  # noqa: E402
from invlearn_ray.data.splits import SplitOptions  # noqa: E402
from invlearn_ray.data.synthetic import PRESETS, SyntheticConfig, generate_interactions  # noqa: E402
from invlearn_ray.training.config import TrainConfig  # noqa: E402
from invlearn_ray.training.trainer import Trainer  # noqa: E402

STAGES = ("generate", "build-memory", "build-ray", "load", "ig-gmf", "ig-neumf")
LINEAR_LIMIT = 1.3
PEAK_LIMIT_GB = 8.0
EVAL_SHARE_LIMIT = 0.2
SAMPLE_SECONDS = 0.2
SMOKE_SIZES = "150,300"


# ------------------------------------------------------------------------------ memory


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def tree_pss(root: int) -> int:
    """PSS bytes of ``root`` and all its descendants (processes that vanish count 0)."""
    children, stack, total = _children(), [root], 0
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


class TreeMonitor(threading.Thread):
    """Samples :func:`tree_pss` of a process every ``SAMPLE_SECONDS`` until it exits."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), tree_pss(self.pid)))
            self.done.wait(SAMPLE_SECONDS)

    def peak(self, start: float, end: float) -> int:
        inside = [pss for moment, pss in self.samples if start <= moment <= end]
        if inside:
            return max(inside)
        before = [pss for moment, pss in self.samples if moment <= end]
        return before[-1] if before else 0


# ------------------------------------------------------------------------------ stages (child)


PHASE = "PHASE "
"""Prefix of the line a stage prints as soon as one of its phases ends (so a stage that times
out later still reports what it finished)."""


def _phase(name: str, start: float, rows: int, end: float | None = None, **detail) -> None:
    end = time.time() if end is None else end
    phase = {"name": name, "start": start, "end": end, "rows": rows, **detail}
    print(PHASE + json.dumps(phase), flush=True)


def _build_config(shape: SyntheticConfig, rows: int) -> BuildConfig:
    source = SourceSpec.from_synthetic(shape.with_clear_rows(rows), name=f"scale_{rows}")
    return BuildConfig(source=source, split=SplitOptions(seed=0))


def _stored_rows(data) -> int:
    parts = (data.train_train, data.train_test, data.valid, data.test, data.observed_unlabeled)
    return sum(len(part) for part in parts)


def run_stage(
    stage: str,
    shape: SyntheticConfig,
    rows: int,
    folder: Path,
    num_cpus: int,
    object_store_gb: float | None = None,
):
    """Run one stage in this (child) process, printing each phase when it ends."""
    memory_built = folder / "memory"
    if stage == "generate":
        start = time.time()
        source = generate_interactions(shape.with_clear_rows(rows))
        _phase("generate", start, source.table.num_rows)
        return
    if stage == "build-memory":
        start = time.time()
        manifest = build_dataset_in_memory(_build_config(shape, rows), memory_built, overwrite=True)
        _phase("build-memory", start, manifest.input_rows)
        return
    if stage == "build-ray":
        # Imported here: every other stage must run where Ray is not installed.
        import ray

        from invlearn_ray.distributed.build import build_dataset
        from invlearn_ray.distributed.session import ensure_ray

        ensure_ray(num_cpus=num_cpus, object_store_gb=object_store_gb)
        start = time.time()
        manifest = build_dataset(_build_config(shape, rows), folder / "ray", overwrite=True)
        _phase("build-ray", start, manifest.input_rows)
        ray.shutdown()
        shutil.rmtree(folder / "ray", ignore_errors=True)
        return
    if not memory_built.is_dir():
        build_dataset_in_memory(_build_config(shape, rows), memory_built, overwrite=True)
    start = time.time()
    data = load_dataset(memory_built)
    if stage == "load":
        _phase("load", start, _stored_rows(data))
        return
    backbone = stage.removeprefix("ig-")
    start = time.time()
    trainer = Trainer(TrainConfig(method="ig", backbone=backbone, epochs=1, seed=0), data)
    _phase(f"trainer setup ({backbone})", start, len(data.train_train))
    start = time.time()
    record = trainer.run_epoch(0)
    trained = start + record.train_seconds
    _phase(
        f"ig epoch ({backbone})",
        start,
        len(data.train_train) + len(data.train_test),
        end=trained,
        valid_seconds=record.eval_seconds,
    )
    test_start = time.time()
    trainer.result()
    _phase(
        f"evaluation ({backbone})",
        trained,
        len(data.valid) + len(data.test),
        valid_seconds=record.eval_seconds,
        test_seconds=time.time() - test_start,
        train_seconds=record.train_seconds,
    )


# ------------------------------------------------------------------------------ driver


@dataclass
class Row:
    stage: str
    size: int
    rows: int
    seconds: float
    peak: int
    detail: dict = field(default_factory=dict)
    error: str = ""


def _parse_sizes(text: str, shape: SyntheticConfig) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if part == "paper":
            sizes.append(round(shape.expected_clear_rows))
        elif part.upper().endswith("M"):
            sizes.append(round(float(part[:-1]) * 1_000_000))
        elif part.upper().endswith("K"):
            sizes.append(round(float(part[:-1]) * 1_000))
        else:
            sizes.append(int(part))
    return sizes


def measure(stage: str, size: int, args: argparse.Namespace, folder: Path) -> list[Row]:
    """Run ``stage`` at ``size`` in a fresh subprocess, sampling its process tree's memory."""
    command = [
        sys.executable,
        __file__,
        "--run-stage",
        stage,
        "--preset",
        args.preset,
        "--sizes",
        str(size),
        "--num-cpus",
        str(args.num_cpus),
        "--work",
        str(folder),
    ]
    if args.object_store_gb is not None:
        command += ["--object-store-gb", str(args.object_store_gb)]
    started = time.time()
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    monitor = TreeMonitor(child.pid)
    monitor.start()
    try:
        out, err = child.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the stage and any Ray processes it started
        out, err = child.communicate()
        err = f"timed out after {args.timeout} s"
    finally:
        monitor.done.set()
        monitor.join()
    rows = []
    for line in out.splitlines():
        if line.startswith(PHASE):
            phase = json.loads(line.removeprefix(PHASE))
            peak = monitor.peak(phase["start"], phase["end"])
            detail = {k: v for k, v in phase.items() if k not in ("name", "start", "end", "rows")}
            seconds = phase["end"] - phase["start"]
            rows.append(Row(phase["name"], size, phase["rows"], seconds, peak, detail))
    if child.returncode != 0:
        last = (err or out).strip().splitlines()[-1:] or ["no output"]
        done = f" (finished: {', '.join(row.stage for row in rows)})" if rows else ""
        peak = monitor.peak(started, time.time())
        rows.append(Row(stage, size, 0, float("nan"), peak, error=last[0][:120] + done))
    return rows


def _fmt_rows(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:.0f}"


def report(rows: list[Row], run_epochs: int) -> None:
    smallest: dict[str, Row] = {}
    for row in sorted(rows, key=lambda r: r.size):
        if not row.error and row.seconds > 0:
            smallest.setdefault(row.stage, row)
    header = (
        f"{'stage':<24}{'clear rows':>11}{'rows':>9}{'seconds':>10}{'rows/s':>11}"
        f"{'peak GB':>9}{'x linear':>10}  flags"
    )
    print("\n" + header + "\n" + "-" * len(header))
    largest = max(row.size for row in rows)
    for row in rows:
        if row.error:
            print(f"{row.stage:<24}{_fmt_rows(row.size):>11}  FAILED: {row.error}")
            continue
        base = smallest.get(row.stage)
        ratio = (
            (row.seconds / base.seconds) / (row.size / base.size)
            if base is not None and base.size != row.size
            else 1.0
        )
        flags = []
        if ratio > LINEAR_LIMIT:
            flags.append("LINEAR")
        if row.peak > PEAK_LIMIT_GB * 2**30 and row.size == largest:
            flags.append("PEAK")
        print(
            f"{row.stage:<24}{_fmt_rows(row.size):>11}{_fmt_rows(row.rows):>9}"
            f"{row.seconds:>10.2f}{row.rows / max(row.seconds, 1e-9):>11,.0f}"
            f"{row.peak / 2**30:>9.2f}{ratio:>10.2f}  {' '.join(flags)}"
        )
    evaluations = [row for row in rows if row.stage.startswith("evaluation") and not row.error]
    if evaluations:
        print(
            f"\nshare of a {run_epochs}-epoch run's wall time spent evaluating "
            f"(valid every epoch + test once; target <= {EVAL_SHARE_LIMIT:.0%}):"
        )
        for row in evaluations:
            valid, test = row.detail["valid_seconds"], row.detail["test_seconds"]
            train = row.detail["train_seconds"]
            share = (run_epochs * valid + test) / (run_epochs * (train + valid) + test)
            flag = "  OVER" if share > EVAL_SHARE_LIMIT else ""
            print(
                f"  {row.stage:<22}{_fmt_rows(row.size):>9}: train {train:.1f} s/epoch, valid "
                f"{valid:.1f} s/epoch, test {test:.1f} s once -> {share:.1%}{flag}"
            )
    print(
        f"\nmemory: peak PSS of the stage's process tree, sampled every {SAMPLE_SECONDS} s; "
        f"flags: LINEAR = more than {LINEAR_LIMIT}x linear from the smallest size, "
        f"PEAK = above {PEAK_LIMIT_GB} GB at the largest size"
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--sizes",
        default="1M,3M,paper,20M",
        help="expected clear rows per size: numbers, 1M / 500K, or 'paper' (the preset's own "
        "size, 9,462,492 for micro_video); default 1M,3M,paper,20M",
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}"
    )
    parser.add_argument(
        "--preset", default="micro_video", choices=sorted(PRESETS), help="the shape to scale"
    )
    parser.add_argument("--smoke", action="store_true", help=f"tiny preset, sizes {SMOKE_SIZES}")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument(
        "--object-store-gb",
        type=float,
        default=None,
        help="cap of the local Ray's object store for build-ray (default: Ray's, 30%% of RAM)",
    )
    parser.add_argument(
        "--run-epochs", type=int, default=TrainConfig().epochs, help="run length for the share"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    parser.add_argument("--work", type=Path, help="folder for the datasets (default: temporary)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--run-stage", choices=STAGES, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset = "tiny"
        args.sizes = SMOKE_SIZES if args.sizes == parser.get_default("sizes") else args.sizes
    shape = SyntheticConfig.preset(args.preset)
    sizes = _parse_sizes(args.sizes, shape)
    stages = [stage.strip() for stage in args.stages.split(",")]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown {unknown}; valid: {', '.join(STAGES)}")
    if args.run_stage:
        run_stage(args.run_stage, shape, sizes[0], args.work, args.num_cpus, args.object_store_gb)
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="scale-"))
    print(
        f"preset {args.preset}: {shape.n_users} users x {shape.n_items} items, sizes "
        f"{', '.join(_fmt_rows(size) for size in sizes)} clear rows, stages {', '.join(stages)}; "
        f"datasets in {work}",
        flush=True,
    )
    rows: list[Row] = []
    try:
        for size in sizes:
            folder = work / str(size)
            folder.mkdir(parents=True, exist_ok=True)
            for stage in stages:
                measured = measure(stage, size, args, folder)
                for row in measured:
                    state = row.error or f"{row.seconds:.1f} s, peak {row.peak / 2**30:.2f} GB"
                    print(f"  {_fmt_rows(size)} {row.stage}: {state}", flush=True)
                rows.extend(measured)
            if args.work is None:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(rows, args.run_epochs)
    if args.json:
        args.json.write_text(json.dumps([vars(row) for row in rows], indent=1) + "\n")
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
