#!/usr/bin/env bash
# The cost of the scan's second look before a Missing verdict (a folder gone
# with no DELETE logged: rm -rf, a wiped root): the scan waits 100 ms, reads
# dovecot.mailbox.log again and lists the folders once more. Two syncs that
# each make one empty folder on one side, interleaved, ROUNDS each, on the
# same roots (20 folders of 20 messages) with the same binary:
#   baseline: a folder new on A, made on B (no Missing verdict);
#   measured: an empty folder rm -rf'd on A, restored there from B.
# Prints every time and the medians (ms) and their difference and ratio.
# Usage: bench/missing-recheck.sh   (TWINBOX=path skips the build; ROUNDS=21)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-21}
BIN=${TWINBOX:-}
if [ -z "$BIN" ]; then
	CGO_ENABLED=0 go build -o bin/twinbox .
	BIN=$PWD/bin/twinbox
fi
W=$(mktemp -d /tmp/twinbox-missing-recheck.XXXXXX)
trap 'rm -rf "$W"' EXIT
A=$W/A B=$W/B
mkdir -p "$A"/{cur,new,tmp} "$B"/{cur,new,tmp} "$A"/.E/{cur,new,tmp}
for f in $(seq 1 20); do
	mkdir -p "$A/.F$f"/{cur,new,tmp}
	for m in $(seq 1 20); do
		printf 'Subject: m%s\r\n\r\nbody %s %s\r\n' "$m" "$f" "$m" >"$A/.F$f/new/17000000$m.M${f}P$m.host"
	done
done
"$BIN" sync "$A" "$B" >/dev/null 2>&1 || true
"$BIN" sync "$A" "$B" >/dev/null
ms() {
	local s e
	s=$(date +%s%N)
	"$BIN" sync "$A" "$B" >/dev/null 2>&1 || true
	e=$(date +%s%N)
	echo $(((e - s) / 1000000))
}
base=() miss=()
for r in $(seq 1 "$ROUNDS"); do
	mkdir -p "$A/.N$r"/{cur,new,tmp}
	base+=("$(ms)")
	"$BIN" sync "$A" "$B" >/dev/null 2>&1 || true
	rm -rf "$A/.E"
	miss+=("$(ms)")
	"$BIN" sync "$A" "$B" >/dev/null 2>&1 || true
	[ -d "$A/.E/cur" ] || { echo "round $r: .E not restored on A" >&2; exit 1; }
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mb=$(med "${base[@]}") mm=$(med "${miss[@]}")
echo "new folder (baseline), ms:      ${base[*]}"
echo "rm -rf'd empty folder, ms:      ${miss[*]}"
echo "medians: baseline $mb ms, rm -rf'd $mm ms, difference $((mm - mb)) ms, ratio $(awk -v a="$mm" -v b="$mb" 'BEGIN{printf "%.2f", a/b}')"
