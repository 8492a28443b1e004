#!/usr/bin/env bash
# bench.sh BUILD_DIR - the benchmarks behind `make bench` (never part of make check).
#   1. peerbench's compare.sh with libipc rows, when ../shared/peerbench exists
#      (PEERBENCH=dir to point elsewhere); else libipc's own lat/thr rows;
#   2. libipc batch throughput (--batch) and connection set-up (conn);
#   3. tests/bench-scale.sh (ipc-scale: 1, 10 and 100 concurrent connections,
#      interleaved, medians), and 1,000 idle connections;
#   4. tests/bench-reqrep.sh: issue 11's server workload, libipc next to
#      ZeroMQ REQ/REP and nng req0/rep0 (built only here, when installed).
# Every line is one JSON object; compare ratios from one run only.
set -u
B=${1:-build}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PEERBENCH=${PEERBENCH:-$HERE/../shared/peerbench}
TMP=$(mktemp -d /tmp/ipc-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
SCHEMES=${SCHEMES:-"unix tcp shm mq"}

addr() { # a fresh address of scheme $1
	case $1 in
	unix) echo "unix:$TMP/b$RANDOM.sock" ;;
	tcp) echo "tcp:127.0.0.1:0" ;;
	mq) echo "mq:/ipcbench-$$-$RANDOM" ;;
	*) echo "$1:ipcbench-$$-$RANDOM" ;;
	esac
}

if [ -x "$PEERBENCH/compare.sh" ]; then
	echo "== peerbench compare.sh (medians of ${REPS:-3} interleaved runs)"
	PEERBENCH_BIN=${PEERBENCH_BIN:-$TMP/pb} "$PEERBENCH/compare.sh" "$B/ipc-bench"
else
	echo "== peerbench not found at $PEERBENCH: libipc rows only"
	for s in $SCHEMES; do
		for size in 64 4096; do "$B/ipc-bench" lat "$(addr "$s")" --size $size --count 20000; done
		for sc in 64:200000 4096:100000 1048576:2000; do
			"$B/ipc-bench" thr "$(addr "$s")" --size "${sc%:*}" --count "${sc#*:}"
		done
	done
fi

echo "== batch API (thr --batch 64) and connection set-up (conn)"
for s in $SCHEMES; do
	"$B/ipc-bench" thr "$(addr "$s")" --size 64 --count 1000000 --batch 64
	"$B/ipc-bench" conn "$(addr "$s")" --count 2000
done

echo "== many connections on one listener (ipc-scale)"
SCHEMES="$SCHEMES" bash "$HERE/tests/bench-scale.sh" "$B"
for s in $SCHEMES; do
	# mq: 1,000 connections need 2,000 queues, above the kernel's
	# queues_max (256 per namespace): the line says how many were made
	"$B/ipc-scale" "$(addr "$s")" --idle 1000 || true
done

echo "== issue 11's server workload: 50 client processes, one server thread, next to ZeroMQ and nng"
bash "$HERE/tests/bench-reqrep.sh" "$B"
