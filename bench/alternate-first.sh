#!/usr/bin/env bash
# bench/alternate-first.sh: first syncs of one corpus, alternating round by
# round between two twinbox binaries and `doveadm sync` (run as bench.sh
# runs it), so that all three see the same machine load. Needs the corpus
# and the Dovecot config that bench/bench.sh leaves in WORKDIR.
#
#   bench/alternate-first.sh CORPUS BIN_A BIN_B [ROUNDS]
#
# SETTLE=SECONDS waits that long after removing the previous run's replicas
# (and `sync`) before copying the corpus for the next run. On ext4 without
# a journal (this machine's /) inode allocation skips, one by one, every
# free inode of the group deleted less than 60 s ago (fs/ext4/ialloc.c,
# recently_deleted()): right after an `rm -rf` of 20k files each of the
# next run's 10k creates walks thousands of them, for every tool alike.
# SETTLE=61 measures the tools without that; GRAVEYARD=1 too, faster: the
# previous run's replicas are moved aside and only removed after the last
# run (disk: two corpus copies per run). The default is how bench.sh
# measures (GRAVEYARD=0).
#
# TIMECMD=PATH (a build of bench/timecmd) also takes each twinbox run's CPU
# time (user+system from rusage) and prints its median: with the machine
# shared, the steadier figure (the wall time is what the target is about).
set -euo pipefail
corpus=$1 bina=$2 binb=$3 rounds=${4:-3}
WORKDIR=${WORKDIR:-/tmp/twinbox-bench}
BENCH_USER=${BENCH_USER:-twinboxbench}
scratch=$WORKDIR/run/alt-first
gid=$(id -g "$BENCH_USER")
declare -A T C
SETTLE=${SETTLE:-0}
GRAVEYARD=${GRAVEYARD:-0}
grave=$WORKDIR/run/alt-first-graveyard
fresh() {
	if [[ $GRAVEYARD == 1 && -e $scratch ]]; then
		mkdir -p "$grave"
		mv "$scratch" "$grave/$RANDOM$RANDOM"
	else
		rm -rf "$scratch"
	fi
	sync
	if ((SETTLE > 0)); then sleep "$SETTLE"; fi
	mkdir -p "$scratch/home"
	cp -a "$corpus" "$scratch/A"
	mkdir "$scratch/B"
	sync
}
timed() { local t0 t1; t0=$EPOCHREALTIME; "$@" >/dev/null 2>"$scratch.err" || { echo "failed: $* ($(head -c 300 "$scratch.err"))" >&2; }; t1=$EPOCHREALTIME; awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'; }
TIMECMD=${TIMECMD:-}
cpuof() { [[ -n $TIMECMD ]] && awk '{printf "%.3f", $2/1000}' "$scratch.cpu"; }
# The first run must follow a deletion like the others (default mode): a
# corpus copy to delete first.
if [[ $GRAVEYARD != 1 && ! -e $scratch ]]; then
	mkdir -p "$scratch"
	cp -a "$corpus" "$scratch/A"
	cp -a "$corpus" "$scratch/B"
fi
for r in $(seq "$rounds"); do
	for who in a b dsync; do
		fresh
		case $who in
		a | b)
			bin=$bina; [[ $who == b ]] && bin=$binb
			pre=()
			[[ -n $TIMECMD ]] && pre=("$TIMECMD" -o "$scratch.cpu")
			T[$who]+="$(HOME=$scratch/home XDG_STATE_HOME=$scratch/home/s XDG_CONFIG_HOME=$scratch/home/c XDG_CACHE_HOME=$scratch/home/k timed "${pre[@]}" "$bin" sync --json "$scratch/A" "$scratch/B") "
			[[ -n $TIMECMD ]] && C[$who]+="$(cpuof) "
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
echo "first sync $(basename "$corpus"), $rounds rounds: $(basename "$bina") ${ma} s [${T[a]}], $(basename "$binb") ${mb} s [${T[b]}], doveadm sync ${md} s [${T[dsync]}]; ratios to dsync: $(awk -v a="$ma" -v b="$mb" -v d="$md" 'BEGIN{printf "%.2f / %.2f", a/d, b/d}'); $(basename "$binb")/$(basename "$bina") $(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.2f", b/a}')"
if [[ -n $TIMECMD ]]; then
	ca=$(echo "${C[a]}" | med) cb=$(echo "${C[b]}" | med)
	echo "CPU (user+sys): $(basename "$bina") ${ca} s [${C[a]}], $(basename "$binb") ${cb} s [${C[b]}]"
fi
rm -rf "$scratch" "$grave" "$scratch.cpu"
