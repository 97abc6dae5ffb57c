// Package config reads twinbox.toml: where users' mail lives, who this host
// is among the replicas, its peer, and the settings of the SSH, tcp and tcps
// transports. Environment variables override the file; command-line flags
// override both (the caller applies those).
//
// Secrets are never in the file itself nor on a command line: the file names
// the files that hold them.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where twinbox looks for its configuration.
const DefaultPath = "/etc/twinbox/twinbox.toml"

// CurrentVersion is the configuration format this build reads.
const CurrentVersion = 1

// DefaultSSHCommand reaches a peer's `twinbox serve` through OpenSSH (the
// remote: peer form), like dsync's ssh_command.
const DefaultSSHCommand = "ssh -l%{login} %{host} twinbox serve -u %u"

// DefaultSSHPrefixCommand is the remoteprefix: form: the user name goes
// first on the connection, for a forced command (`twinbox wrapper`).
const DefaultSSHPrefixCommand = "ssh -l%{login} %{host} twinbox serve --user-prefix"

// Config is the whole file.
type Config struct {
	Version int `toml:"version"`
	// ReplicaID names this host among the replicas (default: the host
	// name). Two hosts must never share one.
	ReplicaID string `toml:"replica_id"`
	// Peer is the other replica (mail_replica in dsync's terms), in any
	// form `twinbox sync -u USER PEER` accepts.
	Peer string `toml:"peer"`
	// FlagChangeCommand runs (/bin/sh -c) after a sync that changed flags
	// on a replica of this host, with TWINBOX_ROOT, TWINBOX_USER and
	// TWINBOX_MAILBOXES set: for maildir_very_dirty_syncs, e.g.
	// doveadm force-resync -u "$TWINBOX_USER" '*' (docs/dovecot.md).
	FlagChangeCommand string `toml:"flag_change_command"`
	// DovecotConfig is the Dovecot configuration whose mailbox special-use
	// flags (`mailbox Trash { special_use = \Trash }`) exempt a mailbox from
	// the mass-expunge guard, read with `doveconf -c FILE -n` when a scan
	// first suspects a mass expunge. "" is doveconf's own default
	// (/etc/dovecot/dovecot.conf); "none" reads no Dovecot configuration.
	DovecotConfig string `toml:"dovecot_config"`

	Users  Users  `toml:"users"`
	SSH    SSH    `toml:"ssh"`
	SSHD   SSHD   `toml:"sshd"` // defaults: :2222, /etc/twinbox/ssh_host_ed25519_key, /etc/twinbox/authorized_keys
	Listen Listen `toml:"listen"`
	Client Client `toml:"client"`

	// Path is the file this was read from ("" if none).
	Path string `toml:"-"`
	md   toml.MetaData
}

// Defined reports whether the file set a key ("sshd.authorized_keys").
func (c *Config) Defined(key string) bool {
	return c.md.IsDefined(strings.Split(key, ".")...)
}

// Users says which users exist and where their mail is.
type Users struct {
	// PasswdFile is a Dovecot passwd-file (user:pass:uid:gid:gecos:home:
	// shell:extra); the mail location comes from its userdb_mail= / mail=
	// extra field, else from Path with %h the home.
	PasswdFile string `toml:"passwd_file"`
	// Path is a mail location template: /var/vmail/%d/%n/Maildir, or
	// maildir:%h/Maildir:LAYOUT=fs. %u user, %n its local part, %d its
	// domain, %h home (passwd_file only), %% a percent sign.
	Path string `toml:"path"`
	// Command lists the users, one per line (the first word of each line);
	// their mail is at Path.
	Command string `toml:"command"`
	// UID and GID, if set, own every user's mail (a name or a number);
	// else the passwd-file's fields, else the owner of the mail root.
	UID string `toml:"uid"`
	GID string `toml:"gid"`
}

