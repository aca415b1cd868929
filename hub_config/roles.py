"""Groups, roles and scopes of the workbench: the one place that says who may do what.

Four groups of people — ``researchers``, ``radiologists``, ``instructors``, ``admins`` — each get one role with
exactly the JupyterHub scopes and the Cloud-MRI API scopes (JupyterHub custom scopes ``custom:cloudmri:*``,
defined from :data:`cloudmri_kernel.service.identity.SCOPES`) they need. Sites are groups too
(``site-NAME``): the API service reads a user's site from them. Instructors manage the servers of their class
(group ``students``) without being admins.

JupyterHub accepts any keys in a role dictionary and unknown scopes only warn, so a typo silently assigns
nothing; :func:`check_roles` refuses both, and the hub configuration calls it at every start.

References:
    JupyterHub documentation, "JupyterHub RBAC" (roles, scopes, custom scopes), JupyterHub 5.
"""

from __future__ import annotations

import re

from cloudmri_kernel.service.identity import ROLE_SCOPES, SCOPE_PREFIX, SCOPES

SERVICE = "cloudmri"
CLASS_GROUP = "students"
ROLE_KEYS = {"name", "description", "scopes", "users", "groups", "services"}
FILTER = re.compile(r"!(user|group|service|server)=[A-Za-z0-9_.@/-]+")


def cloudmri(names: list[str]) -> list[str]:
    return [SCOPE_PREFIX + name for name in names]


def custom_scopes() -> dict[str, dict[str, str]]:
    """``c.JupyterHub.custom_scopes``: every Cloud-MRI API scope with its description."""
    return {SCOPE_PREFIX + name: {"description": text} for name, text in SCOPES.items()}


USE_SERVICE = f"access:services!service={SERVICE}"
GROUP_SCOPES: dict[str, dict[str, object]] = {
    "researchers": {
        "description": "JupyterLab, the Cloud-MRI kernel and the data of their site.",
        "scopes": ["self", USE_SERVICE, *cloudmri(ROLE_SCOPES["researcher"])],
    },
    "radiologists": {
        "description": "The reading apps (Voilà): images, labels, scores and reports; no raw k-space.",
        "scopes": ["self", USE_SERVICE, *cloudmri(ROLE_SCOPES["radiologist"])],
    },
    "instructors": {
        "description": "Run tutorials for their class: the servers of the students group, not the hub.",
        "scopes": ["self", USE_SERVICE, "list:users", f"read:users!group={CLASS_GROUP}",
                   f"servers!group={CLASS_GROUP}", f"access:servers!group={CLASS_GROUP}",
                   *cloudmri(ROLE_SCOPES["instructor"])],
    },
    "admins": {
        "description": "Users, groups, servers and tokens of the hub; every Cloud-MRI scope.",
        "scopes": ["admin-ui", "admin:users", "admin:groups", "admin:servers", "tokens", "read:hub",
                   "read:metrics", "access:servers", "access:services", "list:services", "read:services",
                   *cloudmri(ROLE_SCOPES["admin"])],
    },
}


def load_roles(extra: list[dict] | None = None) -> list[dict]:
    """``c.JupyterHub.load_roles``: one role per group (``cloudmri-researcher`` for ``researchers``, …)."""
    roles = [{"name": f"cloudmri-{group.removesuffix('s')}", "description": spec["description"],
              "scopes": list(spec["scopes"]), "groups": [group]} for group, spec in GROUP_SCOPES.items()]
    roles.extend(extra or [])
    check_roles(roles)
    return roles


def check_roles(roles: list[dict], custom: dict | None = None) -> None:
    """Refuse role dictionaries with unknown keys, unknown or malformed scopes, or nobody to assign to.

    Raises:
        ValueError: naming the role and the problem.
    """
    from jupyterhub.scopes import scope_definitions

    known = set(scope_definitions) | set(custom if custom is not None else custom_scopes())
    for role in roles:
        name = role.get("name", "<unnamed>")
        unknown = set(role) - ROLE_KEYS
        if unknown:
            raise ValueError(f"role {name}: unknown key(s) {sorted(unknown)}; JupyterHub would ignore them")
        if not any(role.get(key) for key in ("users", "groups", "services")):
            raise ValueError(f"role {name} is assigned to no users, groups or services")
        for scope in role.get("scopes", []):
            base, _, rest = scope.partition("!")
            if base not in known:
                raise ValueError(f"role {name}: unknown scope '{scope}'")
            if rest and not FILTER.fullmatch("!" + rest):
                raise ValueError(f"role {name}: malformed filter in scope '{scope}'")
