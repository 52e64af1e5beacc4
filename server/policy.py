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


class Role(enum.Enum):
    POLICE = "police"  # handheld terminals: full status
    PUBLIC = "public"  # the public app: valid or not, plate, valid-until
    PARTNER = "partner"  # insurers, rental and used-car platforms
    ISSUER = "issuer"  # inspection stations and the registration system
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
    audited: bool  # its verifications and lookups are written to the audit log
    judges_other_dates: bool  # may send at_date
    gets_seal_keys: bool  # GetTrustList includes the keys that open sealed marks
    rate: Rate  # default per-caller rate (one certificate); `vimark serve --rate-limit` overrides


# Every role verifies a QR it is shown and reads the trust list. Only police and partners look
# plates up or verify in bulk (and are audited for it). Stations and the registration system issue;
# Present hands out a vehicle's QR, so only the systems acting for its owner (issuer) and operators
# get it, and DescribeMark reads a mark's plate and month to print it. Operators feed the registry,
# revoke marks and read the audit log.
# Rates: a terminal scans a car every few seconds at most (the burst allows one full VerifyBatch);
# the public app checks the car in front of it; partners and stations are systems with contracts.
# `at_date` is for police and partners (was it valid on the day of the accident?): answers on chosen
# dates would tell the public an overdue car from a stolen or superseded one.
_READ = frozenset({"Verify", "GetTrustList"})
POLICY: Mapping[Role, RolePolicy] = {
    Role.POLICE: RolePolicy(
        _READ | {"VerifyBatch", "LookupVehicleStatus"}, View.FULL, True, True, True, Rate(20, 1000)
    ),
    Role.PUBLIC: RolePolicy(_READ, View.VALID_OR_NOT, False, False, False, Rate(0.5, 10)),
    Role.PARTNER: RolePolicy(
        _READ | {"VerifyBatch", "LookupVehicleStatus"}, View.MARK, True, True, False, Rate(2000, 5000)
    ),
    Role.ISSUER: RolePolicy(
        _READ | {"Issue", "Present", "DescribeMark"}, View.MARK, False, True, False, Rate(500, 2000)
    ),
    Role.OPERATOR: RolePolicy(
        _READ | {"Present", "DescribeMark", "UpsertVehicles", "SetVehicleStatus", "RevokeMark", "ListAuditEvents"},
        View.FULL,
        False,
        True,
        True,
        Rate(1000, 5000),
    ),
}

ROLE_NAMES = tuple(role.value for role in Role)
DEFAULT_RATES: Mapping[Role, Rate] = {role: row.rate for role, row in POLICY.items()}


def roles_allowed(rpc: str) -> frozenset[Role]:
    """The roles whose row lists this RPC."""
    return frozenset(role for role, row in POLICY.items() if rpc in row.rpcs)


def audited_roles() -> frozenset[Role]:
    return frozenset(role for role, row in POLICY.items() if row.audited)
