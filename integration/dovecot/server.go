package dovecot

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ServerOptions configure one Dovecot IMAP server started by StartServer.
type ServerOptions struct {
	// Name tells the instances of one test apart ("a", "b"); it goes into
	// the instance name and the hostname setting.
	Name string
	// VeryDirtySyncs sets maildir_very_dirty_syncs = yes.
	VeryDirtySyncs bool
	// AutoCreate names mailboxes with `auto = create` in the inbox
	// namespace; AutoSubscribe those with `auto = subscribe`.
	AutoCreate    []string
	AutoSubscribe []string
	// Dovecot is the installation to run (nil: the host's; Trixie(): 2.4 in a chroot).
	Dovecot *Install
}

// Server is a private Dovecot instance (the installed `dovecot` binary, or the one in the
// trixie root, run as root with its own config, base_dir and log) serving IMAP on a
// loopback port. Its one user, TestUser with password Password, has the Maildir++ root
// Root (mail owned by TestUser).
type Server struct {
	Name     string
	Dir      string // working directory: config, base_dir, log, passwd file, mail root
	Root     string // the user's Maildir++ root
	LogPath  string // Dovecot's log
	Addr     string // host:port of the IMAP listener
	User     string // login name (TestUser)
	Password string

	conf   string
	env    *runtimeEnv
	t      testing.TB
	master *exec.Cmd
	done   chan struct{}
}

// Password is the plaintext password of the server's user.
const Password = "twinbox-secret"

