"""Cosmic Community Connect, lab edition: a tiny HTTP application.

``GET /health`` proves the three things a recovered system needs: the
database answers (users and posts are counted), an upload is readable and
the configuration was loaded. Settings come from an INI file (``--config``),
so the application needs nothing beyond Python and psql.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load_config(path: str) -> dict[str, str]:
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith(("#", "[")):
                name, _, value = line.partition("=")
                values[name.strip()] = value.strip()
    return values


def health(config: dict[str, str]) -> tuple[int, dict]:
    checks = {}
    env = {**os.environ, "PGHOST": config["database_host"], "PGPORT": config["database_port"],
           "PGUSER": config["database_user"], "PGDATABASE": config["database_name"],
           "PGCONNECT_TIMEOUT": "3"}
    result = subprocess.run(
        ["psql", "-XAtc", "select (select count(*) from users) || ',' || "
         "(select count(*) from posts)"], env=env, capture_output=True, text=True, timeout=10)
    if result.returncode == 0:
        users, posts = result.stdout.strip().split(",")
        checks["database"] = {"ok": True, "users": int(users), "posts": int(posts)}
    else:
        checks["database"] = {"ok": False, "error": result.stderr.strip()[-300:]}
    upload = os.path.join(config["uploads"], config["health_upload"])
    try:
        with open(upload, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        checks["upload"] = {"ok": True, "path": config["health_upload"], "sha256": digest}
    except OSError as error:
        checks["upload"] = {"ok": False, "error": str(error)}
    checks["config"] = {"ok": True, "site": config.get("site_name", "")}
    ok = all(check["ok"] for check in checks.values())
    return (200 if ok else 503), {"status": "ok" if ok else "failing", "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/health":
                self.send_error(404)
                return
            status, body = health(load_config(args.config))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
