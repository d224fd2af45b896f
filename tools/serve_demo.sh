#!/bin/sh
# serve_demo.sh MODEL DATA_DIR [B] - make demo's serving step: starts dlcore-serve on
# MODEL in the background, asks it about two test images with curl (one as JSON, one
# as a PNG), prints each prediction next to the true label and an excerpt of /metrics,
# then stops the server with SIGTERM and checks that it exited cleanly.
set -u
model=$1; data=$2; B=${3:-build}
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
names="T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Ankle-boot"
name() { case "$data" in *fashion*) echo "$names" | cut -d' ' -f$(($1 + 1)) ;; *) echo "digit $1" ;; esac; }
# argmax of the first row of {"predictions": [[...]]}
argmax() { /usr/bin/python3 -c 'import json, sys; p = json.load(open(sys.argv[1]))["predictions"][0]; print(p.index(max(p)))' "$1"; }

$B/dlcore-serve --model mnist="$model" --listen 127.0.0.1:0 >"$tmp/log" 2>&1 &
pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] || { echo "serve_demo: the server did not start:"; cat "$tmp/log"; exit 1; }
sed 's/^/    server: /' "$tmp/log"
url=http://127.0.0.1:$port

echo "\$ curl -s $url/v1/models/mnist"
curl -s "$url/v1/models/mnist" || exit 1

i=0
$B/serve_helper body "$data" $i 1 rows "$tmp/x.json" || exit 1
label=$($B/serve_helper png "$data" $i "$tmp/x.png" 1) || exit 1
echo "\$ curl -s -H 'Content-Type: application/json' -d @x.json $url/v1/models/mnist:predict    # test image $i, 784 floats"
curl -s -H 'Content-Type: application/json' --data-binary @"$tmp/x.json" "$url/v1/models/mnist:predict" >"$tmp/p1" || exit 1
cut -c1-150 "$tmp/p1"
p=$(argmax "$tmp/p1")
echo "    JSON:  predicted $p ($(name "$p")), true label $label ($(name "$label"))"

i=1
label=$($B/serve_helper png "$data" $i "$tmp/y.png" 1) || exit 1
echo "\$ curl -s -H 'Content-Type: image/png' --data-binary @y.png $url/v1/models/mnist:predict    # test image $i as a 28x28 PNG"
curl -s -H 'Content-Type: image/png' --data-binary @"$tmp/y.png" "$url/v1/models/mnist:predict" >"$tmp/p2" || exit 1
cut -c1-150 "$tmp/p2"
p=$(argmax "$tmp/p2")
echo "    PNG:   predicted $p ($(name "$p")), true label $label ($(name "$label"))"

echo "\$ curl -s $url/metrics | grep -E '^dlserve_(requests|predicted|batch_size_count|model_version)|^process_resident'"
curl -s "$url/metrics" | grep -E '^dlserve_(requests_total|predicted_class|batch_size_count|model_version)|^process_resident'

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
tail -n 2 "$tmp/log" | sed 's/^/    server: /'
[ "$rc" -eq 0 ] && echo "dlcore-serve stopped cleanly (exit 0)" || { echo "serve_demo: the server exited with $rc"; exit 1; }
