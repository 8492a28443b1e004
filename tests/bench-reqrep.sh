#!/usr/bin/env bash
# bench-reqrep.sh [BUILD_DIR] - issue 11's server workload, libipc next to
# ZeroMQ and nng, from one run (part of `make bench`; also runs alone).
#
# One single-threaded server process, CLIENTS client processes doing COUNT
# request/response round trips of 0..MAX_SIZE bytes each, every byte
# checked (tools/reqrep.h): build/reqrep-bench on every libipc transport,
# build/bench/zmq-reqrep (REQ/REP) and build/bench/nng-reqrep (req0/rep0) on
# ipc and tcp.  The peers are built here (make bench-peers) only when their
# library's header is installed; otherwise their rows are left out.
#
# Each entry runs REPS times, interleaved (rep 1 of every entry, then rep 2
# ...), and the run with the median round trips/s is kept.  Every JSON line
# (with the load average before it) goes to stdout and to $OUT; the table
# at the end gives, for each libipc transport, its round trips/s over
# ZeroMQ's and nng's on the comparable transport (unix, shm, mq: their ipc;
# tcp: their tcp): above 1 = libipc faster.  How quiet the machine was:
# the load average before each run (it still counts the 51 processes of
# the run before) and, per run, "others_cpu_s": CPU time taken by other
# processes while the run was timed (tools/reqrep.h).
#
# Knobs: REPS=3 CLIENTS=50 COUNT=2000 MAX_SIZE=65536 TIMEOUT=600 (s/run)
#        OUT=/tmp/bench-reqrep.jsonl  LIBIPC="unix tcp shm mq"
#        PEERS="zmq:ipc zmq:tcp nng:ipc nng:tcp"
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "${1:-$HERE/build}" && pwd) || exit 1
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-50}
COUNT=${COUNT:-2000}
MAX_SIZE=${MAX_SIZE:-65536}
TIMEOUT=${TIMEOUT:-600}
OUT=${OUT:-/tmp/bench-reqrep.jsonl}
LIBIPC=${LIBIPC-"unix tcp shm mq"}
PEERS=${PEERS-"zmq:ipc zmq:tcp nng:ipc nng:tcp"}
CC=${CC:-cc}

have_header() { printf '#include <%s>\n' "$1" | "$CC" -E -x c - >/dev/null 2>&1; }

entries=()
for t in $LIBIPC; do entries+=("libipc:$t"); done
for p in $PEERS; do
	impl=${p%%:*}
	case $impl in
	zmq) hdr=zmq.h ;;
	nng) hdr=nng/nng.h ;;
	*) echo "bench-reqrep: unknown peer $impl" >&2; continue ;;
	esac
	if ! have_header "$hdr"; then
		echo "bench-reqrep: <$hdr> not installed: no $impl rows (make -C ../shared/peerbench deps)" >&2
		continue
	fi
	make -s -C "$HERE" BUILD="$B" BENCH_PEERS="$impl-reqrep" bench-peers >&2 || continue
	entries+=("$p")
done

echo "== reqrep: $CLIENTS client processes x $COUNT round trips of 0..$MAX_SIZE B, one server thread;" \
	"$(date -u '+%Y-%m-%d %H:%M:%SZ'), $(nproc) cpu(s), $(uname -sr), $REPS interleaved reps;" \
	"load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT" || exit 1
failed=0
for rep in $(seq 1 "$REPS"); do
	for e in "${entries[@]}"; do
		impl=${e%%:*} tr=${e#*:}
		if [ "$impl" = libipc ]; then prog=$B/reqrep-bench; else prog=$B/bench/$impl-reqrep; fi
		echo "# rep $rep $impl $tr: load average $(cut -d' ' -f1-3 /proc/loadavg)"
		err=$(mktemp /tmp/bench-reqrep.err.XXXXXX)
		line=$(timeout "$TIMEOUT" "$prog" "$tr" --clients "$CLIENTS" --count "$COUNT" \
			--max-size "$MAX_SIZE" --timeout "$TIMEOUT" 2>"$err")
		rc=$?
		if [ $rc -eq 0 ] && [ "${line:0:1}" = "{" ]; then
			echo "$line" | tee -a "$OUT"
		else
			failed=$((failed + 1))
			why=$(sort "$err" | uniq -c | sort -rn | head -3 | tr -s ' \n' ' ')
			echo "{\"impl\":\"$impl\",\"bench\":\"reqrep\",\"transport\":\"$tr\",\"failed\":$rc,\"error\":\"${why//\"/\'}\"}" |
				tee -a "$OUT"
		fi
		rm -f "$err"
	done
done

awk -f "$HERE/tests/bench-median.awk" -f /dev/stdin "$OUT" <<'AWK'
{
	k = jget($0, "impl") ":" jget($0, "transport")
	if (jget($0, "failed") != "") failed_run(k, jget($0, "error"))
	else run(k, $0, jget($0, "rt_per_s") + 0)
}
END {
	medians()
	printf "\nmedian of the runs by round trips/s; x_zmq, x_nng = libipc round trips/s over the peer's\n"
	printf "(unix, shm, mq against their ipc, tcp against their tcp): above 1 = libipc faster\n"
	printf "%-7s %-5s %7s %9s %9s %9s %9s %9s %8s %8s %6s %6s\n", "impl", "trans", "wall_s", "rt/s", "p50_us", "p99_us",
		"srv_MiB", "srv_cpu", "cli_cpu", "oth_cpu", "x_zmq", "x_nng"
	for (i = 1; i <= nentries; i++) {
		k = order[i]; split(k, kt, ":")
		if (!(k in med)) { printf "%-7s %-5s FAILED: %s\n", kt[1], kt[2], substr(fail[k], 1, 90); continue }
		s = med[k]; xz = "-"; xn = "-"
		if (kt[1] == "libipc") {
			peer = kt[2] == "tcp" ? "tcp" : "ipc"
			if (("zmq:" peer) in med) xz = sprintf("%.2f", jget(s, "rt_per_s") / jget(med["zmq:" peer], "rt_per_s"))
			if (("nng:" peer) in med) xn = sprintf("%.2f", jget(s, "rt_per_s") / jget(med["nng:" peer], "rt_per_s"))
		}
		printf "%-7s %-5s %7.2f %9.0f %9.0f %9.0f %9.1f %9.2f %8.2f %8.2f %6s %6s\n", kt[1], kt[2], jget(s, "wall_s"),
			jget(s, "rt_per_s"), jget(s, "rtt_p50_ns") / 1000, jget(s, "rtt_p99_ns") / 1000,
			jget(s, "server_rss_kib") / 1024, jget(s, "server_cpu_s"), jget(s, "clients_cpu_s"),
			jget(s, "others_cpu_s"), xz, xn
	}
}
AWK
echo "raw JSON: $OUT; $failed failed run(s); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$failed" -eq 0 ]
