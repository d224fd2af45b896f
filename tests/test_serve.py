#!/usr/bin/python3
"""test_serve.py - dlcore-serve end to end: each case starts the server on a free
loopback port, talks HTTP to it, and stops it (SIGTERM, which must exit 0).

Expected predictions come from tests/serve_helper.c, which calls dl_predict on the
same values without the server. Prints "test_serve.py: N passed, N failed".

  test_serve.py --server build/dlcore-serve --helper build/serve_helper [--sanitized] [--soak SECONDS]
"""
import argparse, http.client, json, os, re, signal, socket, struct, subprocess, sys, tempfile, threading, time, zlib

ap = argparse.ArgumentParser()
ap.add_argument("--server", required=True)
ap.add_argument("--helper", required=True)
ap.add_argument("--data", default="data/fashion-mnist")
ap.add_argument("--sanitized", action="store_true", help="the server is an ASan+UBSan build: allow it more time")
ap.add_argument("--soak", type=int, default=0, help="instead of the cases: SECONDS of load plus bad requests")
ap.add_argument("only", nargs="?", default="")
args = ap.parse_args()
SLOW = 4 if args.sanitized else 1
tmp = tempfile.mkdtemp(prefix="test_serve.")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("  FAIL %s %s" % (name, detail[:600]))
    return cond


def helper(*a):
    r = subprocess.run([args.helper] + [str(x) for x in a], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("serve_helper %s: %s" % (" ".join(map(str, a)), r.stderr.strip()))
    return r.stdout


def bits(values):
    return ["%08x" % struct.unpack("<I", struct.pack("<f", v))[0] for v in values]


def expected(model, first, n):
    return [line.split() for line in helper("expect", model, args.data, first, n).splitlines()]


class Server:
    """One dlcore-serve process; stop() sends SIGTERM and returns its exit status."""

    def __init__(self, models, *extra):
        self.log = os.path.join(tmp, "server-%d.log" % time.monotonic_ns())
        cmd = [args.server, "--listen", "127.0.0.1:0"]
        for name, path in models:
            cmd += ["--model", "%s=%s" % (name, path)]
        cmd += [str(x) for x in extra]
        self.logf = open(self.log, "w")
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=self.logf, stdin=subprocess.DEVNULL)
        self.port = None
        deadline = time.monotonic() + 20 * SLOW
        while time.monotonic() < deadline and self.p.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(self.log).read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.02)
        if not self.port:
            self.stop()
            raise RuntimeError("the server did not start: " + open(self.log).read()[-2000:])

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30 * SLOW)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                self.logf.close()
                return "killed after SIGTERM did not stop it"
        self.logf.close()
        return self.p.returncode

    def text(self):
        return open(self.log).read()

    def req(self, method, path, body=None, ctype="application/json", headers=None, timeout=20):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)
        h = dict(headers or {})
        if ctype:
            h["Content-Type"] = ctype
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.read(), r.getheader("Content-Type") or ""
        finally:
            c.close()

    def predict(self, body, ctype="application/json", model="m"):
        return self.req("POST", "/v1/models/%s:predict" % model, body, ctype)


def case(fn):
    """Runs one case with its own server(s); a case that raises counts as failed."""
    if args.only and args.only not in fn.__name__:
        return
    before = failed
    try:
        fn()
    except Exception as e:  # a crash of the case itself is a failure, never a pass
        check(fn.__name__, False, "raised %r" % (e,))
    print("%s %s" % ("FAIL" if failed > before else "ok  ", fn.__name__))
    sys.stdout.flush()


def stopped_clean(name, s):
    rc = s.stop()
    check(name + ": exit 0 on SIGTERM", rc == 0, "exit %r; log:\n%s" % (rc, s.text()[-3000:]))
    t = s.text()
    check(name + ": no sanitizer report", "runtime error" not in t and "Sanitizer" not in t, t[-3000:])


def rows_of(body, key="predictions"):
    return [bits(r) for r in json.loads(body)[key]]


