#!/usr/bin/env bash
# bench/bench.sh: time twinbox against cp -a and doveadm sync/backup on
# generated Maildir++ corpora. See bench/README.md.
#
#   bench/bench.sh                    # 10k/20 and 50k/40
#   QUICK=1 bench/bench.sh            # 2k/10 only
#   SIZES="10000:20" REPEAT=7 bench/bench.sh
#
# Environment (defaults in brackets):
#   WORKDIR        corpora cache and scratch replicas [/tmp/twinbox-bench]
#   SIZES          space-separated MESSAGES:FOLDERS ["10000:20 50000:40"]
#   QUICK=1        SIZES="2000:10"
#   REPEAT         runs of each incremental measurement [5]
#   FIRST_REPEAT   runs of each first-sync/copy measurement [3]
#   SEED           corpus seed [1]
#   TWINBOX        use this binary instead of building bin/twinbox
#   TWINBOX_FLAGS  extra flags for every twinbox sync/backup [--json]
#   DOVEADM=0      skip the doveadm rows
#   BENCH_USER     non-root user that runs doveadm [twinboxbench]
#   INSTALL=0      never apt-get install time/dovecot-core, never useradd
#   CHECK_DETERMINISM=0  skip generating a fresh corpus twice to compare
#   WAIT_QUIET     seconds to wait for an idle machine before each corpus [0]
#   KEEP=1         keep the scratch replicas under WORKDIR/run
#   GRAVEYARD=1    never delete a replica before the last run: move it aside
#                  (WORKDIR/graveyard, removed at the end; needs about 30 GB
#                  free for the default sizes). On ext4 without a journal
#                  (the project machine's /) creating a file skips, one by
#                  one, the free inodes of its block group deleted less than
#                  60 s before (fs/ext4/ialloc.c, recently_deleted()): the
#                  rm -rf of the previous run's 20k files right before a
#                  first sync makes each of its creates walk thousands of
#                  them, for every tool alike [0]
#   REMOTE=0       skip the rows over the embedded SSH server and tcps (root only)
#   RESULTS        where to save the table [bench/results-YYYY-MM-DD.md, or -2, -3... if taken]
#
# The markdown report goes to stdout (and RESULTS); progress, twinbox's and
# Dovecot's messages go to stderr.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=${WORKDIR:-/tmp/twinbox-bench}
SIZES=${SIZES:-"10000:20 50000:40"}
if [[ ${QUICK:-0} == 1 ]]; then SIZES="2000:10"; fi
REPEAT=${REPEAT:-5}
FIRST_REPEAT=${FIRST_REPEAT:-3}
SEED=${SEED:-1}
TWINBOX_FLAGS=${TWINBOX_FLAGS---json}
DOVEADM=${DOVEADM:-1}
BENCH_USER=${BENCH_USER:-twinboxbench}
INSTALL=${INSTALL:-1}
CHECK_DETERMINISM=${CHECK_DETERMINISM:-1}
KEEP=${KEEP:-0}
GRAVEYARD=${GRAVEYARD:-0}
WAIT_QUIET=${WAIT_QUIET:-0}
if [[ -z ${RESULTS:-} ]]; then
	# Never overwrite an earlier run's table: results-DATE.md, -2.md, ...
	RESULTS=$ROOT/bench/results-$(date +%Y-%m-%d).md
	n=2
	while [[ -e $RESULTS ]]; do
		RESULTS=$ROOT/bench/results-$(date +%Y-%m-%d)-$n.md
		n=$((n + 1))
	done
fi

RUN=$WORKDIR/run
LOGS_ROOT=$WORKDIR/logs
LOGS=$LOGS_ROOT
NOTES=() # lines for the report's notes section

