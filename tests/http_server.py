"""A static HTTP server on 127.0.0.1 for the download tests: it honours "Range: bytes=N-"
(python -m http.server does not), logs every request, can cut the first full GET of a file
after K bytes (an interrupted download) and can announce a fake size on HEAD."""
import json
import subprocess
import sys
import textwrap
import time

SERVER = textwrap.dedent('''
    import http.server, json, os, sys
    root, port_file, log_file = sys.argv[1:4]
    config = json.loads(sys.argv[4])
    cut_done = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _file(self):
            path = os.path.join(root, self.path.lstrip("/"))
            with open(log_file, "a") as f:
                f.write(json.dumps([self.command, self.path, self.headers.get("Range")]) + "\\n")
            if not os.path.isfile(path):
                self.send_error(404)
                return None
            return path

        def do_HEAD(self):
            path = self._file()
            if path:
                size = config.get("fake_size", {}).get(self.path, os.path.getsize(path))
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

        def do_GET(self):
            path = self._file()
            if not path:
                return
            data = open(path, "rb").read()
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % len(data))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range",
                                 "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            cut = config.get("cut", {}).get(self.path)
            if cut and not rng and self.path not in cut_done:
                cut_done.add(self.path)
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()
''')


class Server:
    def __init__(self, root, tmp_path, config=None):
        self.log = tmp_path / "requests.log"
        self.log.write_text("")
        port_file = tmp_path / "port"
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        self.proc = subprocess.Popen([sys.executable, str(script), str(root), str(port_file),
                                      str(self.log), json.dumps(config or {})])
        deadline = time.time() + 20
        while not port_file.exists():
            assert time.time() < deadline and self.proc.poll() is None, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def requests(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