# ---- fixtures: two model files, request bodies, PNGs ---------------------------------
MA = os.path.join(tmp, "a.dlc")
MB = os.path.join(tmp, "b.dlc")
BODIES = {}
if not os.path.isdir(args.data):
    check("data set present", False, "%s is missing: run `make data`" % args.data)
else:
    helper("model", MA, 1)
    helper("model", MB, 2)
    for fmt in ("rows", "nested", "columns", "flatcols", "named"):
        path = os.path.join(tmp, fmt + ".json")
        helper("body", args.data, 0, 3, fmt, path)
        BODIES[fmt] = open(path, "rb").read()
    for i in range(16):
        path = os.path.join(tmp, "one-%d.json" % i)
        helper("body", args.data, i, 1, "rows", path)
        BODIES[i] = open(path, "rb").read()
    PNG = os.path.join(tmp, "img.png")
    LABEL = int(helper("png", args.data, 5, PNG, 1))
    PNG3 = os.path.join(tmp, "img3.png")
    helper("png", args.data, 5, PNG3, 3)
    JPG = os.path.join(tmp, "img.jpg")
    helper("png", args.data, 5, JPG, 2)
    EXP_A = expected(MA, 0, 16)
    EXP_B = expected(MB, 0, 16)
    EXP_PNG = [l.split() for l in helper("expect-png", MA, args.data, 5).splitlines()]


def good_requests():
    s = Server([("m", MA)], "--max-batch", 1)
    try:
        for fmt in ("rows", "nested"):
            st, body, ct = s.predict(BODIES[fmt])
            check("%s: 200 JSON" % fmt, st == 200 and ct.startswith("application/json"), "%d %r" % (st, body[:300]))
            check("%s: equals dl_predict bit for bit" % fmt, st == 200 and rows_of(body) == EXP_A[:3], body[:300].decode())
        for fmt in ("columns", "flatcols", "named"):
            st, body, _ = s.predict(BODIES[fmt])
            check("%s: equals dl_predict bit for bit" % fmt, st == 200 and rows_of(body, "outputs") == EXP_A[:3], body[:300].decode())
        st, body, _ = s.predict(open(PNG, "rb").read(), "image/png")
        check("png: equals dl_predict on its pixels", st == 200 and rows_of(body) == EXP_PNG, body[:300].decode())
        check("png of a test image: same as its JSON row", EXP_PNG[0] == EXP_A[5], "")
        st, body, _ = s.predict(open(PNG3, "rb").read(), "image/png")
        p = json.loads(body)["predictions"][0] if st == 200 else []
        check("png 84x84: resized, 10 probabilities summing to 1", st == 200 and len(p) == 10 and abs(sum(p) - 1) < 1e-4, body[:300].decode())
        st, body, _ = s.predict(open(JPG, "rb").read(), "image/jpeg")
        p = json.loads(body)["predictions"][0] if st == 200 else []
        check("jpeg 56x56: 10 probabilities summing to 1", st == 200 and len(p) == 10 and abs(sum(p) - 1) < 1e-4, body[:300].decode())
        st, body, _ = s.req("GET", "/v1/models/m")
        j = json.loads(body)
        check("status: AVAILABLE, version 1", st == 200 and j["model_version_status"][0]["state"] == "AVAILABLE"
              and j["model_version_status"][0]["version"] == "1", body.decode())
        st, body, _ = s.req("GET", "/v1/models/m/metadata")
        j = json.loads(body)
        sig = j["metadata"]["signature_def"]["signature_def"]["serving_default"]
        dims = [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]]
        odims = [d["size"] for d in sig["outputs"]["probabilities"]["tensor_shape"]["dim"]]
        check("metadata: shapes [-1,28,28] -> [-1,10]", dims == ["-1", "28", "28"] and odims == ["-1", "10"], body.decode())
        enc = j["metadata"].get("encodings", {})
        check("metadata: encodings", "image/png" in enc and "application/json" in enc, body.decode())
        st, body, _ = s.req("GET", "/healthz")
        check("healthz", st == 200 and json.loads(body)["status"] == "ok", body.decode())
        # GETs keep the connection open: three on one socket, none answered "Connection: close"
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20 * SLOW)
        try:
            seen = []
            for path in ("/healthz", "/v1/models/m", "/healthz"):
                c.request("GET", path)
                resp = c.getresponse()
                resp.read()
                seen.append((resp.status, resp.getheader("Connection"), c.sock is not None and c.sock.fileno()))
            check("GETs on one kept-alive connection", all(st == 200 and conn != "close" for st, conn, _ in seen)
                  and seen[0][2] and seen[0][2] == seen[2][2], repr(seen))
        finally:
            c.close()
        st, body, ct = s.req("GET", "/metrics")
        t = body.decode()
        check("metrics: Prometheus text", st == 200 and ct.startswith("text/plain"), ct)
        for needle in ('dlserve_requests_total{model="m",code="200"} 11', 'dlserve_request_duration_seconds_bucket{model="m",le="+Inf"}',
                       'dlserve_batch_size_bucket{model="m",le="1"}', "dlserve_predicted_class_total{model=\"m\",class=",
                       'dlserve_model_version{model="m"} 1', 'dlserve_model_load_timestamp_seconds{model="m"}',
                       "process_resident_memory_bytes "):
            check("metrics has " + needle, needle in t, t[:2000])
        # rows predicted: 3 * 5 JSON + 2 PNG + 1 JPEG = 18; the predicted-class counters add up to that
        n = sum(int(v) for v in re.findall(r'dlserve_predicted_class_total\{model="m",class="\d+"\} (\d+)', t))
        check("metrics: predicted classes count every row", n == 18, t[:2000])
    finally:
        stopped_clean("good_requests", s)


