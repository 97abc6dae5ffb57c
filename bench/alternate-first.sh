#!/usr/bin/env bash
# bench/alternate-first.sh: first syncs of one corpus, alternating round by
# round between two twinbox binaries and `doveadm sync` (run as bench.sh
# runs it), so that all three see the same machine load. Needs the corpus
# and the Dovecot config that bench/bench.sh leaves in WORKDIR.
#
#   bench/alternate-first.sh CORPUS BIN_A BIN_B [ROUNDS]
set -euo pipefail
corpus=$1 bina=$2 binb=$3 rounds=${4:-3}
WORKDIR=${WORKDIR:-/tmp/twinbox-bench}
BENCH_USER=${BENCH_USER:-twinboxbench}
scratch=$WORKDIR/run/alt-first
gid=$(id -g "$BENCH_USER")
declare -A T
fresh() { rm -rf "$scratch"; mkdir -p "$scratch/home"; cp -a "$corpus" "$scratch/A"; mkdir "$scratch/B"; sync; }
timed() { local t0 t1; t0=$EPOCHREALTIME; "$@" >/dev/null 2>"$scratch.err" || { echo "failed: $* ($(head -c 300 "$scratch.err"))" >&2; }; t1=$EPOCHREALTIME; awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'; }
for r in $(seq "$rounds"); do
	for who in a b dsync; do
		fresh
		case $who in
		a | b)
			bin=$bina; [[ $who == b ]] && bin=$binb
			T[$who]+="$(HOME=$scratch/home XDG_STATE_HOME=$scratch/home/s XDG_CONFIG_HOME=$scratch/home/c XDG_CACHE_HOME=$scratch/home/k timed "$bin" sync --json "$scratch/A" "$scratch/B") "
			;;
		dsync)
			chown -R "$BENCH_USER:$gid" "$scratch"
			T[$who]+="$(timed setpriv --reuid="$BENCH_USER" --regid="$gid" --init-groups -- env USER="$BENCH_USER" HOME="$WORKDIR/dovecot/home" doveadm -c "$WORKDIR/dovecot/dovecot.conf" -o "mail_location=maildir:$scratch/A" sync "maildir:$scratch/B") "
			;;
		esac
	done
	echo "round $r done" >&2
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END{if(NR%2) print v[(NR+1)/2]; else printf "%.3f\n",(v[NR/2]+v[NR/2+1])/2}'; }
ma=$(echo "${T[a]}" | med) mb=$(echo "${T[b]}" | med) md=$(echo "${T[dsync]}" | med)
echo "first sync $(basename "$corpus"), $rounds rounds: $(basename "$bina") ${ma} s [${T[a]}], $(basename "$binb") ${mb} s [${T[b]}], doveadm sync ${md} s [${T[dsync]}]; ratios to dsync: $(awk -v a="$ma" -v b="$mb" -v d="$md" 'BEGIN{printf "%.2f / %.2f", a/d, b/d}')"
rm -rf "$scratch"
