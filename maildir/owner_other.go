//go:build !unix

package maildir

import "os"

// chownLike is a no-op where file ownership is not Unix-like.
func chownLike(path, like, dir string) error { return nil }

// Owner is a user and group to give files.
type Owner struct{ UID, GID int }

// OwnerOf returns nil: file ownership is not Unix-like here.
func OwnerOf(dir string) (*Owner, error) { return nil, nil }

// inodeOf returns 0: no inode numbers here.
func inodeOf(fi os.FileInfo) uint64 { return 0 }
