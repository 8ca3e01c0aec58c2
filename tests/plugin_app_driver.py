"""Drive Airflow's real api-server app (plugins mounted, auth manager configured) in-process.

Run by tests/test_plugin_security.py in a fresh interpreter, because Airflow reads its
configuration and opens its database once per process. Reads a JSON list of requests on
stdin; each names a credential: ``none``, ``login:<user>:<password>`` (a token from the
auth manager's own ``POST /auth/token``, sent as a bearer header), ``cookie:<user>:<pw>``
(the same token in the UI's ``_token`` cookie), ``role:<role>`` (a token the configured
auth manager signs for a user with that role) or ``forged`` (signed with another key).
Prints one JSON object per request: status, headers, body, and the seconds it took.
"""

from __future__ import annotations

import json
import sys
import time

import jwt
from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi.testclient import TestClient


def credential(client: TestClient, spec: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, cookies) for one credential spec."""
    kind, _, rest = spec.partition(":")
    if kind == "none":
        return {}, {}
    if kind in ("login", "cookie"):
        user, _, password = rest.partition(":")
        r = client.post("/auth/token", json={"username": user, "password": password})
        assert r.status_code == 201, r.text
        token = r.json()["access_token"]
        return ({"Authorization": f"Bearer {token}"}, {}) if kind == "login" \
            else ({}, {"_token": token})
    if kind == "role":
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="x", role=rest))
        return {"Authorization": f"Bearer {token}"}, {}
    if kind == "forged":
        token = jwt.encode({"sub": "admin", "role": "admin", "aud": "apache-airflow"},
                           "not-the-secret-" * 4, algorithm="HS512")
        return {"Authorization": f"Bearer {token}"}, {}
    raise ValueError(spec)


def main() -> None:
    requests = json.load(sys.stdin)
    # an error in a route answers 500, as the real server does, instead of ending the run
    client = TestClient(create_app(), follow_redirects=False, raise_server_exceptions=False)
    out = []
    for req in requests:
        headers, cookies = credential(client, req["auth"])
        client.cookies.clear()
        client.cookies.update(cookies)
        start = time.monotonic()
        r = client.get(req["url"], params=req.get("params"), headers=headers)
        out.append({"status": r.status_code, "headers": dict(r.headers),
                    "body": r.content.decode("utf-8", errors="replace"),
                    "elapsed_s": time.monotonic() - start})
    print("LLEM-DRIVER " + json.dumps(out))


if __name__ == "__main__":
    main()