// SSH is the client side of the OpenSSH and ssh:// transports.
type SSH struct {
	// Command is the remote: command template: %{login} %{host} %{port}
	// %u (the user). A token whose placeholder is empty is left out.
	Command string `toml:"command"`
	// PrefixCommand is the remoteprefix: template.
	PrefixCommand string `toml:"prefix_command"`
	// For ssh:// (the built-in client): the command run there (%u the
	// user), keys, known hosts.
	RemoteCommand    string   `toml:"remote_command"`
	IdentityFiles    []string `toml:"identity_files"`
	KnownHosts       []string `toml:"known_hosts"`
	AcceptNewHostKey bool     `toml:"accept_new_host_key"`
	Agent            bool     `toml:"agent"`
	ConnectTimeout   Duration `toml:"connect_timeout"`
}

// SSHD is the embedded SSH server.
type SSHD struct {
	Listen           string   `toml:"listen"`
	HostKey          string   `toml:"host_key"`
	AuthorizedKeys   string   `toml:"authorized_keys"`
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	IdleTimeout      Duration `toml:"idle_timeout"`
	MaxSession       Duration `toml:"max_session"`
}

// Listen is the tcp: / tcps: listener.
type Listen struct {
	TCP  string `toml:"tcp"`  // address for tcp: (authenticated, encrypted with the shared secret)
	TCPS string `toml:"tcps"` // address for tcps: (TLS 1.3)
	// TLS server certificate and key (tcps), and the CA that client
	// certificates must chain to (optional; required when set).
	CertFile         string   `toml:"cert_file"`
	KeyFile          string   `toml:"key_file"`
	ClientCAFile     string   `toml:"client_ca_file"`
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	IdleTimeout      Duration `toml:"idle_timeout"`
	MaxSession       Duration `toml:"max_session"`
	MaxConns         int      `toml:"max_conns"`
	Secrets          []Secret `toml:"secret"`
}

// Secret is one shared secret a listener accepts.
type Secret struct {
	Name  string   `toml:"name"`
	File  string   `toml:"file"`
	Users []string `toml:"users"` // patterns (* and ?) of the users it may replicate
}

// Client is the client side of tcp: and tcps:.
type Client struct {
	SecretName string `toml:"secret_name"`
	SecretFile string `toml:"secret_file"`
	CAFile     string `toml:"ca_file"` // tcps: trust this CA instead of the system roots
	CertFile   string `toml:"cert_file"`
	KeyFile    string `toml:"key_file"`
}

// Duration is a time.Duration written as "30s" in the file.
type Duration struct{ time.Duration }

// UnmarshalText reads "30s", "5m", "12h".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Default is the configuration without a file.
func Default() *Config {
	c := &Config{Version: CurrentVersion}
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.ReplicaID == "" {
		if h, err := os.Hostname(); err == nil {
			c.ReplicaID = h
		}
	}
	if c.SSH.Command == "" {
		c.SSH.Command = DefaultSSHCommand
	}
	if c.SSH.PrefixCommand == "" {
		c.SSH.PrefixCommand = DefaultSSHPrefixCommand
	}
	if c.SSH.ConnectTimeout.Duration == 0 {
		c.SSH.ConnectTimeout.Duration = 30 * time.Second
	}
	for _, d := range []*Duration{&c.SSHD.HandshakeTimeout, &c.Listen.HandshakeTimeout} {
		if d.Duration == 0 {
			d.Duration = 30 * time.Second
		}
	}
	// Idle: long enough for the peer's longest scan of its own replica.
	for _, d := range []*Duration{&c.SSHD.IdleTimeout, &c.Listen.IdleTimeout} {
		if d.Duration == 0 {
			d.Duration = 30 * time.Minute
		}
	}
	for _, d := range []*Duration{&c.SSHD.MaxSession, &c.Listen.MaxSession} {
		if d.Duration == 0 {
			d.Duration = 12 * time.Hour
		}
	}
	if c.SSH.RemoteCommand == "" {
		c.SSH.RemoteCommand = "twinbox serve -u %u"
	}
	if c.SSHD.Listen == "" {
		c.SSHD.Listen = ":2222"
	}
	if c.SSHD.HostKey == "" {
		c.SSHD.HostKey = "/etc/twinbox/ssh_host_ed25519_key"
	}
	if c.SSHD.AuthorizedKeys == "" {
		c.SSHD.AuthorizedKeys = "/etc/twinbox/authorized_keys"
	}
	if c.Listen.MaxConns == 0 {
		c.Listen.MaxConns = 64
	}
}

