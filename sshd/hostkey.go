package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/twinbox-mail/twinbox/maildir"
)

// loadOrCreateHostKey returns the host key at path, creating an ed25519 key
// there (mode 0600, and its public half in path.pub) when there is none.
// created reports a new key. A key file that group or others may read or
// write, or that does not parse, is an error: the server does not start.
func loadOrCreateHostKey(path string) (signer gossh.Signer, created bool, err error) {
	if path == "" {
		return nil, false, errors.New("no host key file configured")
	}
	s, err := loadHostKey(path)
	if err == nil {
		return s, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	s, err = createHostKey(path)
	if errors.Is(err, fs.ErrExist) {
		// Another process made it between our two looks: use its key.
		s, err = loadHostKey(path)
		return s, false, err
	}
	return s, err == nil, err
}

func loadHostKey(path string) (gossh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("host key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("host key %s is accessible by group or others (mode %04o): refusing to use it; chmod 600 it (and consider it exposed)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		var pm *gossh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("host key %s is encrypted with a passphrase: the server needs an unencrypted key", path)
		}
		return nil, fmt.Errorf("host key %s does not parse as an OpenSSH or PEM private key: %v", path, err)
	}
	return s, nil
}

// createHostKey writes a new ed25519 key: a complete temporary file first,
// then a hard link to path, which fails if path exists (never overwrites).
func createHostKey(path string) (gossh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "twinbox sshd host key")
	if err != nil {
		return nil, err
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	tmp := fmt.Sprintf("%s.new%d", path, time.Now().UnixNano())
	err = maildir.WriteFileAtomic(tmp, 0o600, time.Time{}, func(w io.Writer) error {
		return pem.Encode(w, block)
	})
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("host key: fsync %s: %w", dir, err)
		}
	}
	pub := gossh.MarshalAuthorizedKey(signer.PublicKey())
	err = maildir.WriteFileAtomic(path+".pub", 0o644, time.Time{}, func(w io.Writer) error {
		_, err := w.Write(pub)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("host key: public half: %w", err)
	}
	return signer, nil
}
