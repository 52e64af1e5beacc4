"""vimark's benchmarks (`python -m load.bench`; the command is described in load/bench/cli.py).

Modules, one job each:
    cli.py       the command: which benchmarks, in what order, the run's header
    run.py       one run's shared state (dataset, work directory, police server, echo baselines)
    harness.py   servers as subprocesses, free ports, scratch PostgreSQL databases
    verify.py    verify_unary, lookup_unary, verify_batch, verify_latency
    ed25519.py   verify_batch's baseline: raw Ed25519 on every core
    issue.py     issue_sqlite, issue_postgres
    report.py    the figures printed and each benchmark's JSON line
"""
