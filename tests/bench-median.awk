# bench-median.awk - shared by tests/bench-reqrep.sh and tests/bench-scale.sh
# (awk -f tests/bench-median.awk -f PROGRAM): reading JSON lines, keeping
# the run with the median value per entry.
#   jget(line, key)     one field of a JSON line ("" when absent)
#   run(k, line, v)     a run of entry k with value v
#   failed_run(k, err)  a failed run of entry k
#   medians()           fills med[k] (the median run's line), lo[k], hi[k]
#                       (lowest, highest value) and order[1..nentries]
#                       (entries as first seen); fail[k]: a failure's error
function jget(line, key,    re, s) {
	re = "\"" key "\":(\"[^\"]*\"|[-+0-9.eE]+)"
	if (!match(line, re)) return ""
	s = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
	gsub(/"/, "", s)
	return s
}
function entry(k) {
	if (!(k in seen)) { seen[k] = 1; order[++nentries] = k }
}
function run(k, line, v,    m) {
	entry(k)
	m = ++nok[k]; runs[k, m] = line; val[k, m] = v
}
function failed_run(k, err) {
	entry(k)
	fail[k] = err
}
function medians(    i, k, m, a, b, t, o) {
	for (i = 1; i <= nentries; i++) {
		k = order[i]; m = nok[k] + 0
		if (!m) continue
		for (a = 1; a <= m; a++) o[a] = a
		for (a = 2; a <= m; a++) for (b = a; b > 1 && val[k, o[b]] < val[k, o[b-1]]; b--) { t = o[b]; o[b] = o[b-1]; o[b-1] = t }
		med[k] = runs[k, o[int((m + 1) / 2)]]
		lo[k] = val[k, o[1]]; hi[k] = val[k, o[m]]
	}
}
