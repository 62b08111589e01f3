"""One Spark session for the offline jobs that run on Spark (feature build, Feast's Spark stores).

`spark_session(settings)` returns the active session when there is one (spark-submit made it,
or an earlier call), else builds one from `SparkSettings`: local mode ("local[N]") on one
machine and in tests, a cluster's master URL in production. pyspark is imported here only,
lazily: the embedded (pandas) default never starts a JVM.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from scoring.core.settings import SparkSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkUnavailableError(RuntimeError):
    """pyspark or a Java runtime is missing; the message says which and how to get it."""


def java_home() -> str | None:
    """JAVA_HOME, or the folder above the `java` on PATH; None when there is no Java."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        return None
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """The Spark properties a session is built with (settings.conf last: it wins)."""
    conf = {
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Arrow batches handed to pandas UDFs: bounded, so a task's Python memory is too.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Loopback only in local mode: tests and one machine never listen beyond it.
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
    }
    if settings.local_dir is not None:
        conf["spark.local.dir"] = str(settings.local_dir)
    if not settings.master.startswith("local"):
        del conf["spark.driver.bindAddress"], conf["spark.driver.host"]
    return conf | dict(settings.conf)


def spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """The active Spark session, or a new one built from `settings`.

    Raises:
        SparkUnavailableError: pyspark is not installed or no Java runtime is found.
    """
    settings = settings or SparkSettings()
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailableError(
            f"the Spark engine needs pyspark ({exc}); `make install` installs it"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    home = java_home()
    if home is None:
        raise SparkUnavailableError(
            "the Spark engine needs Java 17 (no `java` on PATH and JAVA_HOME unset); "
            "install a JDK (Debian: openjdk-17-jre-headless) or set JAVA_HOME"
        )
    os.environ.setdefault("JAVA_HOME", home)
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # The Python workers run this interpreter (the venv's), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


__all__ = ["SparkUnavailableError", "java_home", "spark_conf", "spark_session"]