def json_parsers_agree():
    """The simdjson fast path (the default) and cJSON alone (--json cjson) read the same bits."""
    fast = Server([("m", MA)], "--max-batch", 1)
    slow = Server([("m", MA)], "--max-batch", 1, "--json", "cjson")
    try:
        st, body, _ = slow.predict(BODIES["rows"])
        check("--json cjson: rows equal dl_predict bit for bit", st == 200 and rows_of(body) == EXP_A[:3], body[:300].decode())
        row = json.loads(BODIES["rows"])["instances"][0]
        texts = ["%.9g" % v for v in row]
        # negative zero (simdjson reads "-0" as the integer 0: declined, cJSON reads it),
        # integers, exponents, a float32 underflow and overflow to the edge, spaces
        for i, t in enumerate(["-0", "-0.0", "7", "1E-2", "-3e1", "1e-46", "3.4028234e38", "12345678901234567890", "0.5 "]):
            texts[100 + i] = t
        body = ('{"instances": [[%s], [%s]]}' % (", ".join(texts), ", ".join(reversed(texts)))).encode()
        a, b = fast.predict(body), slow.predict(body)
        check("special numbers: the same answer from both parsers", a[0] == 200 and a[:2] == b[:2], "%r / %r" % (a[:2], b[:2]))
        texts[5] = "0." + "1" * 70                        # past strtod's fast cases
        body = ('{"instances": [[%s]]}' % ", ".join(texts)).encode()
        a, b = fast.predict(body), slow.predict(body)
        check("a 72-character number: the same answer from both parsers", a[0] == 200 and a[:2] == b[:2], "%r / %r" % (a[:2], b[:2]))
        for bad in (b'{"instances": [[1, 2]]}', b'{"instances": [[NaN' + b', 0' * 783 + b']]}', b'{"instances": [["1"' + b', 0' * 783 + b']]}'):
            a, b = fast.predict(bad), slow.predict(bad)
            check("declined by the fast path, then cJSON's error: %r" % bad[:24], a[0] == 400 and a[:2] == b[:2], "%r / %r" % (a[:2], b[:2]))
    finally:
        stopped_clean("json_parsers_agree (simdjson)", fast)
        stopped_clean("json_parsers_agree (cjson)", slow)


