#!/usr/bin/python3
"""webhook-sink ADDRESS PORT DIR: the lab's webhook receiver (roles/monitoring's Alertmanager
webhooks), run on the lab's outsider host by drc/lab/alerts.py.

Every POST's body is kept as one file in DIR (`<ns since epoch>.json`, written then renamed, so a
reader never sees half a file), answered 200. Standard library only (Debian's python3).
"""

import http.server
import os
import sys
import time


class Sink(http.server.BaseHTTPRequestHandler):
    directory = "."

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        name = os.path.join(self.directory, f"{time.time_ns()}.json")
        with open(name + ".tmp", "wb") as fh:
            fh.write(body)
        os.replace(name + ".tmp", name)
        self.send_response(200)
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write(f"webhook-sink: {self.address_string()} {fmt % args}\n")


def main(argv=None):
    address, port, directory = sys.argv[1:] if argv is None else argv
    os.makedirs(directory, exist_ok=True)
    Sink.directory = directory
    http.server.ThreadingHTTPServer((address, int(port)), Sink).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
