"""The role map, checked against JupyterHub's own scope definitions."""

from __future__ import annotations

import pytest
from jupyterhub.scopes import _expand_scope, scope_definitions

from cloudmri_kernel.service.identity import ROLE_SCOPES, SCOPES
from hub_config.roles import GROUP_SCOPES, check_roles, custom_scopes, load_roles


def _granted(role: dict) -> set[str]:
    return {s for s in role["scopes"] if s.startswith("custom:cloudmri:")}


def test_every_group_has_one_valid_role():
    roles = load_roles()
    assert [r["groups"] for r in roles] == [[g] for g in GROUP_SCOPES]
    assert set(custom_scopes()) == {f"custom:cloudmri:{s}" for s in SCOPES}


def test_roles_give_exactly_the_api_scopes_of_their_user_type():
    by_group = {r["groups"][0]: r for r in load_roles()}
    for group, kind in (("researchers", "researcher"), ("radiologists", "radiologist"),
                        ("instructors", "instructor"), ("admins", "admin")):
        assert _granted(by_group[group]) == {f"custom:cloudmri:{s}" for s in ROLE_SCOPES[kind]}
    assert "custom:cloudmri:read-raw" not in by_group["radiologists"]["scopes"]
    assert not {"admin:users", "admin:servers"} & set(by_group["instructors"]["scopes"])


def test_hub_scopes_expand_in_jupyterhub():
    for role in load_roles():
        for scope in role["scopes"]:
            if not scope.startswith("custom:"):
                assert scope.partition("!")[0] in scope_definitions
                assert _expand_scope(scope.partition("!")[0])


@pytest.mark.parametrize("role, problem", [
    ({"name": "r", "scope": ["self"], "groups": ["g"]}, "unknown key"),
    ({"name": "r", "scopes": ["self"]}, "assigned to no"),
    ({"name": "r", "scopes": ["admin:user"], "groups": ["g"]}, "unknown scope"),
    ({"name": "r", "scopes": ["custom:cloudmri:read_raw"], "groups": ["g"]}, "unknown scope"),
    ({"name": "r", "scopes": ["servers!grp=x"], "groups": ["g"]}, "malformed filter"),
])
def test_mistakes_jupyterhub_would_accept_are_refused(role, problem):
    with pytest.raises(ValueError, match=problem):
        check_roles([role])
