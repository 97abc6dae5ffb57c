package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// minSecret is the shortest shared secret accepted, in bytes.
const minSecret = 32

// readSecret reads a shared secret file: base64 text (one line, as made by
// `head -c 32 /dev/urandom | base64`) of at least 32 bytes. The file must
// not be readable by group or others.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: readable by group or others (mode %v): chmod 600", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %v", path, err)
	}
	if len(key) < minSecret {
		return nil, errors.New(path + ": shorter than 32 bytes once decoded")
	}
	return key, nil
}