def batched_equals_alone():
    s = Server([("m", MA)], "--max-batch", 64, "--batch-timeout-us", 20000 * SLOW, "--threads", 4)
    results = {}

    def send(i):
        try:
            results[i] = s.predict(BODIES[i])
        except Exception as e:
            results[i] = (0, repr(e).encode(), "")
    try:
        for rnd in range(3):
            ts = [threading.Thread(target=send, args=(i,)) for i in range(16)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            for i in range(16):
                st, body, _ = results[i]
                check("concurrent request %d round %d: its own row, bit for bit" % (i, rnd),
                      st == 200 and rows_of(body) == [EXP_A[i]], body[:200].decode(errors="replace"))
        st, body, _ = s.req("GET", "/metrics")
        t = body.decode()
        calls = int(re.search(r'dlserve_batch_size_count\{model="m"\} (\d+)', t).group(1))
        rows = int(re.search(r'dlserve_batch_size_sum\{model="m"\} (\d+)', t).group(1))
        check("batching joined requests (48 rows in fewer calls)", rows == 48 and calls < 48, "calls %d rows %d" % (calls, rows))
        st, body, _ = s.predict(BODIES[7])
        check("the same request sent alone: same bits", st == 200 and rows_of(body) == [EXP_A[7]], body[:200].decode())
    finally:
        stopped_clean("batched_equals_alone", s)


def png_bytes(w, h, idat=b""):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_requests():
    s = Server([("m", MA)], "--max-body", 65536, "--max-pixels", 1000000, "--max-header", 8192)
    row = json.loads(BODIES[0])["instances"][0]
    real_png = open(PNG, "rb").read()
    # A real JPEG whose first Huffman table declares 16 x 32 = 512 codes: stb_image
    # would write past its 257-entry table (nothings/stb#1291).
    real_jpg = open(JPG, "rb").read()
    dht = real_jpg.index(b"\xff\xc4")
    bad_dht_jpg = real_jpg[: dht + 5] + b"\x20" * 16 + real_jpg[dht + 21:]
    cases = [
        ("malformed JSON", 400, b'{"instances": [[0, 1,, 2]]}', "application/json"),
        ("truncated JSON", 400, BODIES[0][: len(BODIES[0]) // 2], "application/json"),
        ("wrong length", 400, json.dumps({"instances": [row[:700]]}).encode(), "application/json"),
        ("wrong nested shape", 400, json.dumps({"instances": [[row[:27]] * 28]}).encode(), "application/json"),
        ("strings", 400, json.dumps({"instances": [["0.5"] * 784]}).encode(), "application/json"),
        ("NaN", 400, ('{"instances": [[NaN' + ", 0" * 783 + "]]}").encode(), "application/json"),
        ("1e400", 400, ('{"instances": [[1e400' + ", 0" * 783 + "]]}").encode(), "application/json"),
        ("1e39 (beyond float32)", 400, ('{"instances": [[1e39' + ", 0" * 783 + "]]}").encode(), "application/json"),
        ("empty body", 400, b"", "application/json"),
        ("not an object", 400, b"[1, 2, 3]", "application/json"),
        ("neither instances nor inputs", 400, b'{"x": [1]}', "application/json"),
        ("both instances and inputs", 400, b'{"instances": [], "inputs": []}', "application/json"),
        ("empty instances", 400, b'{"instances": []}', "application/json"),
        ("15 000 empty rows", 400, b'{"instances": [' + b"[], " * 15000 + b"[]]}", "application/json"),
        ("trailing garbage", 400, BODIES[0] + b"}", "application/json"),
        ("deep nesting", 400, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
        ("body over the limit", 413, b'{"instances": [' + b"0, " * 40000 + b"0]}", "application/json"),
        ("wrong content type", 415, BODIES[0], "text/xml"),
        ("corrupt PNG", 400, real_png[:40] + b"\0" * 60, "image/png"),
        ("PNG of garbage", 400, b"\x89PNG\r\n\x1a\n" + b"x" * 100, "image/png"),
        ("PNG claiming 100000x100000", 400, png_bytes(100000, 100000), "image/png"),   # stb_image refuses it itself
        ("PNG claiming 3000x3000 (over --max-pixels)", 413, png_bytes(3000, 3000), "image/png"),
        ("JSON sent as image/jpeg", 400, BODIES[0], "image/jpeg"),
        ("JPEG with a Huffman table of 512 codes", 400, bad_dht_jpg, "image/jpeg"),
        ("the same after FF fill bytes", 400, b"\xff\xff" + bad_dht_jpg, "image/jpeg"),
    ]
    try:
        for name, code, body, ctype in cases:
            st, rb, ct = s.predict(body, ctype)
            ok = st == code and ct.startswith("application/json")
            try:
                ok = ok and isinstance(json.loads(rb)["error"], str)
            except Exception:
                ok = False
            check("%s: %d with a JSON error" % (name, code), ok, "%d %r" % (st, rb[:300]))
            st, rb, _ = s.predict(BODIES[1])
            check("after %s: still serving" % name, st == 200 and rows_of(rb) == [EXP_A[1]], rb[:200].decode(errors="replace"))
        for name, code, method, path in [("unknown model", 404, "POST", "/v1/models/nope:predict"),
                                         ("unknown path", 404, "GET", "/v2/whatever"),
                                         ("unknown verb", 404, "POST", "/v1/models/m:classify"),
                                         ("GET on :predict", 405, "GET", "/v1/models/m:predict"),
                                         ("DELETE on :predict", 405, "DELETE", "/v1/models/m:predict"),
                                         ("POST on status", 405, "POST", "/v1/models/m"),
                                         ("PUT on metrics", 405, "PUT", "/metrics")]:
            st, rb, ct = s.req(method, path, BODIES[0] if method in ("POST", "PUT") else None)
            check("%s: %d with a JSON error" % (name, code), st == code and b'"error"' in rb, "%d %r" % (st, rb[:200]))
        st, rb, _ = s.req("GET", "/healthz", headers={"X-Big": "a" * 20000})
        check("header over the limit: 4xx", 400 <= st < 500, "%d" % st)
        st, rb, _ = s.req("GET", "/metrics")
        t = rb.decode()
        check("no 5xx counted", not re.search(r'code="5\d\d"', t) and 'code="other"' not in t, t[:1500])
        check("4xx counted by code", 'dlserve_requests_total{model="m",code="413"}' in t and 'dlserve_requests_total{model="",code="404"}' in t, t[:1500])
    finally:
        stopped_clean("bad_requests", s)


def slow_and_many_clients():
    s = Server([("m", MA)], "--timeout-s", 1, "--max-connections", 16, "--threads", 2)
    try:
        slow = socket.create_connection(("127.0.0.1", s.port))
        slow.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"inst")
        half = socket.create_connection(("127.0.0.1", s.port))
        half.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
        st, rb, _ = s.predict(BODIES[2])
        check("slow clients do not block others", st == 200 and rows_of(rb) == [EXP_A[2]], rb[:200].decode(errors="replace"))
        for name, sk in (("slow body", slow), ("slow headers", half)):
            sk.settimeout(10 * SLOW)
            t0 = time.monotonic()
            try:
                data = sk.recv(4096)
                while data and b"HTTP/1.1" not in data:
                    data = sk.recv(4096)
            except (ConnectionResetError, socket.timeout):
                data = b""
            took = time.monotonic() - t0
            check("%s: closed by the per-connection timeout" % name, took < 8 * SLOW and b"200 OK" not in data, "took %.1fs got %r" % (took, data[:100]))
            sk.close()
        # many connections at once: 64 idle sockets against a limit of 16 (libmicrohttpd
        # leaves those over the limit unaccepted); the idle ones time out and a new
        # request is still answered
        socks = []
        for _ in range(64):
            try:
                socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=2))
            except OSError:
                pass
        t0 = time.monotonic()
        st, rb, _ = s.predict(BODIES[4])
        check("64 idle connections: a new request still answered", st == 200 and rows_of(rb) == [EXP_A[4]], rb[:200].decode(errors="replace"))
        check("... within the idle timeouts", time.monotonic() - t0 < 10 * SLOW, "%.1fs" % (time.monotonic() - t0))
        for sk in socks:
            sk.close()
        # and 48 requests at once: each answered 200 with its row, or refused; never a 5xx
        res = []

        def send(i):
            try:
                st, rb, _ = s.predict(BODIES[i % 16])
                res.append((st, rows_of(rb) == [EXP_A[i % 16]] if st == 200 else False))
            except OSError:
                res.append((0, True))
        ts = [threading.Thread(target=send, args=(i,)) for i in range(48)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        check("48 concurrent requests: 200 and right, or refused", all((st == 200 and ok) or st == 0 for st, ok in res) and sum(st == 200 for st, _ in res) >= 16,
              repr(res))
        st, rb, _ = s.predict(BODIES[3])
        check("still serving afterwards", st == 200 and rows_of(rb) == [EXP_A[3]], rb[:200].decode(errors="replace"))
    finally:
        stopped_clean("slow_and_many_clients", s)


def load_thread(s, stop, out, rows=(0, 1, 2, 3), accept=(EXP_A, EXP_B)):
    """Sends good requests until stop is set; records (status, right) per request."""
    i = 0
    while not stop.is_set() and i < 100000:
        k = rows[i % len(rows)]
        try:
            st, rb, _ = s.predict(BODIES[k])
            out.append((st, st == 200 and any(rows_of(rb) == [e[k]] for e in accept)))
        except Exception as e:
            out.append((0, False, repr(e)))
        i += 1


def hot_reload_under_load(*extra):
    live = os.path.join(tmp, "live.dlc")
    helper("model", live, 1)
    s = Server([("m", live)], "--poll-ms", 50, "--threads", 2, *extra)
    stop = threading.Event()
    res = []
    ts = [threading.Thread(target=load_thread, args=(s, stop, res)) for _ in range(3)]
    try:
        [t.start() for t in ts]
        time.sleep(0.3)

        def version():
            return int(json.loads(s.req("GET", "/v1/models/m")[1])["model_version_status"][0]["version"])

        def reload_errors():
            return int(re.search(r'result="error"\} (\d+)', s.req("GET", "/metrics")[1].decode()).group(1))

        def wait_for(fn, want):
            deadline = time.monotonic() + 10 * SLOW
            while fn() < want and time.monotonic() < deadline:
                time.sleep(0.02)
        for k in range(6):                                        # dl_save: written beside, renamed over
            helper("model", live, 2 if k % 2 == 0 else 1)
            wait_for(version, k + 2)
            time.sleep(0.1)
        with open(live + ".bad", "wb") as f:                      # a bad file, also moved in whole
            f.write(b"DLCM this is not a model")
        os.replace(live + ".bad", live)
        wait_for(reload_errors, 1)
        s.p.send_signal(signal.SIGHUP)                            # and SIGHUP on the bad file
        wait_for(reload_errors, 2)
        time.sleep(0.1)
        stop.set()
        [t.join() for t in ts]
        bad = [r for r in res if r[0] != 200 or not r[1]]
        check("requests during 6 swaps: none failed", len(res) > 20 and not bad, "%d requests, bad %r" % (len(res), bad[:5]))
        st, rb, _ = s.req("GET", "/v1/models/m")
        v = int(json.loads(rb)["model_version_status"][0]["version"])
        check("each swap is a new version (7)", v == 7, "version %d; log:\n%s" % (v, s.text()[-1500:]))
        st, rb, _ = s.predict(BODIES[0])
        check("the bad file keeps the last good model serving", st == 200 and rows_of(rb) == [EXP_A[0]], rb[:200].decode())
        st, rb, _ = s.req("GET", "/metrics")
        t = rb.decode()
        check("reloads counted: 6 ok, 2 errors", 'result="ok"} 6' in t and 'result="error"} 2' in t, t[-1500:])
        check("the error is logged with the file", re.search(r"model .m.: .*live.dlc: .*; still serving the loaded version", s.text()), s.text()[-600:])
        helper("model", live, 2)
        wait_for(version, 8)
        st, rb, _ = s.predict(BODIES[0])
        check("a good file after the bad one is served", st == 200 and rows_of(rb) == [EXP_B[0]], rb[:200].decode())
    finally:
        stop.set()
        stopped_clean("hot_reload_under_load", s)


def sigterm_with_requests_in_flight():
    # A long batch window holds requests in the queue when SIGTERM comes.
    s = Server([("m", MA)], "--max-batch", 1000, "--batch-timeout-us", 2000000, "--threads", 4)
    res = {}

    def send(i):
        try:
            res[i] = s.predict(BODIES[i])
        except Exception as e:
            res[i] = (0, repr(e).encode(), "")
    ts = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:   # all 8 queued (the /metrics request counts itself too)
        m = re.search(r"dlserve_inflight_requests (\d+)", s.req("GET", "/metrics")[1].decode())
        if int(m.group(1)) >= 9:
            break
        time.sleep(0.02)
    s.p.send_signal(signal.SIGTERM)
    [t.join() for t in ts]
    try:
        rc = s.p.wait(30 * SLOW)
    except subprocess.TimeoutExpired:
        rc = "still running"
    ok = all(res[i][0] == 200 and rows_of(res[i][1]) == [EXP_A[i]] for i in range(8))
    check("in-flight requests complete after SIGTERM", ok, repr({i: res[i][:2] for i in res})[:800])
    check("exit 0 after draining", rc == 0, "exit %r; %s" % (rc, s.text()[-1500:]))
    # The 8 predictions, and maybe the /metrics request that saw them: the server counts a
    # request until libmicrohttpd reports it complete, which can come after its reply.
    m = re.search(r"SIGTERM: stopping; (\d+) requests? in flight", s.text())
    check("the log says how many were in flight", m and int(m.group(1)) in (8, 9), s.text()[-800:])
    try:
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    check("nothing listens afterwards", refused)
    stopped_clean("sigterm", s)


def soak(seconds):
    s = Server([("m", MA)], "--threads", 2)
    stop = threading.Event()
    res = []
    rss = []
    ts = [threading.Thread(target=load_thread, args=(s, stop, res, tuple(range(16)), (EXP_A,))) for _ in range(4)]
    bad_codes = []
    try:
        [t.start() for t in ts]
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < seconds:
            for body, ctype in ((b'{"instances": [[1, 2', "application/json"), (b"", "application/json"),
                                (png_bytes(100000, 100000), "image/png"), (b"x" * 100, "image/png"), (BODIES[0], "text/xml")):
                st, _, _ = s.predict(body, ctype)
                if not 400 <= st < 500:
                    bad_codes.append(st)
                n += 1
            kb = int(re.search(r"VmRSS:\s+(\d+)", open("/proc/%d/status" % s.p.pid).read()).group(1))
            rss.append((time.monotonic() - t0, kb))
            time.sleep(0.5)
        stop.set()
        [t.join() for t in ts]
        failures = [r for r in res if r[0] != 200 or not r[1]]
        print("soak: %d good requests, %d failed; %d bad requests, %d not 4xx; RSS %d -> %d -> %d kB"
              % (len(res), len(failures), n, len(bad_codes), rss[0][1], rss[len(rss) // 2][1], rss[-1][1]))
        check("soak: 0 failed good requests", not failures, repr(failures[:5]))
        check("soak: every bad request 4xx", not bad_codes, repr(bad_codes[:5]))
        half = [kb for t, kb in rss if t >= seconds / 2]
        check("soak: RSS stops growing (second half within 2 MiB)", max(half) - min(half) <= 2048, repr(rss))
    finally:
        stop.set()
        stopped_clean("soak", s)


if not failed:
    if args.soak:
        def soak_under_load_and_bad_requests():
            soak(args.soak)
        case(soak_under_load_and_bad_requests)
    else:
        def hot_reload_under_load_without_batching():   # each HTTP thread predicts its own request
            hot_reload_under_load("--max-batch", 1)
        for c in (good_requests, json_parsers_agree, batched_equals_alone, bad_requests, slow_and_many_clients, hot_reload_under_load,
                  hot_reload_under_load_without_batching, sigterm_with_requests_in_flight):
            case(c)
print("test_serve.py: %d passed, %d failed" % (passed, failed))
subprocess.run(["rm", "-rf", tmp])
sys.exit(1 if failed else 0)
