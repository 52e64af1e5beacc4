"""Who may do and see what: the roles, and one row per role that every check reads.

Authentication (auth.py) names the caller's role; the servicers ask this table whether the role
may call the RPC, whether the call is audited, whether it may judge another date; views.py cuts
the answer to the role's `view`; the rate limiter starts from the role's `rate`; `vimark pki` and
`vimark serve` offer the roles listed here. docs/security.md's role table is checked against this
one by tests/test_policy.py. Nothing else spells a list of roles.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from vimark.server.rules import IssueReason


class Role(enum.Enum):
    POLICE = "police"  # handheld terminals: full status
    PUBLIC = "public"  # the public app: valid or not, plate, valid-until
    PARTNER = "partner"  # insurers, rental and used-car platforms
    STATION = "station"  # inspection stations: marks after a passed inspection or an exemption
    REGISTRATION = "registration"  # the registration system: marks after registration, transfer, change
    OWNER_SERVICE = "owner_service"  # the owner-facing service: a mark's copies (download, lost paper)
    OPERATOR = "operator"  # vimark's operators


class View(enum.Enum):
    """How much of a verification or lookup a role is shown."""

    FULL = "full"  # everything, status letters, VIN, overdue cycles and alerts included
    MARK = "mark"  # the mark's fields and validity; no status letters, no VIN on a lookup
    VALID_OR_NOT = "valid_or_not"  # VALID or NOT_VALID, the plate and the month: never why


@dataclass(frozen=True)
class Rate:
    """A caller's token bucket: `per_second` tokens refill, at most `burst` are held."""

    per_second: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'RATE/BURST', e.g. '20/200'."""
        try:
            rate, burst = (float(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"{text!r}: give RATE/BURST, e.g. 20/200") from None
        if not (math.isfinite(rate) and math.isfinite(burst)) or rate <= 0 or burst < 1:
            raise ValueError(f"{text!r}: the rate must be positive and the burst at least 1")
        return cls(rate, burst)


@dataclass(frozen=True)
class RolePolicy:
    rpcs: frozenset[str]  # the RPC method names the role may call
    view: View
    audited: bool  # its calls (verifications, lookups, issuance and presentation) go to the audit log
    judges_other_dates: bool  # may send at_date
    gets_seal_keys: bool  # GetTrustList includes the keys that open sealed marks
    rate: Rate  # default per-caller rate (one certificate); `vimark serve --rate-limit` overrides
    issue_reasons: frozenset[IssueReason] = frozenset()  # what it may Issue for
    issues_in_own_name: bool = False  # the mark's station is the certificate's id, never the request's
    vin_lookup_shows_plate: bool = False  # a lookup by VIN names the plate (else validity only)


# Every role verifies a QR it is shown and reads the trust list. Only police and partners look
# plates up or verify in bulk. Each kind of issuer issues for its own reasons only: a station after
# an inspection or an exemption application (in its own name: the certificate's id is the station
# id), the registration system after registration, transfer or change, the owner-facing service a
# copy of the current mark (a copy never voids the owner's other copies). Present hands out a
# vehicle's QR, so only the system acting for its owner and operators get it; DescribeMark reads a
# mark's plate and month to print it. Operators feed the registry, revoke marks and keep the audit
# log. Every call of police, partners and issuers is audited (refusals of issuers included).
# Rates: a terminal scans a car every few seconds at most (the burst allows one full VerifyBatch);
# the public app checks the car in front of it; partners and issuers are systems with contracts.
# `at_date` is for police and partners (was it valid on the day of the accident?): answers on chosen
# dates would tell the public an overdue car from a stolen or superseded one. A lookup by VIN names
# the plate to police and operators only: otherwise it would turn guessed VINs into plates.
_READ = frozenset({"Verify", "GetTrustList"})
_LOOK = frozenset({"VerifyBatch", "LookupVehicleStatus"})
# A police terminal's offline data (signed trust bundle with seal keys, status snapshot, deltas):
# police and operators only; partners and the public get none of the status data.
_TERMINAL = frozenset({"GetTrustBundle", "GetStatusSnapshot", "GetStatusDelta"})
_ISSUERS_RATE = Rate(500, 2000)
POLICY: Mapping[Role, RolePolicy] = {
    Role.POLICE: RolePolicy(
        _READ | _LOOK | _TERMINAL,
        View.FULL,
        audited=True,
        judges_other_dates=True,
        gets_seal_keys=True,
        rate=Rate(20, 1000),
        vin_lookup_shows_plate=True,
    ),
    Role.PUBLIC: RolePolicy(
        _READ, View.VALID_OR_NOT, audited=False, judges_other_dates=False, gets_seal_keys=False, rate=Rate(0.5, 10)
    ),
    Role.PARTNER: RolePolicy(
        _READ | _LOOK, View.MARK, audited=True, judges_other_dates=True, gets_seal_keys=False, rate=Rate(2000, 5000)
    ),
    Role.STATION: RolePolicy(
        _READ | {"Issue", "DescribeMark"},
        View.MARK,
        audited=True,
        judges_other_dates=True,
        gets_seal_keys=False,
        rate=_ISSUERS_RATE,
        issue_reasons=frozenset({IssueReason.INSPECTION_PASSED, IssueReason.EXEMPTION}),
        issues_in_own_name=True,
    ),
    Role.REGISTRATION: RolePolicy(
        _READ | {"Issue"},
        View.MARK,
        audited=True,
        judges_other_dates=True,
        gets_seal_keys=False,
        rate=_ISSUERS_RATE,
        issue_reasons=frozenset({IssueReason.REGISTRATION, IssueReason.TRANSFER, IssueReason.CHANGE}),
    ),
    Role.OWNER_SERVICE: RolePolicy(
        _READ | {"Issue", "Present", "DescribeMark"},
        View.MARK,
        audited=True,
        judges_other_dates=True,
        gets_seal_keys=False,
        rate=_ISSUERS_RATE,
        issue_reasons=frozenset({IssueReason.REDOWNLOAD, IssueReason.PAPER_LOST}),
    ),
    Role.OPERATOR: RolePolicy(
        _READ
        | {"Present", "DescribeMark", "UpsertVehicles", "ImportVehicles", "SetVehicleStatus", "RevokeMark"}
        | {"BackfillMarks"}
        | {"ListAuditEvents", "VerifyAuditChain", "PruneAuditEvents"}
        | _TERMINAL,
        View.FULL,
        audited=False,
        judges_other_dates=True,
        gets_seal_keys=True,
        rate=Rate(1000, 5000),
        vin_lookup_shows_plate=True,
    ),
}

ROLE_NAMES = tuple(role.value for role in Role)
DEFAULT_RATES: Mapping[Role, Rate] = {role: row.rate for role, row in POLICY.items()}


def roles_allowed(rpc: str) -> frozenset[Role]:
    """The roles whose row lists this RPC."""
    return frozenset(role for role, row in POLICY.items() if rpc in row.rpcs)


def audited_roles() -> frozenset[Role]:
    return frozenset(role for role, row in POLICY.items() if row.audited)
