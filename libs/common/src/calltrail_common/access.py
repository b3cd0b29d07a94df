"""Who may do what in an organization: the roles and what each allows. Pure.

owner: everything (people of any role, clients, markup, branding, the webhook secret).
admin: the Vapi key, API tokens, outbound webhooks, people up to admin and what counts as
a call's success; sees secrets and the audit log.
viewer: reads; never sees a secret (webhook secret, new tokens, invitation links of others).

A member of an agency has the same role in each of its client organizations
(`effective_role`). Tokens are machines' credentials for one organization: they act as an
admin of it and never reach another organization, an agency's clients included.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Role = Literal["owner", "admin", "viewer"]
ROLES: tuple[Role, ...] = ("owner", "admin", "viewer")
_RANK: dict[str, int] = {"viewer": 1, "admin": 2, "owner": 3}


class Action(StrEnum):
    READ = "read"
    SEE_SECRETS = "see_secrets"          # the webhook secret, a token or link just made
    SYNC = "sync"                        # "Sync now"
    MANAGE_VAPI_KEY = "manage_vapi_key"  # connect, disconnect
    MANAGE_TOKENS = "manage_tokens"
    MANAGE_PEOPLE = "manage_people"      # invite, change role, remove
    MANAGE_SECRET = "manage_secret"  # noqa: S105 - an action name: rotate, revoke the webhook secret
    MANAGE_CLIENTS = "manage_clients"    # an agency's clients, markup, branding
    EXPORT = "export"
    READ_AUDIT = "read_audit"            # the audit log: who did what, with people's emails
    # Outbound webhook endpoints (their URLs may carry a receiver's token), their secrets
    # when issued, and their delivery logs with "send again".
    MANAGE_OUTBOUND_WEBHOOKS = "manage_outbound_webhooks"
    SET_SUCCESS_MEASURE = "set_success_measure"  # which output or scorecard means success
    SET_TIME_ZONE = "set_time_zone"      # whose days the figures count (decision 45)
    # Point the Vapi account's assistants and numbers at Calltrail, or put them back.
    WIRE_VAPI = "wire_vapi"
    # Erase a caller's personal data, set how long call content is kept (decision 44).
    ERASE_PERSONAL_DATA = "erase_personal_data"


_LEAST_ROLE: dict[Action, Role] = {
    Action.READ: "viewer",
    Action.EXPORT: "viewer",
    Action.SYNC: "admin",
    Action.SEE_SECRETS: "admin",
    Action.MANAGE_VAPI_KEY: "admin",
    Action.MANAGE_TOKENS: "admin",
    Action.READ_AUDIT: "admin",
    Action.MANAGE_OUTBOUND_WEBHOOKS: "admin",
    Action.MANAGE_PEOPLE: "admin",
    Action.SET_SUCCESS_MEASURE: "admin",
    Action.SET_TIME_ZONE: "admin",
    Action.WIRE_VAPI: "admin",
    Action.ERASE_PERSONAL_DATA: "admin",
    Action.MANAGE_SECRET: "owner",
    Action.MANAGE_CLIENTS: "owner",
}


def parse_role(value: str) -> Role:
    """`value` as a role; ValueError naming the roles otherwise."""
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(f"role must be one of {', '.join(ROLES)}")


def may(role: Role | None, action: Action) -> bool:
    """Whether `role` (None: no role at all) allows `action`."""
    return role is not None and _RANK[role] >= _RANK[_LEAST_ROLE[action]]


def may_grant(granter: Role | None, role: Role) -> bool:
    """Whether someone of role `granter` may give `role` to a person (invite, change or
    remove someone holding it): people managers, up to their own role."""
    return may(granter, Action.MANAGE_PEOPLE) and granter is not None \
        and _RANK[granter] >= _RANK[role]


def effective_role(direct: Role | None, through_agency: Role | None) -> Role | None:
    """A person's role in an organization: the higher of their membership of it and their
    membership of its agency (None: neither, so no access)."""
    if direct is None or through_agency is None:
        return direct or through_agency
    return max(direct, through_agency, key=_RANK.__getitem__)



def why_not_change(granter: Role | None, held: Role, wanted: Role | None) -> str | None:
    """Why someone of role `granter` may not change a member who holds `held` to `wanted`
    (None: remove them); None when they may. Managers of people act on roles up to their
    own."""
    if not may(granter, Action.MANAGE_PEOPLE):
        return "your role does not manage people"
    if not may_grant(granter, held):
        return f"an {granter} cannot change an {held}'s membership"
    if wanted is not None and not may_grant(granter, wanted):
        return f"an {granter} cannot give the role {wanted}"
    return None


def leaves_no_owner(held: Role, wanted: Role | None, owners: int) -> bool:
    """Whether changing a member who holds `held` to `wanted` (None: removing them) would
    leave an organization that has `owners` owners with none: its last owner can neither
    leave nor be demoted."""
    return held == "owner" and wanted != "owner" and owners <= 1
