"""A tiny HTTP/1.1 backend that says which one it is: `python named_backend.py NAME [PORT]`.

Prints `listening http ADDR` on stdout (as our binaries do), then answers every request with 200 and
`{"backend": NAME, "method": ..., "path": ...}` on a keep-alive connection. Sent to it directly (not
through the gateway), `GET /__delay?ms=N` makes every later answer wait N ms (a slow replica) and
`GET /__status?code=N` makes every later answer have status N (a failing one). Run as a
process so that a test can kill it (SIGKILL: listener and open connections gone at once) and start it
again on the same port.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
DELAY_S = [0.0]
STATUS = [200]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        status = STATUS[0]
        if url.path == "/__delay":
            DELAY_S[0] = int(parse_qs(url.query)["ms"][0]) / 1000
            status = 200
        elif url.path == "/__status":
            STATUS[0] = int(parse_qs(url.query)["code"][0])
            status = 200
        elif DELAY_S[0]:
            time.sleep(DELAY_S[0])
        body = json.dumps({"backend": NAME, "method": self.command, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restarted on the same port right after a kill
    request_queue_size = 128


if __name__ == "__main__":
    server = Server(("127.0.0.1", PORT), Handler)
    print(f"listening http 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
