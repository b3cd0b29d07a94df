"""A PgBouncer of the test's own (Debian's `pgbouncer`), the way managed Postgres is reached.

Transaction pooling (a server connection is a client's for one transaction only, as with
Supabase's pooler), TLS required from clients with a certificate of a CA made for this run
(so `sslmode=verify-full` can be checked, and a connection without TLS is refused), every
database of the machine's Postgres behind it. It listens on a free loopback port and runs
in the foreground as a child process (as the `postgres` user when the tests run as root:
PgBouncer refuses to run as root); `close()` stops it and removes its directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from calltrail_testkit.processes import HOST, free_port

PGBOUNCER = "/usr/sbin/pgbouncer"
START_TIMEOUT_SECONDS = 15


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for 127.0.0.1: (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("calltrail test CA"))
          .issuer_name(_name("calltrail test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(HOST)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


class PgBouncer:
    def __init__(self, *, postgres_port: int = 5432, pool_size: int = 20) -> None:
        if not Path(PGBOUNCER).exists():
            raise RuntimeError(f"{PGBOUNCER} is missing: `make test` installs it "
                               "(apt-get install pgbouncer)")
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="calltrail-pgbouncer-"))
        self.ca, cert, key = write_tls_files(self.base)
        (self.base / "userlist.txt").write_text('"postgres" ""\n')
        (self.base / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={HOST} port={postgres_port}

[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir = {self.base}
auth_type = trust
auth_file = {self.base / 'userlist.txt'}
admin_users = postgres
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
client_tls_sslmode = require
client_tls_ca_file = {self.ca}
client_tls_cert_file = {cert}
client_tls_key_file = {key}
logfile = {self.base / 'pgbouncer.log'}
""")
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in [self.base, *self.base.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str, *, pooler_flag: bool = True, tls: str = "verify-full") -> str:
        """How a service is told to reach `database` through this pooler."""
        query = f"sslmode={tls}&sslrootcert={self.ca}"
        if pooler_flag:
            query += "&pgbouncer=true"
        return f"postgresql://postgres@{HOST}:{self.port}/{database}?{query}"

    def start(self) -> None:
        command = [PGBOUNCER, str(self.base / "pgbouncer.ini")]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (self.base / "pgbouncer.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
