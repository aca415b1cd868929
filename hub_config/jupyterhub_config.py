"""JupyterHub configuration of the Cloud-MRI Workbench (JupyterHub 5.5), as `cloudmri up` starts it.

Everything binds to 127.0.0.1 unless told otherwise; all state lives under the data directory. Settings
(environment variables that `cloudmri up` sets):

- ``CLOUDMRI_DATA_DIR``: the workbench's data directory; the hub keeps its database, cookie secret and proxy
  token under ``DATA_DIR/hub`` (mode 0700).
- ``CLOUDMRI_HUB_IP`` / ``CLOUDMRI_HUB_PORT``: where people open the workbench (default 127.0.0.1:8000).
- ``CLOUDMRI_SERVICE_PORT``: the loopback port of the Cloud-MRI API service, which the hub starts and keeps
  running as the managed service ``cloudmri`` (reached as ``/services/cloudmri/``).
- ``CLOUDMRI_HUB_ADMIN``: the first admin account's name (default ``admin``); it signs up like anyone else and
  is approved automatically.
- ``CLOUDMRI_MANAGER_TOKEN_FILE``: 0600 file with the token of the ``cloudmri-manager`` service that
  `cloudmri up` uses to manage users, groups and tokens (created by `cloudmri up`).
- ``CLOUDMRI_METRICS_TOKEN_FILE``: 0600 file with the token of the ``prometheus`` service, which may scrape
  the hub's ``/hub/metrics`` and the API service's ``/services/cloudmri/api/v1/metrics`` and nothing else.
- ``CLOUDMRI_DEMO_ACCOUNTS``: demo accounts file (`cloudmri up --demo` only).
- ``CLOUDMRI_HOMES_DIR`` (default ``/home``) and ``CLOUDMRI_SYSTEM_PREFIX`` (default ``cm-``): where and under
  which names user servers get their own system accounts (:mod:`hub_config.spawner`).
- ``CLOUDMRI_GPU_GROUPS`` (default ``admins,gpu-users``), ``CLOUDMRI_IDLE_TIMEOUT`` (CPU servers, default
  3600 s), ``CLOUDMRI_GPU_IDLE_TIMEOUT`` (default 14400 s), ``CLOUDMRI_LOCAL_GPUS`` (override the GPU count):
  the profiles of :mod:`hub_config.profiles`.
- ``CLOUDMRI_OIDC_*``: production sign-in through an OpenID Connect provider (e.g. Keycloak) instead of
  NativeAuthenticator: ``CLOUDMRI_OIDC_URL`` (issuer base URL), ``CLOUDMRI_OIDC_CLIENT_ID``,
  ``CLOUDMRI_OIDC_CLIENT_SECRET_FILE``, ``CLOUDMRI_OIDC_CALLBACK_URL``.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub_config.profiles import GPU_IDLE_TIMEOUT  # noqa: E402
from hub_config.roles import SERVICE, USE_SERVICE, custom_scopes, load_roles  # noqa: E402

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CLOUDMRI_DATA_DIR", Path.home() / ".local" / "share" / "cloudmri"))
HUB_DIR = DATA_DIR / "hub"
HUB_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
SERVICE_PORT = int(os.environ.get("CLOUDMRI_SERVICE_PORT", "8765"))
ADMIN = os.environ.get("CLOUDMRI_HUB_ADMIN", "admin")

c.JupyterHub.ip = os.environ.get("CLOUDMRI_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("CLOUDMRI_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("CLOUDMRI_HUB_INTERNAL_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('CLOUDMRI_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [str(ROOT / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(HUB_DIR / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{HUB_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_DIR / "cookie_secret")
c.JupyterHub.pid_file = str(HUB_DIR / "jupyterhub.pid")

if os.environ.get("CLOUDMRI_OIDC_URL"):
    issuer = os.environ["CLOUDMRI_OIDC_URL"].rstrip("/")
    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = os.environ["CLOUDMRI_OIDC_CLIENT_ID"]
    c.GenericOAuthenticator.client_secret = Path(os.environ["CLOUDMRI_OIDC_CLIENT_SECRET_FILE"]).read_text().strip()
    c.GenericOAuthenticator.oauth_callback_url = os.environ["CLOUDMRI_OIDC_CALLBACK_URL"]
    c.GenericOAuthenticator.authorize_url = f"{issuer}/protocol/openid-connect/auth"
    c.GenericOAuthenticator.token_url = f"{issuer}/protocol/openid-connect/token"
    c.GenericOAuthenticator.userdata_url = f"{issuer}/protocol/openid-connect/userinfo"
    c.GenericOAuthenticator.scope = ["openid", "profile", "groups"]
    c.GenericOAuthenticator.username_claim = "preferred_username"
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
    c.GenericOAuthenticator.allow_all = True
else:
    c.JupyterHub.authenticator_class = "hub_config.authenticator.CloudMRIAuthenticator"
    c.CloudMRIAuthenticator.enable_signup = True
    c.CloudMRIAuthenticator.open_signup = False
    c.CloudMRIAuthenticator.minimum_password_length = 10
    c.CloudMRIAuthenticator.check_common_password = True
    c.CloudMRIAuthenticator.allowed_failed_logins = 3
    c.CloudMRIAuthenticator.seconds_before_next_try = 600
    c.CloudMRIAuthenticator.demo_accounts_file = os.environ.get("CLOUDMRI_DEMO_ACCOUNTS", "")
    c.Authenticator.allow_all = True  # NativeAuthenticator's own approval decides who may log in
c.Authenticator.admin_users = {ADMIN}

c.JupyterHub.spawner_class = "hub_config.spawner.CloudMRISpawner"
# jupyterhub-singleuser, started without building the IRI grammars no schema uses (about 1 s of every spawn)
c.Spawner.cmd = [str(Path(sys.executable).parent / "python"), "-m", "cloudmri_jupyter.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.CloudMRISpawner.homes_dir = os.environ.get("CLOUDMRI_HOMES_DIR", "/home")
c.CloudMRISpawner.system_prefix = os.environ.get("CLOUDMRI_SYSTEM_PREFIX", "cm-")
c.CloudMRISpawner.service_url = f"http://127.0.0.1:{SERVICE_PORT}/services/{SERVICE}"
# The server's token (JUPYTERHUB_API_TOKEN, which the Cloud-MRI kernel uses) asks for every Cloud-MRI scope;
# the hub grants only those the user holds.
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", USE_SERVICE, *custom_scopes()]

c.JupyterHub.custom_scopes = custom_scopes()
MANAGER, SCRAPER, CULLER = "cloudmri-manager", "prometheus", "idle-culler"
c.JupyterHub.load_roles = load_roles(extra=[
    {"name": MANAGER, "description": "`cloudmri up`: users, groups and tokens for the demo and for admins.",
     "scopes": ["admin:users", "admin:groups", "tokens"], "services": [MANAGER]},
    {"name": SCRAPER, "description": "Prometheus: the hub's and the API service's metrics, nothing else.",
     "scopes": ["read:metrics", USE_SERVICE, "custom:cloudmri:metrics"], "services": [SCRAPER]},
    {"name": CULLER, "description": "jupyterhub-idle-culler: stops servers idle past the longest profile timeout.",
     "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"], "services": [CULLER]},
])
if os.environ.get("CLOUDMRI_HUB_GROUPS"):
    c.JupyterHub.load_groups = json.loads(os.environ["CLOUDMRI_HUB_GROUPS"])

HUB_ONLY = {"CLOUDMRI_DEMO_ACCOUNTS", "CLOUDMRI_HUB_GROUPS", "CLOUDMRI_MANAGER_TOKEN_FILE",
            "CLOUDMRI_METRICS_TOKEN_FILE"}
service_env = {key: value for key, value in os.environ.items() if key.startswith("CLOUDMRI_") and key not in HUB_ONLY}
service_env["PATH"] = os.environ.get("PATH", "")
c.JupyterHub.services = [
    {
        "name": SERVICE,
        "url": f"http://127.0.0.1:{SERVICE_PORT}",
        "command": [sys.executable, "-m", "cloudmri_kernel", "service", "--port", str(SERVICE_PORT)],
        "environment": service_env,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": list(custom_scopes()),
    },
    # Servers stop themselves after their profile's idle timeout; the culler is the backstop at the longest one.
    {"name": CULLER, "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={GPU_IDLE_TIMEOUT}",
                                 "--cull-every=600"]},
    *({"name": name, "api_token": Path(os.environ[variable]).read_text().strip()} if os.environ.get(variable)
      else {"name": name}
      for name, variable in ((MANAGER, "CLOUDMRI_MANAGER_TOKEN_FILE"), (SCRAPER, "CLOUDMRI_METRICS_TOKEN_FILE"))),
]
