#!/usr/bin/env bash
# Builds, once, a minimal Debian 13 (trixie) root with Dovecot 2.4 (dovecot-core,
# dovecot-imapd) for twinbox's integration tests, which run Dovecot 2.4 inside it with
# `chroot` (see integration/dovecot/chroot.go). Run as root; called by scripts/test-deps.sh.
#
#   scripts/dovecot24-chroot.sh          build if missing, else check and return at once
#   TWINBOX_TRIXIE_ROOT=/path ...        build there instead of /var/cache/twinbox/trixie
#   TWINBOX_DEBIAN_MIRROR=http://...     mirror (default http://deb.debian.org/debian)
#   TWINBOX_SKIP_DOVECOT24=1             do nothing (the 2.4 tests then skip, or fail
#                                        with TWINBOX_REQUIRE_DOVECOT=1)
#
# The root gets the test users (twinboxtest, twinboxvmail) with the same uid/gid as on
# the host, so that files Dovecot writes inside the root belong to the same user outside.
# A finished root carries the stamp file .twinbox-ready; the build happens in a temporary
# directory renamed into place at the end, so a killed build leaves no half root behind.
#
# Idempotent: a warm run checks the stamp and the users' ids and exits.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
ROOT=${TWINBOX_TRIXIE_ROOT:-/var/cache/twinbox/trixie}
MIRROR=${TWINBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
USERS=(twinboxtest twinboxvmail)
STAMP=$ROOT/.twinbox-ready

log() { printf 'dovecot24-chroot: %s\n' "$*"; }
die() {
	printf 'dovecot24-chroot: %s\n' "$*" >&2
	exit 1
}

if [[ ${TWINBOX_SKIP_DOVECOT24:-} == 1 ]]; then
	log "TWINBOX_SKIP_DOVECOT24=1: not building $ROOT"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "must run as root"

# sync_users makes each test user exist in the root with the host's uid/gid (adding or
# correcting its passwd/group lines). It refuses when another name in the root already
# uses that uid or gid.
sync_users() {
	local dir=$1 u uid gid name line
	for u in "${USERS[@]}"; do
		if ! id -u "$u" >/dev/null 2>&1; then
			log "host user $u missing (scripts/test-deps.sh creates it): not added to the root"
			continue
		fi
		uid=$(id -u "$u")
		gid=$(id -g "$u")
		name=$(awk -F: -v id="$uid" '$3 == id { print $1 }' "$dir/etc/passwd")
		if [[ -n $name && $name != "$u" ]]; then
			die "uid $uid of $u is taken by $name in $dir"
		fi
		name=$(awk -F: -v id="$gid" '$3 == id { print $1 }' "$dir/etc/group")
		if [[ -n $name && $name != "$u" ]]; then
			die "gid $gid of $u is taken by group $name in $dir"
		fi
		line="$u:x:$uid:$gid::/nonexistent:/usr/sbin/nologin"
		if [[ $(grep "^$u:" "$dir/etc/passwd" || true) != "$line" ]]; then
			sed -i "/^$u:/d" "$dir/etc/passwd" "$dir/etc/shadow"
			echo "$line" >>"$dir/etc/passwd"
			echo "$u:*:20000:0:99999:7:::" >>"$dir/etc/shadow"
			log "user $u ($uid:$gid) set in $dir"
		fi
		line="$u:x:$gid:"
		if [[ $(grep "^$u:" "$dir/etc/group" || true) != "$line" ]]; then
			sed -i "/^$u:/d" "$dir/etc/group"
			echo "$line" >>"$dir/etc/group"
			[[ -f $dir/etc/gshadow ]] && sed -i "/^$u:/d" "$dir/etc/gshadow" && echo "$u:!::" >>"$dir/etc/gshadow"
		fi
	done
}

mkdir -p "$(dirname "$ROOT")"
# One build at a time (two test-deps runs at once wait for each other).
exec 9>"$ROOT.lock"
flock -w 1800 9 || die "another build holds $ROOT.lock"

if [[ -f $STAMP && -x $ROOT/usr/sbin/dovecot ]]; then
	sync_users "$ROOT"
	log "ready: $ROOT ($(cat "$STAMP"))"
	exit 0
fi

start=$(date +%s)
if ! command -v debootstrap >/dev/null 2>&1; then
	log "installing debootstrap"
	apt-get -o DPkg::Lock::Timeout=600 update
	apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap
fi

tmp=$ROOT.build.$$
rm -rf "$ROOT".build.*
[[ -e $ROOT ]] && rm -rf "$ROOT"
trap 'rm -rf "$tmp"' EXIT
rx_before=$(awk 'NR > 2 && $1 != "lo:" { s += $2 } END { print s + 0 }' /proc/net/dev)
log "debootstrap $SUITE into $tmp from $MIRROR (takes a few minutes)"
if ! debootstrap --variant=minbase --include=dovecot-core,dovecot-imapd \
	"$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
	tail -n 30 "$tmp.log" >&2
	die "debootstrap failed (full log: $tmp.log)"
fi
rm -f "$tmp.log"
rx_after=$(awk 'NR > 2 && $1 != "lo:" { s += $2 } END { print s + 0 }' /proc/net/dev)
debs=$(du -sb "$tmp/var/cache/apt/archives" | cut -f1)
rm -f "$tmp"/var/cache/apt/archives/*.deb
rm -rf "$tmp"/var/lib/apt/lists/*

version=$(chroot "$tmp" /usr/sbin/dovecot --version) || die "dovecot --version failed in the new root"
[[ $version == 2.4* ]] || die "expected Dovecot 2.4 in $SUITE, got $version"
sync_users "$tmp"
end=$(date +%s)
size=$(du -sb "$tmp" | cut -f1)
printf 'dovecot %s; built %s in %ss; debs %s bytes; network rx %s bytes; size %s bytes\n' \
	"$version" "$(date -u +%FT%TZ)" $((end - start)) "$debs" $((rx_after - rx_before)) "$size" >"$tmp/.twinbox-ready"
mv "$tmp" "$ROOT"
trap - EXIT
log "built $ROOT: $(cat "$STAMP")"
