"""The flows' parameters: one pydantic model per flow, shown by the Prefect UI as a validated form."""

import shlex
from datetime import date
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.clean import DEFAULT_NON_PRODUCT_CODES
from tasks.cluster import PROFILED_FEATURES
from tasks.features import DEFAULT_CLUSTERING_FEATURES
from tasks.sources import shown_location
from tasks.publish import (
    DEFAULT_LINK_EXPIRY_SECONDS, MAX_LINK_EXPIRY_SECONDS, LocalTarget, S3Settings, parse_target, validate_run_id,
)


class RunParameters(BaseModel):
    """What every flow run needs: where the lines come from, how they are cleaned, where results go."""

    model_config = ConfigDict(extra="forbid")
    command: ClassVar[str]

    input: str | None = Field(default=None, description="Invoice-line export: Parquet, CSV or .xlsx.")
    target: str = Field(
        default="artifacts",
        description="Where to publish the run: a local directory or s3://bucket/prefix.",
    )
    run_id: str | None = Field(
        default=None,
        description="Name of the run's folder under `<target>/runs/`. Empty: a UTC timestamp plus a random suffix.",
    )
    countries: list[str] = Field(
        default_factory=list,
        description='Keep only customers of these countries, e.g. ["United Kingdom"]. Empty: all countries.',
    )
    non_product_codes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NON_PRODUCT_CODES),
        description="StockCodes that are not products (postage, fees, discounts...); a trailing * matches a prefix.",
    )
    column_mapping: dict[str, str] = Field(
        default_factory=dict,
        description='Rename the export\'s columns to the canonical ones, e.g. {"Customer": "CustomerID"}.',
    )
    snapshot_date: date | None = Field(
        default=None, description="Date that Recency and Tenure count to. Empty: the day after the last invoice.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint, e.g. http://minio:9000. Empty: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or AWS.",
    )
    s3_region: str | None = Field(
        default=None, description="S3 region. Empty: AWS_REGION, AWS_DEFAULT_REGION or the profile's.",
    )
    s3_addressing_style: Literal["auto", "virtual", "path"] | None = Field(
        default=None, description="Bucket in the host name or in the path; MinIO wants path. Empty: boto3's choice.",
    )
    s3_server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(
        default=None, description="Server-side encryption of every published object. Empty: the bucket's default.",
    )
    s3_create_bucket: bool = Field(default=False, description="Create the target bucket if it does not exist.")
    s3_access_key_id_block: str | None = Field(
        default=None, description="Prefect Secret block holding the S3 access key id. Empty: the AWS credential chain.",
    )
    s3_secret_access_key_block: str | None = Field(
        default=None, description="Prefect Secret block holding the S3 secret access key (name both blocks or neither).",
    )
    report_link_expiry_seconds: int = Field(
        default=DEFAULT_LINK_EXPIRY_SECONDS, ge=1, le=MAX_LINK_EXPIRY_SECONDS,
        description="How long the presigned S3 link to the report in the Prefect UI works (at most 7 days).",
    )
    retries: int = Field(default=2, ge=0, le=10, description="How often a failed stage is retried.")
    retry_delay_seconds: float = Field(default=5.0, ge=0, le=600, description="Wait between retries of a stage.")
    refresh_cache: bool = Field(
        default=False, description="Recompute every stage even when a cached result exists.",
    )

    @field_validator("target")
    @classmethod
    def valid_target(cls, target: str) -> str:
        parse_target(target)
        return target

    @field_validator("run_id")
    @classmethod
    def valid_run_id(cls, run_id: str | None) -> str | None:
        return run_id if run_id is None else validate_run_id(run_id)

    @model_validator(mode="after")
    def valid_s3_settings(self) -> "RunParameters":
        self.s3_settings()
        return self

    def s3_settings(self) -> S3Settings:
        """The S3 parameters as the publisher takes them."""
        return S3Settings(
            endpoint_url=self.s3_endpoint_url, region=self.s3_region, addressing_style=self.s3_addressing_style,
            server_side_encryption=self.s3_server_side_encryption, create_bucket=self.s3_create_bucket,
            access_key_id_block=self.s3_access_key_id_block, secret_access_key_block=self.s3_secret_access_key_block,
        )

    def shown(self) -> "RunParameters":
        """These parameters as a run's report and manifest show them: an http(s) input without its query,
        which for a presigned URL is its signature (see tasks.sources.shown_location)."""
        return self.model_copy(update={"input": shown_location(self.input)}) if self.input else self

    def as_command_line(self, run_id: str) -> str:
        """The `segments` command that reproduces these parameters for the given run id."""
        changed = self.model_dump(mode="json", exclude_defaults=True) | {"run_id": run_id}
        words = ["segments", self.command]
        for name, value in changed.items():
            flag = "--" + CLI_FLAGS.get(name, name.replace("_", "-"))
            if isinstance(value, list):
                words += [word for item in value for word in (flag, str(item))]
            elif isinstance(value, dict):
                words += [word for key, item in value.items() for word in (flag, f"{key}={item}")]
            else:
                words += [flag, str(value)]
        return shlex.join(words)


