"""Every command line on bad input: one line on stderr, the documented exit status, and every
output that existed before unchanged, byte for byte.

Each case runs a pipeline's ``main(argv)`` in this process against a small world of real
outputs (datasets, a finished run, its recommendations, damaged copies of them). Exit status 2
is a malformed command line (argparse), 1 a well-formed one pointing at something wrong
(``invlearn_ray.cli``). No case may start Ray: everything they get wrong can be found before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.scripts import load_script

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.distributed import session
from invlearn_ray.distributed.recommend import Recommender
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import claim_run_dir, staging_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("build_data", "train", "recommend", "tune", "full_benchmark")
IG_SPACE = REPO_ROOT / "tune_spaces" / "ig.yaml"


@pytest.fixture(scope="module")
def clis() -> dict:
    return {name: load_script(f"pipelines/{name}.py", f"{name}_bad_inputs") for name in COMMANDS}


def _ratings(n_users: int, n_items: int, rating) -> str:
    lines = ["user,item,rating"]
    for user in range(n_users):
        for item in range(n_items):
            if (user * 7 + item * 3) % 4:
                lines.append(f"u{user},i{item},{rating(user, item)}")
    return "\n".join(lines) + "\n"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_dataset, clis) -> Path:
    """Datasets, sources, a finished run with recommendations, and damaged copies of them."""
    w = tmp_path_factory.mktemp("world")
    src = w / "src"
    src.mkdir()
    (src / "ratings.csv").write_text(_ratings(30, 40, lambda u, i: 1 + (u + i) % 5))
    (src / "positive.csv").write_text(_ratings(30, 40, lambda u, i: 3 + (u + i) % 3))
    (src / "malformed.csv").write_text("user,item,rating\nu1,i1,4\nu1,i2,four\n")
    (src / "nan.csv").write_text("user,item,rating\nu1,i1,4\nu1,i2,nan\n")
    (src / "no_feedback.csv").write_text("user,item\nu1,i1\n")
    (src / "header_only.csv").write_text("user,item,rating\n")
    (src / "split").mkdir()
    for suffix in (".train.rating", ".valid.rating"):  # .test.negative is missing
        (src / "split" / f"ml100k{suffix}").write_text("1\t2\t5\t0\n")
    (src / "users.bin").write_bytes(b"\xff\xfe\x00")

    data = w / "data"
    shutil.copytree(tiny_dataset, data / "ok")
    build_dataset_in_memory(
        BuildConfig(source=SourceSpec.from_files("csv", src / "ratings.csv")), data / "ratings"
    )
    shutil.copytree(tiny_dataset, data / "edited")
    manifest = json.loads((data / "edited" / "manifest.json").read_text())
    manifest["n_items"] = 5000
    (data / "edited" / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(tiny_dataset, data / "truncated")
    _truncate(next((data / "truncated" / "test").glob("*.parquet")))
    (data / "not_a_dataset").mkdir()
    (data / "not_a_dataset" / "notes.txt").write_text("hello\n")
    (w / "a_file").write_text("not a folder\n")

    runs = w / "runs"
    base = runs / "base"
    argv = ["--dataset", str(data / "ok"), "--smoke-test", "--epochs", "1", "--out", str(base)]
    assert clis["train"].main(argv) == 0
    recommender = Recommender.load(base / "model")
    (base / "recommendations").mkdir()
    pq.write_table(
        recommender.recommend(recommender.user_ids[:10].tolist(), 5),
        base / "recommendations" / "part-00000.parquet",
    )
    for name in ("corrupt", "mixed", "relabeled", "resized", "unseen"):
        shutil.copytree(base, runs / name)
    _truncate(runs / "corrupt" / "model" / "model.pt")
    shutil.copy(data / "ratings" / "id_map" / "items.parquet", runs / "mixed" / "model" / "id_map")
    users = pq.read_table(runs / "relabeled" / "model" / "id_map" / "users.parquet")
    reversed_ids = pa.array(users.column("raw_id").to_pylist()[::-1])
    pq.write_table(
        users.set_column(0, "raw_id", reversed_ids),
        runs / "relabeled" / "model" / "id_map" / "users.parquet",
    )
    description = json.loads((runs / "resized" / "model" / "model.json").read_text())
    description["n_items"] += 1
    (runs / "resized" / "model" / "model.json").write_text(json.dumps(description))
    (runs / "unseen" / "model" / "seen_items.pt").unlink()
    # An interrupted 2-worker run's checkpoints, claimed by another configuration.
    claim_run_dir(
        staging_dir(runs / "claimed") / "ray" / "claimed",
        {"dataset": str(data / "ok"), "train": TrainConfig(lr=0.5).to_dict(), "num_workers": 2},
    )
    return w


# (command, arguments with {w} for the world folder, exit status, what the error says)
CASES = [
    # build_data.py
    (
        "build_data",
        "--source csv {w}/src/missing.csv --engine memory --out {w}/o",
        1,
        "missing.csv: no such file",
    ),
    (
        "build_data",
        "--source presplit {w}/src/split --name ml100k --out {w}/o",
        1,
        "missing ['{w}/src/split/ml100k.test.negative']",
    ),
    (
        "build_data",
        "--source csv {w}/src/malformed.csv --engine memory --out {w}/o",
        1,
        "malformed.csv:3: column 'rating': 'four' is not a number",
    ),
    (
        "build_data",
        "--source csv {w}/src/nan.csv --engine memory --out {w}/o",
        1,
        "nan.csv:3: column 'rating': value is missing or NaN",
    ),
    (
        "build_data",
        "--source csv {w}/src/no_feedback.csv --engine memory --out {w}/o",
        1,
        "a source must carry exactly one kind of feedback",
    ),
    (
        "build_data",
        "--source csv {w}/src/header_only.csv --engine memory --out {w}/o",
        1,
        "holds no data rows",
    ),
    (
        "build_data",
        "--source csv {w}/src/positive.csv --engine memory --out {w}/o",
        1,
        "split 'valid' holds 180 rows, all labeled 1",
    ),
    (
        "build_data",
        "--source csv {w}/src/ratings.csv --rule rating --pos-threshold 9 "
        "--neg-threshold 0 --engine memory --out {w}/o",
        1,
        "labels none of the 900 rows",
    ),
    (
        "build_data",
        "--source csv {w}/src/ratings.csv --rule finish-rate --engine memory --out {w}/o",
        1,
        "labeling rule 'finish-rate' needs micro_video feedback",
    ),
    (
        "build_data",
        "--source csv {w}/src/ratings.csv --engine memory --out {w}/data/ok",
        1,
        "already holds a different dataset",
    ),
    (
        "build_data",
        "--source csv {w}/src/ratings.csv --out {w}/data/ok",
        1,
        "already holds a different dataset",
    ),
    (
        "build_data",
        "--source csv {w}/src/ratings.csv --engine memory --out {w}/a_file",
        1,
        "is a file, not a folder",
    ),
    (
        "build_data",
        "--smoke-test --engine memory --name ../../escaped",
        2,
        "--name: expected a plain name",
    ),
    ("build_data", "--fractions 0.5,0.5,0.5 --out {w}/o", 2, "split fractions must sum to 1"),
    ("build_data", "--label-fraction 0 --out {w}/o", 2, "label_fraction must be in (0, 1]"),
    ("build_data", "--shards 0 --out {w}/o", 2, "expected a positive integer, got 0"),
    # train.py
    ("train", "--dataset {w}/data/missing --out {w}/o", 1, "no such dataset folder"),
    ("train", "--dataset {w}/data/not_a_dataset --out {w}/o", 1, "not a built dataset"),
    ("train", "--dataset {w}/data/edited --out {w}/o", 1, "n_items is 5000, but"),
    ("train", "--dataset {w}/data/truncated --workers 2 --out {w}/o", 1, "split 'test':"),
    (
        "train",
        "--dataset {w}/data/ok --workers 2 --out {w}/runs/claimed",
        1,
        "holds the checkpoints of another run (differing in ['train.",
    ),
    (
        "train",
        "--dataset {w}/data/ok --out {w}/runs/base",
        1,
        "already holds a finished run; pass --overwrite",
    ),
    (
        "train",
        "--dataset {w}/data/ok --smoke-test --epochs 2 --set lr=1e6 --out {w}/o",
        1,
        "training diverged at epoch 0: the training loss is",
    ),
    (
        "train",
        "--dataset {w}/data/ratings --method ig --set unlabeled_source=observed --out {w}/o",
        1,
        "needs observed-unlabeled rows, and dataset 'ratings' has none",
    ),
    (
        "train",
        "--dataset {w}/data/ok --set lr=fast --out {w}/o",
        2,
        "TrainConfig.lr expects a float",
    ),
    ("train", "--dataset {w}/data/ok --set max_weight=0 --out {w}/o", 2, "max_weight must be > 0"),
    ("train", "--dataset {w}/data/ok --epochs 0 --out {w}/o", 2, "epochs must be > 0"),
    ("train", "--dataset {w}/data/ok --workers -1 --out {w}/o", 2, "expected an integer >= 0"),
    # recommend.py
    ("recommend", "--model {w}/runs/missing", 2, "neither it nor"),
    ("recommend", "--model {w}/runs/corrupt --overwrite", 1, "model.pt: not readable"),
    ("recommend", "--model {w}/runs/resized --overwrite", 1, "the weights do not fit"),
    (
        "recommend",
        "--model {w}/runs/mixed --overwrite",
        1,
        "the folder mixes files of different datasets",
    ),
    (
        "recommend",
        "--model {w}/runs/relabeled --overwrite",
        1,
        "users.parquet is not the file saved with this model",
    ),
    ("recommend", "--model {w}/runs/unseen --overwrite", 1, "seen_items.pt is missing"),
    (
        "recommend",
        "--model {w}/runs/base --users 0 ghost --overwrite",
        1,
        "1 unknown user id(s), e.g. ['ghost']",
    ),
    (
        "recommend",
        "--model {w}/runs/base",
        1,
        "already holds recommendations; pass overwrite=True (--overwrite)",
    ),
    (
        "recommend",
        "--model {w}/runs/base --out {w}/runs/base --overwrite",
        1,
        "holds files other than Parquet",
    ),
    ("recommend", "--model {w}/runs/base --out {w}/a_file", 1, "a_file is a file"),
    ("recommend", "--model {w}/runs/base --k 0", 2, "expected a positive integer, got 0"),
    ("recommend", "--model {w}/runs/base --users-file {w}/src/users.bin", 2, "not a text file"),
    # tune.py
    ("tune", "--space {w}/src/missing.yaml --dataset {w}/data/ok --out {w}/o", 2, "missing.yaml"),
    (
        "tune",
        f"--space {IG_SPACE} --dataset {{w}}/data/edited --out {{w}}/o",
        1,
        "n_items is 5000, but",
    ),
    (
        "tune",
        f"--space {IG_SPACE} --dataset {{w}}/data/not_a_dataset --out {{w}}/o",
        2,
        "not 'synthetic[:preset]', 'ml100k[:split folder]' or a built dataset folder",
    ),
    (
        "tune",
        f"--space {IG_SPACE} --dataset {{w}}/data/ok --name ../up",
        2,
        "--name: expected a plain name",
    ),
    (
        "tune",
        f"--space {IG_SPACE} --dataset {{w}}/data/ok --trials 0 --out {{w}}/o",
        2,
        "expected a positive integer, got 0",
    ),
    # full_benchmark.py
    ("full_benchmark", "--label-fractions 0 --out {w}/o", 2, "label fraction 0 is not in (0, 1]"),
    ("full_benchmark", "--datasets {w}/data/truncated --out {w}/o", 1, "split 'test':"),
    (
        "full_benchmark",
        "--datasets ml100k:{w}/src --out {w}/o",
        1,
        "pre-split source 'ml100k' in {w}/src: missing",
    ),
    ("full_benchmark", "--methods none,magic --out {w}/o", 2, "unknown method(s) ['magic']"),
    ("full_benchmark", "--out {w}/a_file", 2, "a_file is a file"),
    # Every command line has -q and -v (invlearn_ray.cli.ArgumentParser), never both.
    *(
        (command, "-q -v --out {w}/o", 2, "-v/--verbose: not allowed with argument -q/--quiet")
        for command in COMMANDS
    ),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with its bytes (None for a folder)."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def _no_ray(*args, **kwargs):
    raise AssertionError("this input must be refused before Ray starts")


@pytest.mark.parametrize(
    ("command", "arguments", "status", "message"),
    CASES,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(CASES)],
)
def test_bad_input_is_one_line_an_exit_status_and_changes_nothing(
    clis, world, monkeypatch, capsys, command, arguments, status, message
):
    cli = clis[command]
    monkeypatch.setattr(session, "ensure_ray", _no_ray)
    if hasattr(cli, "ensure_ray"):
        monkeypatch.setattr(cli, "ensure_ray", _no_ray)
    argv = [part.format(w=world) for part in arguments.split()]
    before = _snapshot(world)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as stopped:
        code = stopped.code
    error = capsys.readouterr().err
    assert code == status, error
    assert error.endswith("\n") and error.count("\n") == 1, error
    # Status 2 is argparse's "<prog>: error: ..."; the program name is pytest's here.
    assert error.startswith("error: ") if status == 1 else ": error: " in error, error
    assert message.format(w=world) in error
    assert _snapshot(world) == before


def test_a_name_cannot_put_a_dataset_outside_the_datasets_folder(clis, capsys):
    escaped = REPO_ROOT.parent / "escaped"
    with pytest.raises(SystemExit) as stopped:
        clis["build_data"].main(["--smoke-test", "--engine", "memory", "--name", "../../escaped"])
    assert stopped.value.code == 2 and not escaped.exists()
    assert "--name: expected a plain name" in capsys.readouterr().err