log() { printf '[bench] %s\n' "$*" >&2; }
note() {
	NOTES+=("$*")
	log "NOTE: $*"
}
die() {
	printf '[bench] FATAL: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- setup

mkdir -p "$WORKDIR" "$LOGS"
chmod 755 "$WORKDIR" # the doveadm user must be able to traverse it

apt_install() { # PACKAGE: install it if we may, waiting for a background apt first
	if [[ $INSTALL != 1 || $EUID != 0 ]]; then return 1; fi
	if [[ -f /tmp/apt.log ]] && ! grep -q 'done' /tmp/apt.log; then
		log "waiting (up to 10 min) for the background apt run (/tmp/apt.log) to say 'done'"
		for _ in $(seq 600); do
			grep -q 'done' /tmp/apt.log && break
			sleep 1
		done
	fi
	if dpkg -s "$1" >/dev/null 2>&1; then return 0; fi
	log "apt-get install -y $1"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "$1" >"$LOGS/apt-$1.log" 2>&1 ||
		{ apt-get update >>"$LOGS/apt-$1.log" 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "$1" >>"$LOGS/apt-$1.log" 2>&1; }
}

if [[ ! -x /usr/bin/time ]]; then
	apt_install time || die "/usr/bin/time (GNU time) is missing: apt-get install time"
fi
command -v go >/dev/null || die "go is not on PATH"

log "building gencorpus"
go build -C "$ROOT" -o "$WORKDIR/bin/gencorpus" ./bench/gencorpus
GEN_HASH=$(sha256sum "$ROOT/bench/gencorpus/main.go" | cut -c1-16)

TWINBOX_OK=0
TWINBOX_WHY=""
if [[ -n ${TWINBOX:-} ]]; then
	if [[ -x $TWINBOX ]]; then TWINBOX_OK=1; else TWINBOX_WHY="TWINBOX=$TWINBOX is not executable"; fi
else
	log "building twinbox: CGO_ENABLED=0 go build -o bin/twinbox ."
	if (cd "$ROOT" && CGO_ENABLED=0 go build -o bin/twinbox .) >"$LOGS/build-twinbox.log" 2>&1; then
		TWINBOX=$ROOT/bin/twinbox
		TWINBOX_OK=1
	else
		TWINBOX_WHY="twinbox did not build (see $LOGS/build-twinbox.log): $(tail -n 3 "$LOGS/build-twinbox.log" | tr '\n' ' ')"
	fi
fi
GIT_HEAD=$(git -C "$ROOT" rev-parse -q --verify --short HEAD || echo 'no commit yet')
TWINBOX_VER=""
if [[ $TWINBOX_OK == 1 ]]; then
	TWINBOX_VER=$("$TWINBOX" version 2>&1 | head -n 1 || true)
fi
if [[ $TWINBOX_OK != 1 ]]; then
	log "*** TWINBOX NOT AVAILABLE: $TWINBOX_WHY"
	log "*** continuing with the baselines only"
	note "twinbox rows missing: $TWINBOX_WHY"
fi

# doveadm: runs as BENCH_USER (Dovecot refuses mail access as root) with a
# config file of our own; no dovecot daemon is needed.
DV_OK=0
DV_CONF=$WORKDIR/dovecot/dovecot.conf
DV_HOME=$WORKDIR/dovecot/home
DV_RUN=() # command prefix that runs doveadm as the bench user
if [[ $DOVEADM == 1 ]]; then
	if ! command -v doveadm >/dev/null; then
		apt_install dovecot-core || true
	fi
	if ! command -v doveadm >/dev/null; then
		note "doveadm rows missing: doveadm is not installed (apt-get install dovecot-core)"
	else
		mkdir -p "$WORKDIR/dovecot" "$DV_HOME"
		cat >"$DV_CONF" <<-'EOF'
			# Written by bench/bench.sh. doveadm runs without -u (a userdb lookup
			# would need a running auth service): it serves the invoking user,
			# with USER and HOME from the environment and mail_location given
			# with -o on each command line.
			log_path = /dev/stderr
			info_log_path = /dev/null
			ssl = no
		EOF
		if (( EUID == 0 )); then
			if ! id "$BENCH_USER" >/dev/null 2>&1; then
				[[ $INSTALL == 1 ]] || die "user $BENCH_USER is missing and INSTALL=0"
				useradd -r -M -s /usr/sbin/nologin "$BENCH_USER"
			fi
			chown -R "$BENCH_USER:" "$WORKDIR/dovecot"
			if command -v setpriv >/dev/null; then
				DV_RUN=(setpriv --reuid="$BENCH_USER" --regid="$(id -g "$BENCH_USER")" --init-groups --)
			else
				DV_RUN=(runuser -u "$BENCH_USER" --)
			fi
			DV_RUN+=(env USER="$BENCH_USER" HOME="$DV_HOME")
		else
			BENCH_USER=$(id -un)
			DV_RUN=(env HOME="$DV_HOME")
		fi
		DV_RUN+=(doveadm -c "$DV_CONF")
		DV_OK=1
	fi
fi

# ---------------------------------------------------------------- helpers

# run_timed LOG CMD...: runs CMD under GNU time, stdout/stderr to LOG.out/.err.
# Sets T_US (wall, microseconds, measured around /usr/bin/time), T_RSS (KiB),
# T_CPU (user+sys, microseconds, 10 ms resolution), T_RC.
run_timed() {
	local logf=$1 t0 t1 rc=0
	shift
	t0=${EPOCHREALTIME/./}
	/usr/bin/time -f '%e %M %U %S' -o "$logf.time" "$@" >"$logf.out" 2>"$logf.err" || rc=$?
	t1=${EPOCHREALTIME/./}
	T_US=$((10#$t1 - 10#$t0))
	read -r _ T_RSS T_CPU < <(tail -n 1 "$logf.time" | awk '{printf "%s %s %d\n", $1, $2, ($3 + $4) * 1000000}')
	T_RC=$rc
	if [[ $rc == 0 || $rc == 2 ]]; then TIMES+=" $T_US" RSSES+=" $T_RSS" CPUS+=" $T_CPU"; fi
}

# busy_pct: percent of all CPUs busy over the next second (others' load,
# sampled while we are idle).
busy_pct() {
	local a b
	read -ra a < <(grep '^cpu ' /proc/stat)
	sleep 1
	read -ra b < <(grep '^cpu ' /proc/stat)
	awk -v u=$((b[1] + b[2] + b[3] + b[6] + b[7] - a[1] - a[2] - a[3] - a[6] - a[7])) \
		-v i=$((b[4] + b[5] - a[4] - a[5])) 'BEGIN { printf "%d", (u + i) ? 100 * u / (u + i) : 0 }'
}

# check_quiet LABEL [MAXWAIT]: wait up to MAXWAIT (default WAIT_QUIET)
# seconds for the CPUs to be idle, then note it if something else is still
# using them.
check_quiet() {
	local p waited=0 maxwait=${2:-$WAIT_QUIET}
	p=$(busy_pct)
	while ((p > 10 && waited < maxwait)); do
		((waited == 0)) && log "$1: machine ${p}% busy, waiting up to ${maxwait}s for it to calm down"
		sleep 4
		waited=$((waited + 5))
		p=$(busy_pct)
	done
	if ((p > 10)); then
		note "$1: the machine was ${p}% busy with other work ($(ps -eo pcpu=,comm= --sort=-pcpu | head -n 3 | awk '{printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1}')): timings are inflated and noisy"
	else
		log "$1: machine quiet (${p}% busy)"
	fi
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print ""; else if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
maxof() { sort -n | tail -n 1; }

fmt_time() { # microseconds -> "12.3 ms" / "4.56 s"
	awk -v u="$1" 'BEGIN { if (u < 1000000) printf "%.1f ms", u/1000; else printf "%.2f s", u/1000000 }'
}
fmt_mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k/1024 }'; }

count_msgs() { find "$1" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l; }

# tree_sum DIR: checksum of names, modes, mtimes, sizes and contents of all
# files (directory sizes and mtimes left out: they depend on write order).
tree_sum() {
	(
		cd "$1"
		{
			find . -type f -printf '%P %m %T@ %s\n' | sort
			find . -type f -print0 | sort -z | xargs -0 cat
		} | sha256sum | cut -c1-16
	)
}

# discard PATH...: remove scratch files, or with GRAVEYARD=1 move them
# aside (a rename frees no inode) until the end of the run.
discard() {
	local p
	for p in "$@"; do
		[[ -e $p ]] || continue
		if [[ $GRAVEYARD == 1 ]]; then
			mkdir -p "$WORKDIR/graveyard"
			mv "$p" "$WORKDIR/graveyard/$(date +%s%N)-$RANDOM"
		else
			rm -rf "$p"
		fi
	done
}
fresh_dir() { discard "$1" && mkdir -p "$1"; }

# Results: ROWS holds "corpus|operation|tool|median_us|max_rss_kib|median_cpu_us|runs|status".
ROWS=()
declare -A MED # "corpus|operation|tool" -> median us
TIMES="" RSSES="" CPUS="" # run_timed appends each successful run's figures

# record CORPUS OP TOOL RUNS STATUS: one table row from TIMES/RSSES/CPUS.
record() {
	local med rss cpu
	med=$(tr ' ' '\n' <<<"$TIMES" | grep . | median || true)
	rss=$(tr ' ' '\n' <<<"$RSSES" | grep . | maxof || true)
	cpu=$(tr ' ' '\n' <<<"$CPUS" | grep . | median || true)
	ROWS+=("$1|$2|$3|$med|$rss|$cpu|$4|$5")
	[[ -n $med ]] && MED["$1|$2|$3"]=$med
	if [[ -n $med ]]; then
		log "  $2 / $3: median $(fmt_time "$med") (CPU $(fmt_time "$cpu")), peak RSS $(fmt_mib "${rss:-0}") ($4 runs) ${5}"
	else
		log "  $2 / $3: no result ${5}"
	fi
}

# show_err LABEL FILE: echo a tool's stderr (Dovecot warnings/errors, twinbox
# errors) to our stderr and into the notes, once per distinct text.
declare -A SEEN_ERR
show_err() {
	[[ -s $2 ]] || return 0
	local h
	h=$(sed -E 's/[0-9]+/N/g' "$2" | sha256sum | cut -c1-16)
	[[ -z ${SEEN_ERR[$h]:-} ]] || return 0
	SEEN_ERR[$h]=1
	log "---- $1 printed on stderr:"
	head -n 20 "$2" | sed 's/^/[bench]   | /' >&2
	note "$1 printed on stderr: $(head -n 5 "$2" | tr '\n' ' ' | cut -c1-600)"
}

# ---------------------------------------------------------------- corpus

ensure_corpus() { # N F -> sets CORPUS
	local n=$1 f=$2 key dir stamp want
	key="n$n-f$f-s$SEED"
	dir=$WORKDIR/corpus/$key
	stamp=$dir.stamp
	want="gencorpus=$GEN_HASH args=$key"
	if [[ -d $dir && -f $stamp && $(cat "$stamp") == "$want" ]]; then
		log "corpus $key: cached ($dir)"
	else
		log "corpus $key: generating"
		discard "$dir" "$dir.tmp" "$dir.chk" "$stamp"
		mkdir -p "$WORKDIR/corpus"
		"$WORKDIR/bin/gencorpus" -out "$dir.tmp" -messages "$n" -folders "$f" -seed "$SEED"
		if [[ $CHECK_DETERMINISM == 1 ]]; then
			"$WORKDIR/bin/gencorpus" -q -out "$dir.chk" -messages "$n" -folders "$f" -seed "$SEED"
			local s1 s2
			s1=$(tree_sum "$dir.tmp")
			s2=$(tree_sum "$dir.chk")
			discard "$dir.chk"
			if [[ $s1 != "$s2" ]]; then
				note "corpus $key is NOT deterministic: $s1 vs $s2"
			else
				note "corpus $key generated twice: identical (tree sum $s1)"
			fi
		fi
		mv "$dir.tmp" "$dir"
		echo "$want" >"$stamp"
	fi
	CORPUS=$dir
	CORPUS_BYTES=$(find "$dir" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
	CORPUS_MSGS=$(count_msgs "$dir")
}

# ---------------------------------------------------------------- twinbox

# Each twinbox pair gets its own HOME/XDG dirs, in case twinbox keeps state
# outside the two Maildirs.
tb_env() { # DIR
	mkdir -p "$1/home"
	export HOME=$1/home XDG_STATE_HOME=$1/home/state XDG_CONFIG_HOME=$1/home/config XDG_CACHE_HOME=$1/home/cache
}

tb_status() { # rc -> text
	case $1 in
	0) echo "" ;;
	2) echo "exit 2 (changes during sync)" ;;
	3) echo "exit 3 (mass expunge held back)" ;;
	*) echo "exit $1 (error)" ;;
	esac
}

