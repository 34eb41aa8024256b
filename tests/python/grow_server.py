"""A small HTTP server (the standard library's) that answers GET / and, on GET /grow,
allocates memory until its memory cgroup's limit has it OOM-killed."""
import http.server
import sys

hold = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/grow":
            while True:
                hold.append(b"x" * (8 << 20))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
