#!/usr/bin/env bash
# bench_tls.sh BUILD [PEERBENCH_BIN] - libipc tls: next to tcp: and nng's
# tls+tcp, in one run (BENCHMARKS.md, "tls").  Makes a throw-away CA and a
# server certificate for localhost with the openssl command, then runs each
# row REPS times interleaved (rep 1 of every row, then rep 2 ...) and prints
# every JSON line, then the median per row.
#   REPS=3 LAT_COUNT=20000 THR_COUNT=2000 CONN_COUNT=1000
set -u
B=${1:?usage: bench_tls.sh BUILD [PEERBENCH_BIN]}
PB=${2:-${PEERBENCH_BIN:-../shared/peerbench/bin}}
REPS=${REPS:-3}
LAT_COUNT=${LAT_COUNT:-20000}
THR_COUNT=${THR_COUNT:-2000}
CONN_COUNT=${CONN_COUNT:-1000}
D=$(mktemp -d /tmp/bench-tls.XXXXXX)
trap 'rm -rf "$D"' EXIT
(
	cd "$D" &&
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
		-days 2 -subj '/CN=bench CA' -addext basicConstraints=critical,CA:TRUE &&
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr \
		-subj '/CN=localhost' &&
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >srv.ext &&
	openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
		-extfile srv.ext -out srv.pem
) >/dev/null 2>&1 || { echo "bench_tls: openssl failed" >&2; exit 1; }
TLSOPT="--cert $D/srv.pem --key $D/srv.key --ca $D/ca.pem"

rows=(
	"nng lat tls --size 64 --count $LAT_COUNT"
	"ipc lat tls:127.0.0.1:0 --size 64 --count $LAT_COUNT $TLSOPT"
	"ipc lat tcp:127.0.0.1:0 --size 64 --count $LAT_COUNT"
	"nng thr tls --size 1M --count $THR_COUNT"
	"ipc thr tls:127.0.0.1:0 --size 1M --count $THR_COUNT $TLSOPT"
	"ipc thr tcp:127.0.0.1:0 --size 1M --count $THR_COUNT"
	"nng thr tls --size 64 --count 100000"
	"ipc thr tls:127.0.0.1:0 --size 64 --count 100000 $TLSOPT"
	"ipc thr tcp:127.0.0.1:0 --size 64 --count 100000"
	"ipc conn tls:127.0.0.1:0 --count $CONN_COUNT $TLSOPT"
	"ipc conn tcp:127.0.0.1:0 --count $CONN_COUNT"
)
out=$(mktemp)
for r in $(seq "$REPS"); do
	for i in "${!rows[@]}"; do
		set -- ${rows[$i]}
		prog=$1
		shift
		if [ "$prog" = nng ]; then
			[ -x "$PB/nng-bench" ] || continue
			line=$("$PB/nng-bench" "$@" 2>/dev/null)
		else
			line=$("$B/ipc-bench" "$@" 2>/dev/null)
		fi
		echo "$line"
		echo "$i $line" >>"$out"
	done
done
echo "== medians of $REPS (row: impl bench transport size value)"
for i in "${!rows[@]}"; do
	grep "^$i " "$out" | cut -d' ' -f2- | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
if not rows:
    sys.exit()
key = {"lat": "rtt_p50_ns", "thr": "mb_per_s", "conn": "conns_per_s"}[rows[0]["bench"]]
if rows[0]["bench"] == "thr" and rows[0]["size"] < 4096:
    key = "msgs_per_s"
v = sorted(r[key] for r in rows)[len(rows) // 2]
r = rows[0]
print(r["impl"], r["bench"], r["transport"], r.get("size", "-"), key, v)
'
done
rm -f "$out"