# tb_check LABEL A B: twinbox check, untimed.
tb_check() {
	local rc=0
	"$TWINBOX" check "$2" "$3" >"$LOGS/check.out" 2>"$LOGS/check.err" || rc=$?
	if [[ $rc != 0 ]]; then
		note "$1: 'twinbox check' says the replicas differ (exit $rc)"
		show_err "twinbox check ($1)" "$LOGS/check.err"
	fi
	local na nb
	na=$(count_msgs "$2")
	nb=$(count_msgs "$3")
	[[ $na == "$nb" ]] || note "$1: $na message files in A but $nb in B"
}

new_message() { # MAILDIR I: deliver one ~4 KB message into MAILDIR/new via tmp/
	local md=$1 i=$2 base tmpf size lines
	base="$(date +%s).M$((RANDOM * 30 + i))P$$.benchhost"
	tmpf=$md/tmp/$base
	{
		printf 'Return-Path: <bench-new@example.net>\nDelivered-To: bench@example.org\n'
		printf 'Message-ID: <bench-new-%s-%s@example.net>\n' "$i" "${EPOCHREALTIME/./}"
		printf 'Date: %s\nFrom: New Sender <bench-new@example.net>\nTo: Bench User <bench@example.org>\n' "$(date -R)"
		printf 'Subject: new message %s\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n' "$i"
		for _ in $(seq 55); do printf 'The quick brown fox jumps over the lazy dog, again and again.\n'; done
	} >"$tmpf"
	size=$(stat -c %s "$tmpf")
	lines=$(wc -l <"$tmpf")
	mv "$tmpf" "$md/new/$base,S=$size,W=$((size + lines))"
}

