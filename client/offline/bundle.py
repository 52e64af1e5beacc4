"""The trust bundle: the issuing keys and seal keys a police terminal checks marks with offline,
when they were made and for how long they may be relied on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from vimark.client.offline.envelope import OfflineDataRefused, age, instant, timestamp
from vimark.client.trust import ALGORITHM, PUBLIC_KEY_SIZE, TrustedKey, TrustList, key_status_name, key_status_value
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import terminal_service_pb2 as tpb

DEFAULT_BUNDLE_MAX_AGE = dt.timedelta(hours=72)
# A terminal never relies on a bundle longer than this, whatever max_age it was signed with.
MAX_BUNDLE_MAX_AGE = DEFAULT_BUNDLE_MAX_AGE
SEAL_ALGORITHM = "ChaCha20-Poly1305"
SEAL_KEY_SIZE = 32


@dataclass(frozen=True)
class TrustBundle:
    trust: TrustList
    made_at: dt.datetime
    max_age: dt.timedelta
    # When the online key that signed it stops being certified (set by the terminal from the
    # envelope; None when not known): a leaked, rotated-out key cannot keep old data fresh.
    signer_until: dt.datetime | None = field(default=None, compare=False)

    def stale_since(self) -> dt.datetime:
        """made_at + max_age (at most MAX_BUNDLE_MAX_AGE), never after the signer's certificate ends."""
        since = self.made_at + min(self.max_age, MAX_BUNDLE_MAX_AGE)
        return since if self.signer_until is None else min(since, self.signer_until)

    def to_message(self) -> tpb.TrustBundle:
        m = tpb.TrustBundle(make_time=timestamp(self.made_at), max_age_seconds=int(self.max_age.total_seconds()))
        for key in sorted(self.trust.keys.values(), key=lambda k: k.key_id):
            item = pb.TrustedKey(
                key_id=key.key_id,
                algorithm=ALGORITHM,
                public_key=key.public_key,
                status=key_status_value(key.status),  # type: ignore[arg-type]
                start_time=timestamp(key.valid_from),
            )
            if key.valid_until is not None:
                item.end_time.CopyFrom(timestamp(key.valid_until))
            m.issuing_keys.append(item)
        for seal_id, seal_key in sorted(self.trust.seal_keys.items()):
            m.seal_keys.append(pb.SealKey(seal_key_id=seal_id, algorithm=SEAL_ALGORITHM, key=seal_key))
        return m

    @classmethod
    def from_payload(cls, payload: bytes) -> TrustBundle:
        m = tpb.TrustBundle()
        try:
            m.ParseFromString(payload)
        except DecodeError:
            raise OfflineDataRefused("the trust bundle is damaged") from None
        keys: dict[int, TrustedKey] = {}
        for item in m.issuing_keys:
            if item.algorithm != ALGORITHM or len(item.public_key) != PUBLIC_KEY_SIZE:
                raise OfflineDataRefused(f"the trust bundle's key {item.key_id} is not an {ALGORITHM} key")
            keys[item.key_id] = TrustedKey(
                item.key_id,
                item.public_key,
                instant(item.start_time),
                instant(item.end_time) if item.HasField("end_time") else None,
                key_status_name(item.status),
            )
        seals = {s.seal_key_id: s.key for s in m.seal_keys}
        if any(len(k) != SEAL_KEY_SIZE for k in seals.values()):
            raise OfflineDataRefused(f"a seal key in the trust bundle is not {SEAL_KEY_SIZE} bytes")
        return cls(TrustList(keys, seals), instant(m.make_time), age(m.max_age_seconds))
