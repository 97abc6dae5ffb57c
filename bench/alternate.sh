#!/usr/bin/env bash
# bench/alternate.sh: time two twinbox binaries on one synced pair, alternating
# run by run, so that both see the same machine load. Prints medians.
#
#   bench/alternate.sh OP PAIRDIR BIN_A BIN_B [RUNS]
#
# OP is nochange, flag or new; PAIRDIR holds A/ and B/ (already synced) and
# home/. Each run of OP first makes the change in A (a flag rename in cur/,
# or one ~4 KB message delivered into new/), then times `BIN sync --json A B`
# (wall time from EPOCHREALTIME, process start included).
set -euo pipefail
op=$1 dir=$2 bina=$3 binb=$4 runs=${5:-9}
export HOME=$dir/home XDG_STATE_HOME=$dir/home/state XDG_CONFIG_HOME=$dir/home/config XDG_CACHE_HOME=$dir/home/cache
mkdir -p "$HOME"

new_message() {
	local md=$1 i=$2 base tmpf size lines
	base="$(date +%s).M$((RANDOM * 30 + i))P$$.altbench"
	tmpf=$md/tmp/$base
	{
		printf 'Return-Path: <bench-new@example.net>\nMessage-ID: <alt-%s-%s@example.net>\n' "$i" "${EPOCHREALTIME/./}"
		printf 'Date: %s\nFrom: New <bench-new@example.net>\nTo: Bench <bench@example.org>\nSubject: new %s\n\n' "$(date -R)" "$i"
		for _ in $(seq 55); do printf 'The quick brown fox jumps over the lazy dog, again and again.\n'; done
	} >"$tmpf"
	size=$(stat -c %s "$tmpf")
	lines=$(wc -l <"$tmpf")
	mv "$tmpf" "$md/new/$base,S=$size,W=$((size + lines))"
}
add_seen_flag() {
	local md=$1 f flags nf
	f=$(find "$md/cur" -maxdepth 1 -type f -name '*:2,*' ! -name '*:2,*S*' -print -quit)
	[[ -n $f ]] || { echo "no unseen message left" >&2; exit 1; }
	flags=${f##*:2,}
	nf=$(printf '%sS' "$flags" | fold -w1 | sort | tr -d '\n')
	mv "$f" "${f%:2,*}:2,$nf"
}
one() { # BIN I -> prints ms
	case $op in
	new) new_message "$dir/A" "$2" ;;
	flag) add_seen_flag "$dir/A" ;;
	nochange) ;;
	*) echo "unknown op $op" >&2; exit 1 ;;
	esac
	local t0 t1 rc=0
	t0=$EPOCHREALTIME
	"$1" sync --json "$dir/A" "$dir/B" >/dev/null 2>"$dir/err" || rc=$?
	t1=$EPOCHREALTIME
	[[ $rc == 0 ]] || { echo "sync exit $rc: $(head -c 500 "$dir/err")" >&2; }
	awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f\n", (b-a)*1000}'
}
median() { sort -g | awk '{v[NR]=$1} END{if(NR%2) print v[(NR+1)/2]; else printf "%.2f\n",(v[NR/2]+v[NR/2+1])/2}'; }
ta=() tb=()
"$bina" sync "$dir/A" "$dir/B" >/dev/null 2>&1 || true # settle
for i in $(seq "$runs"); do
	if ((i % 2)); then
		ta+=("$(one "$bina" "$i")"); tb+=("$(one "$binb" "$i")")
	else
		tb+=("$(one "$binb" "$i")"); ta+=("$(one "$bina" "$i")")
	fi
done
ma=$(printf '%s\n' "${ta[@]}" | median)
mb=$(printf '%s\n' "${tb[@]}" | median)
echo "$op $(basename "$dir") runs=$runs A=$(basename "$bina") median ${ma} ms [${ta[*]}]  B=$(basename "$binb") median ${mb} ms [${tb[*]}]  B/A=$(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", b/a}')"
