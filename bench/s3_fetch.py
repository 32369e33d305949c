"""S3 cold fetch from ``moto_server``: ckptflow against boto3's ``download_file`` (s3transfer).

The object is uploaded once with boto3's ``upload_file`` (a multipart upload, as large checkpoints are),
then each method downloads it into an empty directory, alternating. moto answers every ranged GET by
copying the whole object in memory under a per-object lock, so on moto the number of requests weighs
more than on real S3: s3transfer asks for 8 MiB ranges, ckptflow for 32 MiB parts.
"""

from __future__ import annotations

import os
from typing import Any

import ckptflow as cf
from bench.common import BenchConfig, MiB, Table, fresh_dir, median, random_file, ratio, time_once
from bench.servers import running_moto
from ckptflow.sources.parts import DEFAULT_MAX_CONCURRENCY

__all__ = ["NAME", "run"]

NAME = "s3"
_BUCKET = "bench"
_KEY = "ckpt.bin"
_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


_SAME = f"boto3 download_file, 32 MiB x {DEFAULT_MAX_CONCURRENCY} (ckptflow's pattern)"


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _same_pattern() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=64 * MiB, multipart_chunksize=32 * MiB, max_concurrency=DEFAULT_MAX_CONCURRENCY
    )


def run(config: BenchConfig) -> Table:
    size = config.size(512, 64)
    source = config.workdir / "s3-src.bin"
    random_file(source, size)
    saved = {name: os.environ.get(name) for name in _ENV}
    os.environ.update(_ENV)
    same_pattern = _same_pattern()
    times: dict[str, list[float]] = {
        "boto3 download_file": [],
        _SAME: [],
        "ckptflow.fetch": [],
    }
    try:
        with running_moto(config.workdir / "moto.log") as endpoint:
            client = _client(endpoint)
            client.create_bucket(Bucket=_BUCKET)
            client.upload_file(str(source), _BUCKET, _KEY)
            source.unlink()
            uri = f"s3://{_BUCKET}/{_KEY}"
            for _ in range(config.repeats):
                with fresh_dir(config.workdir, "boto3-") as dest:
                    target = dest / "out.bin"
                    times["boto3 download_file"].append(
                        time_once(lambda t=target: client.download_file(_BUCKET, _KEY, str(t)))
                    )
                with fresh_dir(config.workdir, "boto3-") as dest:
                    target = dest / "out.bin"
                    times[_SAME].append(
                        time_once(
                            lambda t=target: client.download_file(_BUCKET, _KEY, str(t), Config=same_pattern)
                        )
                    )
                with fresh_dir(config.workdir, "s3-") as dest:
                    options = {"s3_endpoint_url": endpoint}
                    times["ckptflow.fetch"].append(
                        time_once(
                            lambda d=dest, o=options: cf.fetch(
                                uri, cache_dir=d, progress=False, options=o
                            ).unwrap()
                        )
                    )
    finally:
        source.unlink(missing_ok=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    base = median(times["boto3 download_file"])
    rows = tuple(
        (name, f"{median(t):.2f}", f"{size / MiB / median(t):.0f}", ratio(median(t), base))
        for name, t in times.items()
    )
    return Table(
        title=f"S3 cold fetch of {size // MiB} MiB from moto_server (median of {config.repeats})",
        columns=("method", "seconds", "MiB/s", "x boto3"),
        rows=rows,
        notes=(
            "boto3: default TransferConfig (10 threads, 8 MiB ranges), no checksum; ckptflow: default "
            f"settings (32 MiB parts, {DEFAULT_MAX_CONCURRENCY} at a time here), sha256 of every byte and "
            "fsync before placing",
        ),
    )
