"""The lab's load balancer: forwards GET requests to the upstream named in a file.

Switching traffic is replacing that file (``host:port``) atomically, which is
what ``disaster_recovery.yml``'s lab switch does; the file is read on every
request, so a switch needs no restart.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-file", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                with open(args.upstream_file, encoding="utf-8") as handle:
                    upstream = handle.read().strip()
                with urllib.request.urlopen(f"http://{upstream}{self.path}", timeout=15) as reply:
                    status, body = reply.status, reply.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read()
            except OSError as error:
                status, body = 502, f'{{"status": "no upstream", "error": "{error}"}}'.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
