"""The locust scenario, headless, in one command: dataset, servers, locust, report.

    python -m load.scenario [--duration 3m] [--users 60] [--spawn-rate 10] [--vehicles N] [--out DIR]

Writes DIR/locust_stats.csv, locust_failures.csv, locust_stats_history.csv and locust.html
(default DIR: load/.reports/) and exits with locust's status (1 if any call failed).

With TLS available (`vimark serve --tls-cert`), one server runs with a `vimark pki` CA and every
simulated user presents its own client certificate, its role taken from it. Until then, in
development mode, two servers share one SQLite file: `--role police` for terminals, the public
app and partners, `--role issuer` for stations (the police one sees issued marks by tailing the
change log, as replicas do).
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
from load.bench import ROOT, free_port, serve, vimark_command

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
ROLES_WEIGHTS = {"police": 6, "public": 3, "partner": 1, "issuer": 1}  # as in locustfile.py


def _vimark() -> list[str]:
    exe = shutil.which("vimark")
    return [exe] if exe else [sys.executable, "-c", "from vimark.client.cli.main import main; main()"]


def tls_available() -> bool:
    result = subprocess.run([*_vimark(), "serve", "--help"], capture_output=True, text=True)
    return "--tls-cert" in result.stdout


def _pki(directory: Path, users: int) -> None:
    """A CA, a server certificate, and a client certificate for every user locust will start."""
    subprocess.run([*_vimark(), "pki", "init", str(directory)], check=True, capture_output=True)
    total = sum(ROLES_WEIGHTS.values())
    jobs = [
        subprocess.Popen(
            [*_vimark(), "pki", "issue", str(directory), "--role", role, "--id", f"{role}{i}"],
            stdout=subprocess.DEVNULL,
        )
        for role, weight in ROLES_WEIGHTS.items()
        for i in range(math.ceil(users * weight / total))
    ]
    if any(job.wait() for job in jobs):
        raise RuntimeError("vimark pki issue failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.scenario", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="3m", help="locust --run-time (default 3m)")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--vehicles", type=int, default=datasets.QUICK_VEHICLES)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / ".reports")
    parser.add_argument("--tls", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args(argv)
    data = datasets.load(args.vehicles)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vimark-scenario-"))
    tls = args.tls == "on" or (args.tls == "auto" and tls_available())
    env = {**os.environ, "VIMARK_LOAD_DATASET": str(data.path)}
    try:
        db, keys = data.copy_to(work)
        url = f"sqlite:///{db}"
        with contextlib.ExitStack() as stack:
            police = f"127.0.0.1:{free_port()}"
            if tls:
                pki = work / "pki"
                _pki(pki, args.users)
                env["VIMARK_LOAD_TLS"] = str(pki)
                police = f"localhost:{police.rsplit(':', 1)[1]}"
                command = [*_vimark(), "serve", "--db", url, "--keys", str(keys), "--listen", police]
                command += ["--metrics-port", "0", "--tls-cert", str(pki / "server.pem")]
                command += ["--tls-key", str(pki / "server.key"), "--client-ca", str(pki / "ca.pem")]
                # The harness waits for health over plaintext; with TLS it waits on the log instead.
                stack.enter_context(_serve_tls(command, work / "server.log"))
            else:
                stack.enter_context(serve(vimark_command(url, keys, police, "police", 1), police, work / "police.log"))
                issuer = f"127.0.0.1:{free_port()}"
                stack.enter_context(serve(vimark_command(url, keys, issuer, "issuer", 1), issuer, work / "issuer.log"))
                env["VIMARK_LOAD_ISSUER_HOST"] = issuer
            prefix = args.out / "locust"
            command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", police]
            command += ["-u", str(args.users), "-r", str(args.spawn_rate), "--run-time", args.duration]
            command += ["--csv", str(prefix), "--html", str(args.out / "locust.html"), "--only-summary"]
            command += ["--stop-timeout", "5"]
            print(f"{'TLS, a client certificate per user' if tls else 'development mode'}; report in {args.out}")
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
