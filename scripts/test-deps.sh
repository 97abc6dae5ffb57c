#!/usr/bin/env bash
# Installs what twinbox's integration tests need on a Debian 12 machine, as root:
#   dovecot-core dovecot-imapd (doveadm, used as the judge of Maildir replicas),
#   openssh-server openssh-client (ssh transport tests), iproute2, time; and, via
#   scripts/dovecot24-chroot.sh, a Debian trixie root with Dovecot 2.4 for the tests that
#   run against both Dovecot 2.3 and 2.4.
# Makes sure the system dovecot and sshd services are NOT left running (tests start their
# own instances), and creates the unprivileged system user "twinboxtest" that the tests
# run doveadm as (doveadm refuses to access mail as root), and "twinboxvmail", a login
# with a shell that the OpenSSH tests log in as.
#
# Idempotent: running it again only reports that everything is in place.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PACKAGES=(dovecot-core dovecot-imapd openssh-server openssh-client iproute2 time)
TEST_USER=twinboxtest

log() { printf 'test-deps: %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
	echo "test-deps: must run as root" >&2
	exit 1
fi

# 1. Packages.
missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [[ $status != "install ok installed" ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} > 0)); then
	log "installing: ${missing[*]}"
	# Wait for another apt/dpkg run (up to 10 minutes) instead of failing on its lock.
	apt_opts=(-o DPkg::Lock::Timeout=600)
	apt-get "${apt_opts[@]}" update
	apt-get "${apt_opts[@]}" install -y "${missing[@]}"
else
	log "packages already installed: ${PACKAGES[*]}"
fi

# 2. No system dovecot or sshd left running: the tests start their own.
have_systemd=0
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
	have_systemd=1
fi
stop_service() {
	local unit=$1
	if ((have_systemd)); then
		if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
			systemctl disable --quiet "$unit" 2>/dev/null || true
			log "disabled service $unit"
		fi
		if systemctl is-active --quiet "$unit" 2>/dev/null; then
			systemctl stop "$unit"
			log "stopped service $unit"
		fi
	else
		# No systemd (containers): stop via the init script if the daemon runs, and make
		# sure it does not start at boot.
		if command -v update-rc.d >/dev/null 2>&1 && [[ -x /etc/init.d/$unit ]] &&
			compgen -G "/etc/rc[2-5].d/S*$unit" >/dev/null; then
			update-rc.d "$unit" disable >/dev/null 2>&1 || true
			log "disabled init script $unit"
		fi
		# Only the system instance (started by the init script) uses these pid files;
		# test instances run with their own base_dir / PidFile.
		local pidfile pid
		case $unit in
		dovecot) pidfile=/run/dovecot/master.pid ;;
		ssh) pidfile=/run/sshd.pid ;;
		esac
		if [[ -f $pidfile ]] && pid=$(<"$pidfile") && [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
			if [[ -x /etc/init.d/$unit ]]; then
				/etc/init.d/"$unit" stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
			else
				kill "$pid" 2>/dev/null || true
			fi
			log "stopped system $unit (pid $pid)"
		fi
	fi
}
stop_service dovecot
stop_service ssh
# Socket-activated sshd (Debian 12 ships ssh.socket, disabled by default).
if ((have_systemd)) && systemctl is-active --quiet ssh.socket 2>/dev/null; then
	systemctl disable --now --quiet ssh.socket || true
	log "stopped and disabled ssh.socket"
fi

# 3. The unprivileged user doveadm runs as.
if id -u "$TEST_USER" >/dev/null 2>&1; then
	log "user $TEST_USER exists (uid $(id -u "$TEST_USER"))"
else
	nologin=/usr/sbin/nologin
	[[ -x $nologin ]] || nologin=/bin/false
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell "$nologin" "$TEST_USER"
	log "created system user $TEST_USER (uid $(id -u "$TEST_USER"))"
fi

# 4. The login the OpenSSH tests use as the mail owner ("vmail"): a shell, no
#    password (but not locked: sshd without PAM refuses locked accounts).
SSH_USER=twinboxvmail
if id -u "$SSH_USER" >/dev/null 2>&1; then
	log "user $SSH_USER exists (uid $(id -u "$SSH_USER"))"
else
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /bin/sh "$SSH_USER"
	log "created system user $SSH_USER (uid $(id -u "$SSH_USER"))"
fi
usermod -p '*' "$SSH_USER"

# 5. Dovecot 2.4 for the tests: a Debian 13 (trixie) root at /var/cache/twinbox/trixie,
#    built once (about 75 s and 60 MB of downloads), then reused. After the users, whose
#    uid/gid it copies. TWINBOX_SKIP_DOVECOT24=1 skips it.
bash "$(dirname "$0")/dovecot24-chroot.sh"

log "done"