add_seen_flag() { # MAILDIR: rename one unseen cur/ file to add S; fails if none
	local md=$1 f flags nf
	f=$(find "$md/cur" -maxdepth 1 -type f -name '*:2,*' ! -name '*:2,*S*' -print -quit)
	[[ -n $f ]] || return 1
	flags=${f##*:2,}
	nf=$(printf '%sS' "$flags" | fold -w1 | sort | tr -d '\n')
	mv "$f" "${f%:2,*}:2,$nf"
}

bench_twinbox() { # LABEL
	local c=$1 dir=$RUN/tb i st ok
	local -a flags
	read -ra flags <<<"$TWINBOX_FLAGS"
	local save_home=$HOME

	# first sync into an empty replica
	TIMES="" RSSES="" CPUS="" st="" ok=1
	for i in $(seq "$FIRST_REPEAT"); do
		fresh_dir "$dir"
		cp -a "$CORPUS" "$dir/A"
		mkdir "$dir/B"
		tb_env "$dir"
		sync
		run_timed "$LOGS/tb-first-$i" "$TWINBOX" sync "${flags[@]}" "$dir/A" "$dir/B"
		show_err "twinbox sync (first)" "$LOGS/tb-first-$i.err"
		if [[ $T_RC != 0 && $T_RC != 2 ]]; then
			st="FAILED: $(tb_status "$T_RC")"
			ok=0
			break
		fi
		[[ $T_RC == 0 ]] || st="$(tb_status "$T_RC")"
	done
	record "$c" "first sync" "twinbox sync" "$FIRST_REPEAT" "$st"
	if [[ $ok != 1 ]]; then
		log "*** twinbox first sync FAILED ($st); skipping the other twinbox rows for $c"
		export HOME=$save_home
		return 0
	fi
	tb_check "$c first sync" "$dir/A" "$dir/B"

	# incremental: no change, one flag, one new message (same pair)
	local op
	for op in "no-change sync" "one flag change" "one new message"; do
		TIMES="" RSSES="" CPUS="" st=""
		for i in $(seq "$REPEAT"); do
			case $op in
			"one flag change")
				add_seen_flag "$dir/A" || { st="no unseen message left to flag"; break; }
				;;
			"one new message") new_message "$dir/A" "$i" ;;
			esac
			run_timed "$LOGS/tb-inc-$i" "$TWINBOX" sync "${flags[@]}" "$dir/A" "$dir/B"
			show_err "twinbox sync ($op)" "$LOGS/tb-inc-$i.err"
			if [[ $T_RC != 0 ]]; then st="$(tb_status "$T_RC")"; fi
			if [[ $T_RC != 0 && $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
		done
		record "$c" "$op" "twinbox sync" "$REPEAT" "$st"
	done
	tb_check "$c after incremental syncs" "$dir/A" "$dir/B"

	# one-way: twinbox backup, first and no-change
	TIMES="" RSSES="" CPUS="" st=""
	for i in $(seq "$FIRST_REPEAT"); do
		fresh_dir "$dir"
		cp -a "$CORPUS" "$dir/A"
		mkdir "$dir/B"
		tb_env "$dir"
		sync
		run_timed "$LOGS/tb-bfirst-$i" "$TWINBOX" backup "${flags[@]}" "$dir/A" "$dir/B"
		show_err "twinbox backup (first)" "$LOGS/tb-bfirst-$i.err"
		if [[ $T_RC != 0 ]]; then st="$(tb_status "$T_RC")"; fi
		if [[ $T_RC != 0 && $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
	done
	record "$c" "first sync" "twinbox backup" "$FIRST_REPEAT" "$st"
	if [[ $st != FAILED* ]]; then
		TIMES="" RSSES="" CPUS="" st=""
		for i in $(seq "$REPEAT"); do
			run_timed "$LOGS/tb-binc-$i" "$TWINBOX" backup "${flags[@]}" "$dir/A" "$dir/B"
			show_err "twinbox backup (no change)" "$LOGS/tb-binc-$i.err"
			if [[ $T_RC != 0 ]]; then st="$(tb_status "$T_RC")"; fi
			if [[ $T_RC != 0 && $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
		done
		record "$c" "no-change sync" "twinbox backup" "$REPEAT" "$st"
	fi
	export HOME=$save_home
	[[ $KEEP == 1 ]] || discard "$dir"
}

# ---------------------------------------------------------------- between hosts (loopback)

# bench_remote LABEL KIND: twinbox between two "hosts" on this machine, the
# peer reached through `twinbox sshd` (KIND=ssh) or `twinbox listen` over
# tcps (KIND=tcps) on a loopback port. The served side runs as BENCH_USER
# (the listener's child `serve` drops root for the mail's owner).
bench_remote() { # LABEL KIND
	local c=$1 kind=$2 dir=$RUN/remote-$2 i st port pid peer tool
	local -a flags extra
	read -ra flags <<<"$TWINBOX_FLAGS"
	fresh_dir "$dir"
	chmod 755 "$dir"
	mkdir -p "$dir/cli" "$dir/srv"
	chmod 755 "$dir/srv"
	chown "$BENCH_USER:" "$dir/srv"
	port=$((20000 + RANDOM % 20000))
	printf 'version = 1\nreplica_id = "bench-srv"\n[users]\npath = "%s/srv/%%u"\n' "$dir" >"$dir/srv.toml"
	printf 'version = 1\nreplica_id = "bench-cli"\n[users]\npath = "%s/cli/%%u"\n' "$dir" >"$dir/cli.toml"
	case $kind in
	ssh)
		ssh-keygen -q -t ed25519 -N '' -f "$dir/id" >/dev/null
		printf 'users="*" %s\n' "$(cat "$dir/id.pub")" >"$dir/authorized_keys"
		"$TWINBOX" --config "$dir/srv.toml" sshd --listen "127.0.0.1:$port" --host-key "$dir/host_key" \
			--authorized-keys "$dir/authorized_keys" 2>"$LOGS/sshd.log" &
		pid=$!
		peer="ssh://root@127.0.0.1:$port"
		tool="twinbox sync ssh://"
		;;
	tcps)
		bench_tcps_setup "$dir" "$port" || { log "tcps setup failed"; return 0; }
		pid=$TCPS_PID
		peer="tcps:localhost:$port"
		tool="twinbox sync tcps:"
		;;
	esac
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
		sleep 0.1
	done
	if [[ $kind == ssh ]]; then
		printf '[127.0.0.1]:%s %s\n' "$port" "$(cat "$dir/host_key.pub")" >"$dir/known_hosts"
		extra=(--ssh-identity "$dir/id" --ssh-known-hosts "$dir/known_hosts")
	fi
	TIMES="" RSSES="" CPUS="" st=""
	for i in $(seq "$FIRST_REPEAT"); do
		discard "$dir/cli/bench" "$dir/srv/bench"
		cp -a "$CORPUS" "$dir/cli/bench"
		mkdir "$dir/srv/bench"
		chown "$BENCH_USER:" "$dir/srv/bench"
		sync
		run_timed "$LOGS/rm-$kind-first-$i" "$TWINBOX" --config "$dir/cli.toml" sync "${flags[@]}" -u bench "$peer" "${extra[@]}"
		show_err "$tool (first)" "$LOGS/rm-$kind-first-$i.err"
		if [[ $T_RC != 0 ]]; then st="$(tb_status "$T_RC")"; fi
		if [[ $T_RC != 0 && $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
	done
	record "$c" "first sync" "$tool" "$FIRST_REPEAT" "$st"
	if [[ $st != FAILED* ]]; then
		tb_check "$c $tool" "$dir/cli/bench" "$dir/srv/bench"
		TIMES="" RSSES="" CPUS="" st=""
		for i in $(seq "$REPEAT"); do
			run_timed "$LOGS/rm-$kind-inc-$i" "$TWINBOX" --config "$dir/cli.toml" sync "${flags[@]}" -u bench "$peer" "${extra[@]}"
			show_err "$tool (no change)" "$LOGS/rm-$kind-inc-$i.err"
			if [[ $T_RC != 0 ]]; then st="$(tb_status "$T_RC")"; fi
			if [[ $T_RC != 0 && $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
		done
		record "$c" "no-change sync" "$tool" "$REPEAT" "$st"
		local rt
		rt=$(grep -o '"round_trips": [0-9]*' "$LOGS/rm-$kind-inc-$REPEAT.out" | grep -o '[0-9]*$' || true)
		note "$c: a no-change sync over $tool took ${rt:-?} protocol round trips"
	fi
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	[[ $KEEP == 1 ]] || discard "$dir"
}

# bench_tcps_setup DIR PORT: a test CA and a certificate for localhost
# (openssl), a shared secret, `twinbox listen --tcps` on the port; sets
# TCPS_PID.
bench_tcps_setup() {
	local dir=$1 port=$2
	command -v openssl >/dev/null || apt_install openssl || return 1
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
		-keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 || return 1
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
		-keyout "$dir/srv.key" -out "$dir/srv.csr" >/dev/null 2>&1 || return 1
	printf 'subjectAltName=DNS:localhost\n' >"$dir/ext"
	openssl x509 -req -in "$dir/srv.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
		-extfile "$dir/ext" -out "$dir/srv.crt" >/dev/null 2>&1 || return 1
	head -c 32 /dev/urandom | base64 >"$dir/secret"
	chmod 600 "$dir/secret"
	printf '[listen]\ncert_file = "%s"\nkey_file = "%s"\n[[listen.secret]]\nname = "bench"\nfile = "%s"\nusers = ["*"]\n' \
		"$dir/srv.crt" "$dir/srv.key" "$dir/secret" >>"$dir/srv.toml"
	printf '[client]\nsecret_name = "bench"\nsecret_file = "%s"\nca_file = "%s"\n' "$dir/secret" "$dir/ca.pem" >>"$dir/cli.toml"
	"$TWINBOX" --config "$dir/srv.toml" listen --tcps "127.0.0.1:$port" 2>"$LOGS/listen.log" &
	TCPS_PID=$!
}

# ---------------------------------------------------------------- baselines

bench_cp() { # LABEL
	local c=$1 dir=$RUN/cp i st=""
	TIMES="" RSSES="" CPUS=""
	for i in $(seq "$FIRST_REPEAT"); do
		fresh_dir "$dir"
		sync
		run_timed "$LOGS/cp-$i" cp -a "$CORPUS" "$dir/A"
		show_err "cp -a" "$LOGS/cp-$i.err"
		[[ $T_RC == 0 ]] || { st="FAILED: exit $T_RC"; break; }
	done
	record "$c" "first sync" "cp -a" "$FIRST_REPEAT" "$st"
	[[ $KEEP == 1 ]] || discard "$dir"
}

bench_doveadm() { # LABEL VERB(sync|backup)
	local c=$1 verb=$2 dir=$RUN/dv i st n
	local -a cmd
	TIMES="" RSSES="" CPUS="" st=""
	for i in $(seq "$FIRST_REPEAT"); do
		fresh_dir "$dir"
		cp -a "$CORPUS" "$dir/A"
		mkdir "$dir/B"
		if (( EUID == 0 )); then chown -R "$BENCH_USER:" "$dir"; fi
		sync
		cmd=("${DV_RUN[@]}" -o "mail_location=maildir:$dir/A" "$verb" "maildir:$dir/B")
		[[ $i == 1 ]] && log "  doveadm command: ${cmd[*]}"
		run_timed "$LOGS/dv-$verb-first-$i" "${cmd[@]}"
		show_err "doveadm $verb (first)" "$LOGS/dv-$verb-first-$i.err"
		if [[ $T_RC != 0 ]]; then
			st="exit $T_RC"
			[[ $T_RC == 2 ]] && st+=" (sync needs to run again)"
			if [[ $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
		fi
	done
	record "$c" "first sync" "doveadm $verb" "$FIRST_REPEAT" "$st"
	[[ $st == FAILED* ]] && return 0
	n=$(count_msgs "$dir/B")
	[[ $n == "$CORPUS_MSGS" ]] || note "$c: after doveadm $verb B has $n message files, the corpus $CORPUS_MSGS"

	TIMES="" RSSES="" CPUS="" st=""
	for i in $(seq "$REPEAT"); do
		run_timed "$LOGS/dv-$verb-inc-$i" "${cmd[@]}"
		show_err "doveadm $verb (no change)" "$LOGS/dv-$verb-inc-$i.err"
		if [[ $T_RC != 0 ]]; then
			st="exit $T_RC"
			if [[ $T_RC != 2 ]]; then st="FAILED: $st"; break; fi
		fi
	done
	record "$c" "no-change sync" "doveadm $verb" "$REPEAT" "$st"
	[[ $KEEP == 1 ]] || discard "$dir"
}

# bench_doveadm_ssh LABEL: `doveadm sync` to a remote: peer over OpenSSH on a
# loopback port (an sshd of our own; the far doveadm runs as SSH_USER, the
# near one as BENCH_USER), for comparison with twinbox over ssh://.
SSH_USER=${SSH_USER:-twinboxvmail}
bench_doveadm_ssh() {
	local c=$1 dir=$RUN/dvssh i st port rc
	if [[ $EUID != 0 || ! -x /usr/sbin/sshd ]] || ! id "$SSH_USER" >/dev/null 2>&1; then
		note "$c: no doveadm-over-ssh rows (needs root, openssh-server and the user $SSH_USER: scripts/test-deps.sh makes it)"
		return 0
	fi
	fresh_dir "$dir"
	chmod 755 "$dir"
	mkdir -p "$dir/auth" "$dir/vhome" /run/sshd
	ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
	ssh-keygen -q -t ed25519 -N '' -f "$dir/id"
	chown "$BENCH_USER" "$dir/id" "$dir/id.pub"
	cp "$dir/id.pub" "$dir/auth/$SSH_USER"
	chmod 644 "$dir/auth/$SSH_USER"
	chown "$SSH_USER" "$dir/vhome"
	cp "$DV_CONF" "$dir/dovecot.conf"
	chmod 644 "$dir/dovecot.conf"
	port=$((20000 + RANDOM % 20000))
	printf 'ListenAddress 127.0.0.1:%s\nHostKey %s/host_key\nPidFile %s/sshd.pid\nAuthorizedKeysFile %s/auth/%%u\nPasswordAuthentication no\nUsePAM no\nStrictModes no\nAllowUsers %s\n' \
		"$port" "$dir" "$dir" "$dir" "$SSH_USER" >"$dir/sshd_config"
	/usr/sbin/sshd -f "$dir/sshd_config" -E "$LOGS/dvssh-sshd.log" || { note "$c: sshd for doveadm-over-ssh failed to start"; return 0; }
	printf '[127.0.0.1]:%s %s\n' "$port" "$(cat "$dir/host_key.pub")" >"$dir/known"
	chmod 644 "$dir/known"
	local rcmd="ssh -F /dev/null -i $dir/id -p $port -o UserKnownHostsFile=$dir/known -o StrictHostKeyChecking=yes -o BatchMode=yes -l $SSH_USER 127.0.0.1 env USER=$SSH_USER HOME=$dir/vhome doveadm -c $dir/dovecot.conf -o mail_location=maildir:$dir/B dsync-server"
	local -a cmd=("${DV_RUN[@]}" -o "mail_location=maildir:$dir/A" -o "dsync_remote_cmd=$rcmd" sync remote:127.0.0.1)
	TIMES="" RSSES="" CPUS="" st=""
	for i in $(seq "$FIRST_REPEAT"); do
		discard "$dir/A" "$dir/B"
		cp -a "$CORPUS" "$dir/A"
		chown -R "$BENCH_USER:" "$dir/A"
		mkdir "$dir/B"
		chown "$SSH_USER:" "$dir/B"
		sync
		[[ $i == 1 ]] && log "  doveadm over ssh: ${cmd[*]}"
		run_timed "$LOGS/dvssh-first-$i" "${cmd[@]}"
		show_err "doveadm sync over ssh (first)" "$LOGS/dvssh-first-$i.err"
		if [[ $T_RC != 0 ]]; then st="exit $T_RC"; [[ $T_RC == 2 ]] || { st="FAILED: $st"; break; }; fi
	done
	record "$c" "first sync" "doveadm sync over ssh" "$FIRST_REPEAT" "$st"
	if [[ $st != FAILED* ]]; then
		TIMES="" RSSES="" CPUS="" st=""
		for i in $(seq "$REPEAT"); do
			run_timed "$LOGS/dvssh-inc-$i" "${cmd[@]}"
			show_err "doveadm sync over ssh (no change)" "$LOGS/dvssh-inc-$i.err"
			if [[ $T_RC != 0 ]]; then st="exit $T_RC"; [[ $T_RC == 2 ]] || { st="FAILED: $st"; break; }; fi
		done
		record "$c" "no-change sync" "doveadm sync over ssh" "$REPEAT" "$st"
	fi
	kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
	[[ $KEEP == 1 ]] || discard "$dir"
}

# ---------------------------------------------------------------- run

mkdir -p "$RUN"
# What /usr/bin/time itself costs (fork, exec, wait): included in every
# wall time below.
TIMES=""
for _ in 1 2 3 4 5; do run_timed "$LOGS/overhead" true; done
OVERHEAD_US=$(tr ' ' '\n' <<<"$TIMES" | grep . | median)

declare -A CORPUS_DESC
CORPORA=()
for sz in $SIZES; do
	n=${sz%%:*}
	f=${sz##*:}
	[[ $n =~ ^[0-9]+$ && $f =~ ^[0-9]+$ ]] || die "bad SIZES entry '$sz' (want MESSAGES:FOLDERS)"
	ensure_corpus "$n" "$f"
	c="${n}/${f}"
	CORPORA+=("$c")
	LOGS=$LOGS_ROOT/n$n-f$f
	mkdir -p "$LOGS"
	CORPUS_DESC[$c]="$CORPUS_MSGS messages in $f folders, $(awk -v b="$CORPUS_BYTES" 'BEGIN{printf "%.1f MB (%.1f MiB)", b/1e6, b/1048576}')"
	log "== corpus $c: ${CORPUS_DESC[$c]}"
	check_quiet "corpus $c, before measuring"
	bench_cp "$c"
	if [[ $TWINBOX_OK == 1 ]]; then
		bench_twinbox "$c"
		if [[ ${REMOTE:-1} == 1 && $EUID == 0 ]]; then
			bench_remote "$c" ssh
			bench_remote "$c" tcps
		fi
	else
		TIMES="" RSSES="" CPUS=""
		record "$c" "first sync" "twinbox sync" 0 "not run: twinbox not built"
	fi
	if [[ $DV_OK == 1 ]]; then
		bench_doveadm "$c" sync
		bench_doveadm "$c" backup
		if [[ ${REMOTE:-1} == 1 ]]; then bench_doveadm_ssh "$c"; fi
	fi
done
[[ $KEEP == 1 ]] || discard "$RUN"

# ---------------------------------------------------------------- report

target_for() { # CORPUS OP TOOL -> "text|limit_us|limit_kib" (empty if none)
	local c=$1 op=$2 tool=$3 n=${1%%/*} base
	if [[ ($tool == "twinbox sync ssh://" || $tool == "twinbox sync tcps:") && $op == "first sync" ]]; then
		base=${MED["$c|first sync|twinbox sync"]:-}
		[[ -n $base ]] && echo "≤ 1.5× local ($(fmt_time "$base"))|$((base * 3 / 2))|"
		return 0
	fi
	[[ $tool == "twinbox sync" ]] || return 0
	case $op in
	"first sync")
		base=${MED["$c|first sync|doveadm sync"]:-}
		if [[ -n $base ]]; then echo "≤ 1/5 doveadm sync|$((base / 5))|65536"; else echo "≤ 1/5 doveadm sync||65536"; fi
		;;
	"no-change sync")
		if ((n <= 10000)); then
			echo "≤ 20 ms|20000|65536"
		else
			base=""
			for k in "${!MED[@]}"; do
				[[ $k == "10000/"*"|no-change sync|$tool" ]] && base=${MED[$k]}
			done
			if [[ -n $base ]]; then
				echo "≤ 1.2× 10k ($(fmt_time "$base"))|$((base * 12 / 10))|65536"
			else
				echo "≤ 1.2× 10k (24 ms)|24000|65536"
			fi
		fi
		;;
	"one flag change" | "one new message") echo "≤ 30 ms|30000|65536" ;;
	esac
}

report() {
	local row c op tool med rss cpu runs st tgt ttext tlim rlim verdict
	echo "# twinbox benchmark, $(date '+%Y-%m-%d %H:%M %Z')"
	echo
	echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr)"
	echo "- work dir: $WORKDIR ($(df -T "$WORKDIR" | awk 'NR==2 {print $2 " on " $1}'))"
	echo "- twinbox: $(if [[ $TWINBOX_OK == 1 ]]; then echo "$TWINBOX ('version': ${TWINBOX_VER:-?}); checkout HEAD $GIT_HEAD when the run started"; else echo "NOT RUN: $TWINBOX_WHY"; fi)"
	echo "- $(go version)"
	if [[ $DV_OK == 1 ]]; then
		echo "- Dovecot $(dovecot --version 2>/dev/null || echo '?'): \`${DV_RUN[*]} -o mail_location=maildir:A sync|backup maildir:B\`"
	else
		echo "- doveadm: not run"
	fi
	echo "- median of REPEAT=$REPEAT runs (first syncs and cp -a: FIRST_REPEAT=$FIRST_REPEAT); CPU = user+sys (GNU time %U+%S, 10 ms resolution); peak RSS = max over the runs (GNU time %M)"
	echo "- wall time is measured around \`/usr/bin/time\`, whose own cost here is $(fmt_time "$OVERHEAD_US") per run"
	echo "- page cache NOT dropped: every run reads a corpus copy made just before (\`sync\` was run to flush it, nothing evicted), so these are warm-cache figures"
	if [[ $GRAVEYARD == 1 ]]; then
		echo "- GRAVEYARD=1: no replica was deleted before the last run (moved aside, removed at the end), so no run's file creations paid for ext4's skipping of recently deleted inodes"
	else
		echo "- each first sync ran right after the previous run's replicas were deleted (rm -rf): on ext4 without a journal every file it creates first skips the group's inodes deleted less than 60 s before (GRAVEYARD=1 avoids that)"
	fi
	for c in "${CORPORA[@]}"; do echo "- corpus $c: ${CORPUS_DESC[$c]}, seed $SEED"; done
	echo
	echo "| corpus | operation | tool | median wall | median CPU | peak RSS | runs | target | result |"
	echo "|---|---|---|--:|--:|--:|--:|---|---|"
	for row in "${ROWS[@]}"; do
		IFS='|' read -r c op tool med rss cpu runs st <<<"$row"
		ttext="" verdict=""
		tgt=$(target_for "$c" "$op" "$tool")
		if [[ -n $tgt ]]; then
			IFS='|' read -r ttext tlim rlim <<<"$tgt"
			if [[ -n $med ]]; then
				verdict="ok"
				[[ -n $tlim ]] && ((med > tlim)) && verdict="MISSED (time)"
				[[ -n $rlim && -n $rss ]] && ((rss > rlim)) && verdict="MISSED (RSS > 64 MiB)"
				[[ -z $tlim ]] && verdict="ok (RSS); time: no doveadm figure"
			fi
			ttext+=", RSS ≤ 64 MiB"
		fi
		[[ -n $st ]] && verdict="${verdict:+$verdict; }$st"
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$op" "$tool" \
			"$([[ -n $med ]] && fmt_time "$med" || echo "—")" \
			"$([[ -n $cpu ]] && fmt_time "$cpu" || echo "—")" \
			"$([[ -n $rss ]] && fmt_mib "$rss" || echo "—")" "$runs" "$ttext" "$verdict"
	done
	echo
	echo "| corpus | ratio | value |"
	echo "|---|---|--:|"
	local a b
	for c in "${CORPORA[@]}"; do
		for pair in "twinbox sync>doveadm sync" "twinbox sync>cp -a" "twinbox backup>doveadm backup" "doveadm sync>cp -a" \
			"twinbox sync ssh://>twinbox sync" "twinbox sync tcps:>twinbox sync" "twinbox sync ssh://>doveadm sync over ssh"; do
			a=${MED["$c|first sync|${pair%%>*}"]:-}
			b=${MED["$c|first sync|${pair##*>}"]:-}
			if [[ -z $a && ($pair == *ssh* || $pair == *tcps*) ]]; then continue; fi
			printf '| %s | first sync: %s / %s | %s |\n' "$c" "${pair%%>*}" "${pair##*>}" \
				"$([[ -n $a && -n $b ]] && awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}' || echo "n/a")"
		done
	done
	if ((${#NOTES[@]})); then
		echo
		echo "Notes:"
		for n in "${NOTES[@]}"; do echo "- $n"; done
	fi
}

check_quiet "end of run" 0
report >"$LOGS_ROOT/report.md"
cat "$LOGS_ROOT/report.md"
cp "$LOGS_ROOT/report.md" "$RESULTS"
log "saved $RESULTS"
if [[ $GRAVEYARD == 1 && -d $WORKDIR/graveyard ]]; then
	log "removing the replicas moved aside ($WORKDIR/graveyard)"
	rm -rf "$WORKDIR/graveyard"
fi