// Load reads the configuration: path if given, else $TWINBOX_CONFIG, else
// DefaultPath if it exists, else the defaults. Environment overrides are
// applied, and the result is checked.
func Load(path string) (*Config, error) {
	explicit := path != ""
	if path == "" {
		path = os.Getenv("TWINBOX_CONFIG")
		explicit = path != ""
	}
	if path == "" {
		path = DefaultPath
	}
	c := &Config{}
	f, err := os.Open(path)
	switch {
	case err == nil:
		defer f.Close()
		if err := c.decode(f, path); err != nil {
			return nil, err
		}
		c.Path = path
	case errors.Is(err, os.ErrNotExist) && !explicit:
		c.Version = CurrentVersion
	default:
		return nil, fmt.Errorf("config: %w", err)
	}
	c.applyEnv()
	c.fill()
	if err := c.Check(); err != nil {
		return nil, err
	}
	return c, nil
}

// maxFile bounds the configuration file.
const maxFile = 1 << 20

func (c *Config) decode(r io.Reader, path string) error {
	b, err := io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > maxFile {
		return fmt.Errorf("config %s: larger than %d bytes", path, maxFile)
	}
	md, err := toml.Decode(string(b), c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	c.md = md
	if und := md.Undecoded(); len(und) > 0 {
		var keys []string
		for _, k := range und {
			keys = append(keys, k.String())
		}
		return fmt.Errorf("config %s: unknown setting(s): %s", path, strings.Join(keys, ", "))
	}
	if !md.IsDefined("version") {
		return fmt.Errorf("config %s: no version (write `version = %d` at the top)", path, CurrentVersion)
	}
	if c.Version != CurrentVersion {
		return fmt.Errorf("config %s: version %d, this build reads version %d", path, c.Version, CurrentVersion)
	}
	return nil
}

// Env lists the environment variables that override the file.
var Env = []struct{ Name, Setting string }{
	{"TWINBOX_REPLICA_ID", "replica_id"},
	{"TWINBOX_PEER", "peer"},
	{"TWINBOX_DOVECOT_CONFIG", "dovecot_config"},
	{"TWINBOX_USERS_PASSWD_FILE", "users.passwd_file"},
	{"TWINBOX_USERS_PATH", "users.path"},
	{"TWINBOX_USERS_COMMAND", "users.command"},
	{"TWINBOX_SSH_COMMAND", "ssh.command"},
	{"TWINBOX_SSH_PREFIX_COMMAND", "ssh.prefix_command"},
	{"TWINBOX_SSH_REMOTE_COMMAND", "ssh.remote_command"},
	{"TWINBOX_SSHD_LISTEN", "sshd.listen"},
	{"TWINBOX_SSHD_HOST_KEY", "sshd.host_key"},
	{"TWINBOX_SSHD_AUTHORIZED_KEYS", "sshd.authorized_keys"},
	{"TWINBOX_LISTEN_TCP", "listen.tcp"},
	{"TWINBOX_LISTEN_TCPS", "listen.tcps"},
	{"TWINBOX_CLIENT_SECRET_NAME", "client.secret_name"},
	{"TWINBOX_CLIENT_SECRET_FILE", "client.secret_file"},
	{"TWINBOX_CLIENT_CA_FILE", "client.ca_file"},
}

func (c *Config) field(setting string) *string {
	switch setting {
	case "replica_id":
		return &c.ReplicaID
	case "peer":
		return &c.Peer
	case "dovecot_config":
		return &c.DovecotConfig
	case "users.passwd_file":
		return &c.Users.PasswdFile
	case "users.path":
		return &c.Users.Path
	case "users.command":
		return &c.Users.Command
	case "ssh.command":
		return &c.SSH.Command
	case "ssh.prefix_command":
		return &c.SSH.PrefixCommand
	case "ssh.remote_command":
		return &c.SSH.RemoteCommand
	case "sshd.listen":
		return &c.SSHD.Listen
	case "sshd.host_key":
		return &c.SSHD.HostKey
	case "sshd.authorized_keys":
		return &c.SSHD.AuthorizedKeys
	case "listen.tcp":
		return &c.Listen.TCP
	case "listen.tcps":
		return &c.Listen.TCPS
	case "client.secret_name":
		return &c.Client.SecretName
	case "client.secret_file":
		return &c.Client.SecretFile
	case "client.ca_file":
		return &c.Client.CAFile
	}
	panic("config: unknown setting " + setting)
}

func (c *Config) applyEnv() {
	for _, e := range Env {
		if v, ok := os.LookupEnv(e.Name); ok {
			*c.field(e.Setting) = v
		}
	}
}

// Set overrides a string setting (for command-line flags).
func (c *Config) Set(setting, value string) { *c.field(setting) = value }

// Check validates the settings that can be checked without touching the
// network: syntax of names and templates, secrets' files and patterns.
func (c *Config) Check() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if c.ReplicaID == "" {
		bad("replica_id is empty and the host name is unknown")
	} else if err := checkName(c.ReplicaID); err != nil {
		bad("replica_id %q: %v", c.ReplicaID, err)
	}
	n := 0
	if c.Users.PasswdFile != "" {
		n++
	}
	if c.Users.Command != "" {
		n++
		if c.Users.Path == "" {
			bad("users.command needs users.path (where each user's mail is)")
		}
	}
	if c.Users.Path != "" {
		if err := checkTemplate(c.Users.Path, c.Users.PasswdFile != ""); err != nil {
			bad("users.path %q: %v", c.Users.Path, err)
		}
	}
	if n > 1 {
		bad("users: passwd_file and command exclude each other")
	}
	for _, t := range []struct{ name, v string }{{"ssh.command", c.SSH.Command}, {"ssh.prefix_command", c.SSH.PrefixCommand}} {
		if _, err := ExpandCommand(t.v, map[string]string{"login": "l", "host": "h", "port": "22", "user": "u"}); err != nil {
			bad("%s: %v", t.name, err)
		}
	}
	if c.Listen.TCPS != "" && (c.Listen.CertFile == "" || c.Listen.KeyFile == "") {
		bad("listen.tcps needs listen.cert_file and listen.key_file")
	}
	if (c.Listen.TCP != "" || c.Listen.TCPS != "") && len(c.Listen.Secrets) == 0 {
		bad("listen.tcp/tcps need at least one [[listen.secret]]")
	}
	seen := map[string]bool{}
	for i, s := range c.Listen.Secrets {
		switch {
		case s.Name == "":
			bad("listen.secret #%d: no name", i+1)
		case seen[s.Name]:
			bad("listen.secret %q: named twice", s.Name)
		case s.File == "":
			bad("listen.secret %q: no file", s.Name)
		case len(s.Users) == 0:
			bad("listen.secret %q: no users (give patterns, \"*\" for all)", s.Name)
		}
		seen[s.Name] = true
	}
	if (c.Client.SecretName == "") != (c.Client.SecretFile == "") {
		bad("client.secret_name and client.secret_file go together")
	}
	if len(errs) > 0 {
		where := "config"
		if c.Path != "" {
			where = "config " + c.Path
		}
		return fmt.Errorf("%s: %s", where, strings.Join(errs, "; "))
	}
	return nil
}

// checkName accepts replica IDs and secret names: printable, no spaces.
func checkName(s string) error {
	if len(s) > 255 {
		return errors.New("longer than 255 bytes")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return errors.New("contains a space or control character")
		}
	}
	return nil
}

// checkTemplate checks a mail location template's placeholders.
func checkTemplate(t string, haveHome bool) error {
	_, err := expand(t, "user@example.org", "/home/user", haveHome)
	return err
}

// Effective writes the settings in force, as TOML, with where each
// override came from as comments. Secrets' contents are never printed.
func (c *Config) Effective(w io.Writer) error {
	src := "defaults (no file)"
	if c.Path != "" {
		src = c.Path
	}
	fmt.Fprintf(w, "# effective twinbox configuration, from %s\n", src)
	var over []string
	for _, e := range Env {
		if _, ok := os.LookupEnv(e.Name); ok {
			over = append(over, e.Name+" -> "+e.Setting)
		}
	}
	sort.Strings(over)
	for _, o := range over {
		fmt.Fprintf(w, "# overridden by %s\n", o)
	}
	enc := toml.NewEncoder(w)
	enc.Indent = ""
	return enc.Encode(c)
}