// StartServer starts a Dovecot IMAP server for the test, waits until it greets on its
// port, and stops it when the test ends. It skips the test (fails it with
// TWINBOX_REQUIRE_DOVECOT=1) when Dovecot is missing or the test does not run as root
// (the Dovecot master must be root to switch to the mail user). The configuration is
// 2.3's or 2.4's, after the installation's version. With a chroot installation, the
// server's directory is bind-mounted at the same path inside the root (chroot.go), so
// Root is the same path for Dovecot and for twinbox on the host.
func StartServer(t testing.TB, o ServerOptions) *Server {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s (%s=1 makes this fatal)", msg, RequireEnv)
		}
		t.Skipf("skipping: %s (set %s=1 to fail instead)", msg, RequireEnv)
	}
	e, err := o.Dovecot.probe()
	if err != nil {
		skip("%v", err)
	}
	if os.Geteuid() != 0 || !e.switchTo {
		skip("a Dovecot server needs root (to switch to user %s)", TestUser)
	}
	if o.Name == "" {
		o.Name = "x"
	}
	dir, err := os.MkdirTemp("", "twinbox-dovecot-"+o.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Name: o.Name, Dir: dir, Root: filepath.Join(dir, "mail"), LogPath: filepath.Join(dir, "dovecot.log"),
		User: e.userName, Password: Password, conf: filepath.Join(dir, "dovecot.conf"), env: e, t: t}
	t.Cleanup(func() {
		s.Stop()
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("dovecot %s: kept %s (log %s)", s.Name, dir, s.LogPath)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"run", "home", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"home", "mail"} {
		if err := os.Chown(filepath.Join(dir, d), e.uid, e.gid); err != nil {
			t.Fatal(err)
		}
	}
	passwd := fmt.Sprintf("%s:{PLAIN}%s::::::\n", e.userName, Password)
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	// A free port may be taken between our probe and Dovecot's bind: retry.
	var lastLog string
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := os.WriteFile(s.conf, []byte(s.config(o, port)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.startMaster(); err != nil {
			t.Fatalf("starting dovecot: %v", err)
		}
		if err := s.waitGreeting(); err != nil {
			lastLog = fmt.Sprintf("%v\n%s", err, s.Log())
			s.Stop()
			if strings.Contains(lastLog, "in use") {
				continue
			}
			t.Fatalf("dovecot %s did not start: %s", o.Name, lastLog)
		}
		return s
	}
	t.Fatalf("dovecot %s did not start after 5 attempts: %s", o.Name, lastLog)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// config is the configuration for one private IMAP server, in the syntax of the
// installation's version.
func (s *Server) config(o ServerOptions, port int) string {
	if s.env.version.Is24() {
		return s.config24(o, port)
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by twinbox integration/dovecot: a private IMAP server for tests.")
	p("base_dir = %s", filepath.Join(s.Dir, "run"))
	p("state_dir = %s", filepath.Join(s.Dir, "state"))
	p("instance_name = twinbox-test-%s-%d", s.Name, port)
	p("log_path = %s", s.LogPath)
	p("hostname = twinbox-%s.test", s.Name)
	p("protocols = imap")
	p("listen = 127.0.0.1")
	p("ssl = no")
	p("disable_plaintext_auth = no")
	p("auth_mechanisms = plain login")
	p("mail_max_userip_connections = 100")
	p("mail_fsync = always")
	if o.VeryDirtySyncs {
		p("maildir_very_dirty_syncs = yes")
	}
	p("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%%u %s\n}", filepath.Join(s.Dir, "passwd"))
	p("userdb {\n  driver = static\n  args = uid=%d gid=%d home=%s mail=maildir:%s\n}", s.env.uid, s.env.gid, filepath.Join(s.Dir, "home"), s.Root)
	p("namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =")
	for _, m := range o.AutoCreate {
		p("  mailbox \"%s\" {\n    auto = create\n  }", m)
	}
	for _, m := range o.AutoSubscribe {
		p("  mailbox \"%s\" {\n    auto = subscribe\n  }", m)
	}
	p("}")
	p("service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n    port = %d\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}", port)
	return b.String()
}

// config24 is config in Dovecot 2.4's syntax: the version settings first,
// auth_allow_cleartext for disable_plaintext_auth, mail_driver/mail_path/mail_home and
// mail_uid/mail_gid for the userdb's mail= and uid/gid fields, passwd_file_path and
// named passdb/userdb sections, and `listen` in an inet_listener for `address`.
func (s *Server) config24(o ServerOptions, port int) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	v := s.env.version
	p("dovecot_config_version = %d.%d.%d", v.Major, v.Minor, v.Patch)
	p("dovecot_storage_version = %d.%d.%d", v.Major, v.Minor, v.Patch)
	p("# Written by twinbox integration/dovecot: a private IMAP server for tests (Dovecot 2.4).")
	p("base_dir = %s", filepath.Join(s.Dir, "run"))
	p("state_dir = %s", filepath.Join(s.Dir, "state"))
	p("instance_name = twinbox-test-%s-%d", s.Name, port)
	p("log_path = %s", s.LogPath)
	p("hostname = twinbox-%s.test", s.Name)
	p("protocols = imap")
	p("listen = 127.0.0.1")
	p("ssl = no")
	p("auth_allow_cleartext = yes")
	p("auth_mechanisms = plain login")
	p("mail_max_userip_connections = 100")
	p("mail_fsync = always")
	if o.VeryDirtySyncs {
		p("maildir_very_dirty_syncs = yes")
	}
	p("mail_driver = maildir")
	p("mail_path = %s", s.Root)
	p("mail_home = %s", filepath.Join(s.Dir, "home"))
	p("mail_uid = %d", s.env.uid)
	p("mail_gid = %d", s.env.gid)
	p("passdb passwd-file {\n  passwd_file_path = %s\n  default_password_scheme = PLAIN\n}", filepath.Join(s.Dir, "passwd"))
	p("userdb static {\n}")
	p("namespace inbox {\n  inbox = yes\n  separator = /\n  prefix =")
	for _, m := range o.AutoCreate {
		p("  mailbox \"%s\" {\n    auto = create\n  }", m)
	}
	for _, m := range o.AutoSubscribe {
		p("  mailbox \"%s\" {\n    auto = subscribe\n  }", m)
	}
	p("}")
	p("service imap-login {\n  inet_listener imap {\n    listen = 127.0.0.1\n    port = %d\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}", port)
	return b.String()
}

// waitGreeting waits (a bounded number of tries) until the server greets on its port.
func (s *Server) waitGreeting() error {
	var last error
	for i := 0; i < 200; i++ {
		select {
		case <-s.done:
			out, _ := os.ReadFile(filepath.Join(s.Dir, "master.out"))
			s.master = nil
			return fmt.Errorf("the dovecot master exited: %s", out)
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, 2*time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && strings.HasPrefix(line, "* OK") {
				return nil
			}
			last = fmt.Errorf("greeting %q: %v", line, err)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no IMAP greeting on %s: %v", s.Addr, last)
}

// startMaster runs the Dovecot master in the foreground (-F) as our child, its own
// output going to master.out in the working directory. In a chroot the child is, after
// unshare, sh and chroot exec'd themselves, the master itself.
func (s *Server) startMaster() error {
	out, err := os.Create(filepath.Join(s.Dir, "master.out"))
	if err != nil {
		return err
	}
	cmd := s.env.command(nil, []string{s.Dir}, false, s.env.dovecot, "-F", "-c", s.conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return err
	}
	s.master, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}(s.done)
	return nil
}

// Stop stops the server: SIGTERM to the master, then SIGKILL to its process group if
// it does not exit (a bounded wait). Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.master == nil {
		return
	}
	cmd, done := s.master, s.done
	s.master = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Log returns Dovecot's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// ConfigPath is the server's configuration file (for doveadm -c).
func (s *Server) ConfigPath() string { return s.conf }

// DoveadmCommand is the shell command line that runs doveadm against this server as
// root (for hooks; doveadm switches to the user for -u): `doveadm -c CONF`, wrapped in
// the unshare/chroot of a chroot installation. Arguments may follow it.
func (s *Server) DoveadmCommand() string {
	cmd := s.env.command(nil, []string{s.Dir}, false, s.env.doveadm, "-c", s.conf)
	return shellQuote(cmd.Args)
}

// Doveadm runs doveadm with the server's config (as root; doveadm switches to the user
// for -u) and returns its combined output.
func (s *Server) Doveadm(args ...string) (string, error) {
	cmd := s.env.command(nil, []string{s.Dir}, false, s.env.doveadm, append([]string{"-c", s.conf}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Version is the server's Dovecot version.
func (s *Server) Version() Version { return s.env.version }

// Own gives the mail root and everything under it to the mail user (after a test wrote
// files there as root).
func (s *Server) Own(path string) error {
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := os.Lchown(p, s.env.uid, s.env.gid); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
}

// UID and GID are the mail user's ids.
func (s *Server) UID() int { return s.env.uid }
func (s *Server) GID() int { return s.env.gid }
