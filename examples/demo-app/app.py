#!/usr/bin/env python3
"""A tiny HTTP service for dax demos and tests (Python 3 standard library only).

    python3 app.py --version v2 --port 8081 [--error-rate 0.5] [--latency-ms 20]

Endpoints:
  GET /healthz  -> 200 "ok" (readiness; never fails, never delayed)
  GET /stats    -> JSON {"version", "requests"}: how many non-health requests it has served
  anything else -> JSON {"version", "path", "method"}; a fraction `--error-rate` of them answers 500,
                   each after `--latency-ms` milliseconds
"""

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_args(argv):
    p = argparse.ArgumentParser(description="dax demo application")
    p.add_argument("--version", default="v1", help="version label returned in every response")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8081")))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction (0..1) of requests answered with 500")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every non-health request")
    args = p.parse_args(argv)
    if not 0.0 <= args.error_rate <= 1.0:
        p.error("--error-rate must be between 0 and 1 (e.g. 0.5 for half the requests)")
    if args.latency_ms < 0:
        p.error("--latency-ms must not be negative")
    return args


def make_handler(args):
    counter = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections alive, so a proxy's connection pool is reused.
        protocol_version = "HTTP/1.1"
        server_version = "dax-demo/" + args.version

        def log_message(self, fmt, *a):  # quiet: the proxy keeps the statistics
            pass

        def reply(self, status, body, ctype="application/json"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Demo-Version", args.version)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                return self.reply(200, "ok\n", "text/plain")
            if path == "/stats":
                with lock:
                    n = counter["n"]
                return self.reply(200, json.dumps({"version": args.version, "requests": n}))
            with lock:
                counter["n"] += 1
            if args.latency_ms:
                time.sleep(args.latency_ms / 1000.0)
            if args.error_rate and random.random() < args.error_rate:
                return self.reply(500, json.dumps({"version": args.version, "error": "injected failure"}))
            return self.reply(200, json.dumps({"version": args.version, "path": self.path, "method": self.command}))

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = Server((args.host, args.port), make_handler(args))
    # SIGTERM (sent by dax when it stops a version) shuts down cleanly.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"demo {args.version} listening on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
