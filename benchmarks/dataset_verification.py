"""What verifying a built dataset costs, beside loading it: the footer check vs the full hash.

Loading verifies every file against the manifest first (``dataset_dir.verify_dataset``). The
default check reads each file's size and Parquet footer; ``full_hash=True`` also hashes every
byte. This script builds a synthetic dataset of about ``--rows`` input rows in memory (once;
``--out`` keeps it for the next run), then times, best of ``--repeats``, in one run: the footer
check, the full check, and ``load_dataset`` without and with the full check, and prints each
and its share of the load time. Files are in the page cache after the first read, so the
figures are the hashing and parsing cost, not the disk's.

    python benchmarks/dataset_verification.py                     # ~1 M rows
    python benchmarks/dataset_verification.py --rows 3000000 --shards 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.synthetic import SyntheticConfig


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def synthetic_config(rows: int) -> SyntheticConfig:
    """A 2:1 users-to-items catalogue whose observed rows (clear + unclear) number ~``rows``."""
    base = SyntheticConfig()
    n_users = max(100, round((rows / 0.02 * 2) ** 0.5))
    return SyntheticConfig(
        n_users=n_users, n_items=n_users // 2, labeled_density=0.02 * base.clear_rate
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="input rows (approx.)")
    parser.add_argument("--shards", type=int, default=1, help="Parquet files per split")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="keep the dataset here (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "dataset"
        config = BuildConfig(
            source=SourceSpec.from_synthetic(synthetic_config(args.rows)), shards=args.shards
        )
        started = time.perf_counter()
        manifest = build_dataset_in_memory(config, out)
        print(f"built or rebuilt in {time.perf_counter() - started:.1f} s: {out}")
        files = [record for records in manifest.shard_files.values() for record in records]
        megabytes = sum(record.bytes for record in files) / 1e6
        print(f"{manifest.input_rows} input rows, {len(files)} Parquet files, {megabytes:.1f} MB")

        def verify(full_hash: bool) -> Callable[[], None]:
            return lambda: dd.verify_dataset(out, Manifest.read(out), full_hash=full_hash)

        load = best_seconds(lambda: load_dataset(out), args.repeats)
        figures = {
            "verify (sizes + footers)": best_seconds(verify(False), args.repeats),
            "verify (full hash)": best_seconds(verify(True), args.repeats),
            "load (footer check)": load,
            "load (full hash)": best_seconds(
                lambda: load_dataset(out, full_hash=True), args.repeats
            ),
        }
        for name, seconds in figures.items():
            print(f"{name:<26}{seconds * 1000:>10.1f} ms  {seconds / load:>7.1%} of a load")


if __name__ == "__main__":
    main()
