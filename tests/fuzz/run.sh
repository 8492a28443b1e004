#!/bin/sh
# run.sh BUILDDIR SECONDS TARGET... - run each libFuzzer target for SECONDS
# on a scratch copy of its committed corpus (tests/fuzz/corpus/<target>),
# print "<target>: N execs", then replay the committed corpus.  Exits
# non-zero if any run or replay finds a crash, leak or timeout; the
# offending input is left in BUILDDIR/crash-<target>-*.
b=$1 secs=$2
shift 2
status=0
for bin in "$@"; do
	t=$(basename "$bin")
	src=tests/fuzz/corpus/$t
	work=$b/corpus/$t
	rm -rf "$work" && mkdir -p "$work" "$src"
	cp "$src"/* "$work"/ 2>/dev/null
	log=$b/$t.log
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$b/crash-$t-" "$work" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
	echo "$t: ${runs:-0} execs in ${secs} s ($(ls "$work" | wc -l) corpus entries)"
	if [ $rc -ne 0 ]; then
		echo "$t: FINDING (exit $rc); log $log:"
		grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 20
		status=1
	fi
	if ls "$src"/* >/dev/null 2>&1; then
		if "$bin" -runs=1 "$src"/* >"$log.replay" 2>&1; then
			echo "$t: corpus replay ok ($(ls "$src" | wc -l) inputs)"
		else
			echo "$t: corpus replay FAILED; log $log.replay"
			grep -E 'ERROR|SUMMARY' "$log.replay" | head -n 10
			status=1
		fi
	fi
done
exit $status