class FittingParameters(RunParameters):
    """What every run that fits segments can be told: how customers are clustered, and the seed."""

    features: list[Literal[PROFILED_FEATURES]] = Field(
        default_factory=lambda: list(DEFAULT_CLUSTERING_FEATURES), min_length=1,
        description="Features that feed the clustering distance.",
    )
    scaler: Literal["standard", "robust"] = Field(
        default="standard", description="Scaling after log1p: standard (mean/std) or robust (median/IQR).",
    )
    eps: float | None = Field(
        default=None, gt=0, description="DBSCAN neighbourhood radius. Empty: searched around the knee of the k-distance curve.",
    )
    min_samples: int | None = Field(
        default=None, ge=1, description="DBSCAN core-point neighbourhood size. Empty: 2 x the number of features.",
    )
    min_segment_share: float = Field(
        default=0.01, ge=0, lt=0.5, description="Clusters smaller than this share of customers join the outliers.",
    )
    max_outlier_share: float = Field(
        default=0.15, gt=0, le=1, description="The automatic eps search prefers fits with at most this share of outliers "
        "(if none stays within it, the fit with the fewest outliers).",
    )
    stability_resamples: int = Field(
        default=10, ge=1, le=200, description="Bootstrap resamples behind the stability metric.",
    )
    seed: int = Field(default=42, ge=0, description="Seed for the demo data and every random step, for reproducible runs.")


class SegmentationParameters(FittingParameters):
    """Everything a run of `customer-segmentation` can be told."""

    command: ClassVar[str] = "run"

    input: str | None = Field(
        default=None,
        description=(
            "Invoice-line export to segment: Parquet, CSV or .xlsx; a file, folder or glob, `s3://` or `https://`. "
            "Empty: generate the built-in synthetic demo data."
        ),
    )
    streaming: bool = Field(
        default=False,
        description=("Stream the lines through ingest, clean and features in batches via Parquet files in a temporary "
                     "folder, for inputs larger than memory (SEGMENTS_MAX_EAGER_BYTES). Stage results are not reused."),
    )
    demo_lines: int = Field(
        default=200_000, ge=1_000, le=100_000_000, description="Size of the synthetic demo data when no input is given.",
    )


class AssignmentParameters(RunParameters):
    """Everything a run of `assign-segments` can be told."""

    command: ClassVar[str] = "assign"

    model: str = Field(
        description="Run folder holding a published model: `<target>/runs/<run_id>` as a local path or `s3://` URI.",
    )
    input: str = Field(description="Invoice-line export whose customers get a segment: Parquet, CSV or .xlsx; a file, "
                                   "folder or glob, `s3://` or `https://`.")

    @field_validator("model")
    @classmethod
    def valid_model_location(cls, model: str) -> str:
        parse_target(model, reading=True)
        return model


class PartitionedParameters(FittingParameters):
    """Everything a run of `customer-segmentation-partitioned` can be told."""

    command: ClassVar[str] = "run-partitioned"

    input: str = Field(
        description="Invoice-line files read as one input, each by its own task: a folder, a glob or s3://bucket/prefix/.",
    )
    partitions: int = Field(
        default=16, ge=1, le=100_000,
        description="Customer partitions the lines are hashed into; each is cleaned and featurized by one task.",
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler of an existing Dask cluster, e.g. tcp://scheduler:8786. "
                                  "Empty: a local Dask cluster started for the run.",
    )
    dask_workers: int = Field(
        default=2, ge=1, le=512, description="Worker processes of the local Dask cluster (when no dask_address).",
    )
    work_dir: str | None = Field(
        default=None, description="Folder for the partition files that every Dask worker can read and write. "
                                  "Empty: `<target>/work/<run_id>` (a local target only).",
    )

    @model_validator(mode="after")
    def reachable_work_dir(self) -> "PartitionedParameters":
        if self.work_dir is None and not isinstance(parse_target(self.target), LocalTarget):
            raise ValueError("work_dir is needed with an S3 target: a folder every Dask worker can read and write")
        if self.work_dir is not None and "://" in self.work_dir:
            raise ValueError(f"work_dir {self.work_dir!r}: give a folder on a disk every Dask worker mounts")
        return self


# Flags that are repeated once per item read better in the singular.
CLI_FLAGS = {"countries": "country", "non_product_codes": "non-product-code", "features": "feature",
             "column_mapping": "column-map"}
