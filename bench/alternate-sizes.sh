#!/usr/bin/env bash
# bench/alternate-sizes.sh: time two twinbox binaries on two synced pairs
# (a small and a large corpus), interleaving all four combinations run by
# run so that they see the same machine load. Prints the median of each and
# the large/small ratio of each binary (the issue-2 target "no-change sync
# at 50k no more than 1.2x the 10k figure" is such a ratio).
#
#   bench/alternate-sizes.sh OP SMALLPAIR LARGEPAIR BIN_A BIN_B [RUNS]
#
# OP is nochange, flag or new, as in bench/alternate.sh. Each PAIR holds
# A/ and B/ (already synced) and home/. Besides the wall time (process
# start included) it reports the CPU time (user+system, from rusage, by
# bench/timecmd): on a machine others share, the steadier of the two.
set -euo pipefail
op=$1 small=$2 large=$3 bina=$4 binb=$5 runs=${6:-15}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tdir=$(mktemp -d)
trap 'rm -rf "$tdir"' EXIT
go build -C "$ROOT" -o "$tdir/timecmd" ./bench/timecmd

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
	[[ -n $f ]] || { echo "no unseen message left in $md" >&2; exit 1; }
	flags=${f##*:2,}
	nf=$(printf '%sS' "$flags" | fold -w1 | sort | tr -d '\n')
	mv "$f" "${f%:2,*}:2,$nf"
}
one() { # BIN PAIRDIR I -> prints ms
	local bin=$1 dir=$2 i=$3
	case $op in
	new) new_message "$dir/A" "$i" ;;
	flag) add_seen_flag "$dir/A" ;;
	nochange) ;;
	*) echo "unknown op $op" >&2; exit 1 ;;
	esac
	local rc=0
	HOME=$dir/home XDG_STATE_HOME=$dir/home/state XDG_CONFIG_HOME=$dir/home/config XDG_CACHE_HOME=$dir/home/cache \
		"$tdir/timecmd" -o "$tdir/t" "$bin" sync --json "$dir/A" "$dir/B" >/dev/null 2>"$dir/err" || rc=$?
	[[ $rc == 0 ]] || { echo "sync exit $rc: $(head -c 500 "$dir/err")" >&2; }
	awk '{printf "%.2f/%.2f\n", $1, $2}' "$tdir/t" # wall/cpu
}
median() { sort -g | awk '{v[NR]=$1} END{if(NR%2) print v[(NR+1)/2]; else printf "%.2f\n",(v[NR/2]+v[NR/2+1])/2}'; }
declare -A T
combos=("a small" "a large" "b small" "b large")
for d in "$small" "$large"; do # settle both pairs with both binaries
	for b in "$bina" "$binb"; do
		HOME=$d/home XDG_STATE_HOME=$d/home/state XDG_CONFIG_HOME=$d/home/config XDG_CACHE_HOME=$d/home/cache \
			"$b" sync "$d/A" "$d/B" >/dev/null 2>&1 || true
	done
done
for i in $(seq "$runs"); do
	for k in 0 1 2 3; do # rotate the order run by run
		c=${combos[$(((k + i) % 4))]}
		who=${c% *} size=${c#* }
		bin=$bina; [[ $who == b ]] && bin=$binb
		dir=$small; [[ $size == large ]] && dir=$large
		T[$c]+="$(one "$bin" "$dir" "$i") "
	done
done
declare -A M C
for c in "${combos[@]}"; do
	M[$c]=$(echo "${T[$c]}" | tr ' ' '\n' | grep . | cut -d/ -f1 | median)
	C[$c]=$(echo "${T[$c]}" | tr ' ' '\n' | grep . | cut -d/ -f2 | median)
done
echo "$op runs=$runs small=$(basename "$small") large=$(basename "$large") (each run: wall/cpu ms)"
for c in "${combos[@]}"; do
	who=${c% *}; bin=$bina; [[ $who == b ]] && bin=$binb
	echo "  $(basename "$bin") ${c#* }: median wall ${M[$c]} ms, cpu ${C[$c]} ms [${T[$c]}]"
done
ratios() { # LABEL MAP...
	awk -v l="$1" -v as="$2" -v al="$3" -v bs="$4" -v bl="$5" -v na="$(basename "$bina")" -v nb="$(basename "$binb")" \
		'BEGIN{printf "  %s large/small: %s %.2f, %s %.2f; B/A: small %.2f, large %.2f\n", l, na, al/as, nb, bl/bs, bs/as, bl/al}'
}
ratios wall "${M[a small]}" "${M[a large]}" "${M[b small]}" "${M[b large]}"
ratios cpu "${C[a small]}" "${C[a large]}" "${C[b small]}" "${C[b large]}"
