"""The policy table is the one place roles are defined and described: docs/security.md's copy
agrees with it, and the RPCs it names are the services' RPCs."""

from __future__ import annotations

from pathlib import Path

from vimark.server.policy import POLICY, Role, View
from vimark.v1 import audit_service_pb2, mark_service_pb2, registry_service_pb2, terminal_service_pb2

ROOT = Path(__file__).resolve().parent.parent


def documented_rows() -> dict[str, list[str]]:
    return text_after("| role | may call |")


def text_after(header: str) -> dict[str, list[str]]:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    table = text.split(header, 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[1:] if line.startswith("| `")]
    return {cells[0].strip("`"): cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def test_security_doc_role_table_is_the_policy_table() -> None:
    documented = documented_rows()
    assert set(documented) == {role.value for role in Role}
    for role, row in POLICY.items():
        rpcs, view, audited, other_dates, seal_keys, rate = documented[role.value]
        assert sorted(rpcs.split(", ")) == sorted(row.rpcs), role
        assert view == row.view.value, role
        assert (audited, other_dates, seal_keys) == (
            yes(row.audited),
            yes(row.judges_other_dates),
            yes(row.gets_seal_keys),
        ), role
        per_second, burst = (float(part) for part in rate.split(" / "))
        assert (per_second, burst) == (row.rate.per_second, row.rate.burst), role
    issuing = text_after("| role | issues for |")
    assert {r: sorted(reasons.split(", ")) for r, (reasons, *_) in issuing.items()} == {
        role.value: sorted(r.label for r in row.issue_reasons) for role, row in POLICY.items() if row.issue_reasons
    }
    assert {r for r, (_, own) in issuing.items() if own.startswith("yes")} == {
        role.value for role, row in POLICY.items() if row.issues_in_own_name
    }


def test_every_rpc_has_a_role_and_every_listed_rpc_exists() -> None:
    services = [
        *mark_service_pb2.DESCRIPTOR.services_by_name.values(),
        *registry_service_pb2.DESCRIPTOR.services_by_name.values(),
        *audit_service_pb2.DESCRIPTOR.services_by_name.values(),
        *terminal_service_pb2.DESCRIPTOR.services_by_name.values(),
    ]
    methods = {m.name for service in services for m in service.methods}
    listed = set().union(*(row.rpcs for row in POLICY.values()))
    assert listed == methods


def test_the_public_sees_least_and_is_not_audited() -> None:
    public = POLICY[Role.PUBLIC]
    assert public.view is View.VALID_OR_NOT and not public.judges_other_dates and not public.gets_seal_keys
