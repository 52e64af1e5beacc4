"""The locust scenario, headless, in one command: dataset, servers, locust, report.

    python -m load.scenario [--duration 3m] [--users 60] [--spawn-rate 10] [--vehicles N] [--out DIR]

Writes DIR/locust_stats.csv, locust_failures.csv, locust_stats_history.csv and locust.html
(default DIR: load/.reports/) and exits with locust's status (1 if any call failed).

One TLS server runs with a fresh `vimark pki` CA, and every simulated user presents its own client
certificate, its role taken from it, as real terminals, apps, partners and issuing systems do.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from load import dataset as datasets
from load.bench.harness import ROOT, free_port, vimark_executable

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# as in locustfile.py: the role of each user class and its weight
ROLES_WEIGHTS = {"police": 6, "public": 3, "partner": 1, "registration": 1, "owner_service": 1}


def _pki(directory: Path, users: int) -> None:
    """A CA, a server certificate, and a client certificate for every user locust will start
    (through vimark's own PKI module: one process, not one `vimark pki issue` per user)."""
    from vimark.server import pki

    pki.init(directory)
    total = sum(ROLES_WEIGHTS.values())
    for role, weight in ROLES_WEIGHTS.items():
        for i in range(math.ceil(users * weight / total)):
            pki.issue(directory, role, f"{role}{i}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.scenario", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="3m", help="locust --run-time (default 3m)")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--vehicles", type=int, default=datasets.QUICK_VEHICLES)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / ".reports")
    args = parser.parse_args(argv)
    data = datasets.load(args.vehicles)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vimark-scenario-"))
    env = {**os.environ, "VIMARK_LOAD_DATASET": str(data.path)}
    try:
        db, keys = data.copy_to(work)
        url = f"sqlite:///{db}"
        with contextlib.ExitStack() as stack:
            pki = work / "pki"
            _pki(pki, args.users)
            env["VIMARK_LOAD_TLS"] = str(pki)
            police = f"localhost:{free_port()}"  # the name the server certificate carries
            command = [*vimark_executable(), "serve", "--db", url, "--keys", str(keys), "--listen", police]
            command += ["--metrics-port", "0", "--tls-cert", str(pki / "server.pem")]
            command += ["--tls-key", str(pki / "server.key"), "--client-ca", str(pki / "ca.pem")]
            # The harness waits for health over plaintext; with TLS it waits on the log instead.
            stack.enter_context(_serve_tls(command, work / "server.log"))
            prefix = args.out / "locust"
            command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", police]
            command += ["-u", str(args.users), "-r", str(args.spawn_rate), "--run-time", args.duration]
            command += ["--csv", str(prefix), "--html", str(args.out / "locust.html"), "--only-summary"]
            command += ["--stop-timeout", "5"]
            print(f"TLS, a client certificate per user; report in {args.out}")
            return subprocess.run(command, env=env, cwd=ROOT).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _serve_tls(command: list[str], log: Path):  # type: ignore[no-untyped-def]
    import time

    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while "SERVING" not in log.read_text().replace("NOT_SERVING", ""):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"TLS server did not start; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
