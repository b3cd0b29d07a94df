"""The ways a sync run fails that are metrics-sync's own. With Vapi's (`calltrail_common.vapi`),
the key ring's (`calltrail_common.crypto`), the broker's and the database's, they are what
`metrics_sync.failures` decides on.

    KeyMissing         the account has no stored key any more (disconnected while queued)
    LeaseLost          another replica took the account (this one could not renew in time)
    BrokerUnavailable  no broker connection to publish the run's call snapshots on
"""

from __future__ import annotations


class KeyMissing(Exception):
    """The account has no stored key any more (disconnected while the run was queued)."""


class LeaseLost(Exception):
    """Another replica took the account (this one could not renew its lease in time)."""


class BrokerUnavailable(Exception):
    pass
