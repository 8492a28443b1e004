#!/usr/bin/env bash
# bench-scale.sh [BUILD_DIR] - many connections on one listener (ipc-scale),
# every transport, REPS interleaved repetitions, the median kept (part of
# `make bench` through tests/bench.sh; also runs alone).
#
# For each transport and each connection count N in CONNS: one client
# process with N connections, a forked server echoing on all of them
# through ipc_poll, every connection keeping one 64 B request in flight,
# TOTAL round trips in all.  Rep 1 of every entry runs, then rep 2...;
# the table at the end gives per entry the run with the median messages/s
# and each transport's median over unix's at the same N (above 1 = faster
# than unix).  Every JSON line also goes to $OUT.
#
# Knobs: REPS=3 CONNS="1 10 100" TOTAL=200000 SCHEMES="unix tcp shm mq"
#        OUT=/tmp/bench-scale.jsonl
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$HERE/build}" && pwd) || exit 1
REPS=${REPS:-3}
CONNS=${CONNS:-"1 10 100"}
TOTAL=${TOTAL:-200000}
SCHEMES=${SCHEMES:-"unix tcp shm mq"}
OUT=${OUT:-/tmp/bench-scale.jsonl}
TMP=$(mktemp -d /tmp/ipc-bench-scale.XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT

addr() { # a fresh address of scheme $1
	case $1 in
	unix) echo "unix:$TMP/s$RANDOM.sock" ;;
	tcp) echo "tcp:127.0.0.1:0" ;;
	mq) echo "mq:/ipcscale-$$-$RANDOM" ;;
	*) echo "$1:ipcscale-$$-$RANDOM" ;;
	esac
}

echo "== ipc-scale: $TOTAL round trips of 64 B over N connections (N in $CONNS), $REPS interleaved reps;" \
	"$(date -u '+%Y-%m-%d %H:%M:%SZ'), $(nproc) cpu(s), $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT" || exit 1
failed=0
for rep in $(seq 1 "$REPS"); do
	for n in $CONNS; do
		for s in $SCHEMES; do
			line=$("$B/ipc-scale" "$(addr "$s")" --conns "$n" --count $((TOTAL / n)) 2>&1)
			if [ "${line:0:1}" = "{" ]; then
				echo "$line" | tee -a "$OUT"
			else
				failed=$((failed + 1))
				echo "{\"bench\":\"scale\",\"transport\":\"$s\",\"conns\":$n,\"failed\":1,\"error\":\"${line//\"/\'}\"}" |
					tee -a "$OUT"
			fi
		done
	done
done

awk -f "$HERE/tests/bench-median.awk" -f /dev/stdin "$OUT" <<'AWK'
{
	k = jget($0, "transport") ":" jget($0, "conns")
	if (jget($0, "failed") != "") failed_run(k, jget($0, "error"))
	else run(k, $0, jget($0, "msgs_per_s") + 0)
}
END {
	medians()
	printf "\nmedian of the runs by messages/s; x_unix = msgs/s over unix's at the same connection count\n"
	printf "%-6s %6s %12s %12s %12s %10s %10s %7s\n", "trans", "conns", "msgs/s", "lowest", "highest", "p50_us", "p99_us", "x_unix"
	for (i = 1; i <= nentries; i++) {
		k = order[i]; split(k, kt, ":")
		if (!(k in med)) { printf "%-6s %6s FAILED: %s\n", kt[1], kt[2], substr(fail[k], 1, 80); continue }
		s = med[k]; xu = "-"
		if (("unix:" kt[2]) in med) xu = sprintf("%.2f", jget(s, "msgs_per_s") / jget(med["unix:" kt[2]], "msgs_per_s"))
		printf "%-6s %6s %12.0f %12.0f %12.0f %10.0f %10.0f %7s\n", kt[1], kt[2], jget(s, "msgs_per_s"), lo[k], hi[k],
			jget(s, "rtt_p50_ns") / 1000, jget(s, "rtt_p99_ns") / 1000, xu
	}
}
AWK
echo "raw JSON: $OUT; $failed failed run(s); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$failed" -eq 0 ]
