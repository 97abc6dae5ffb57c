//go:build !unix

package maildir

// chownLike is a no-op where file ownership is not Unix-like.
func chownLike(path, like, dir string) error { return nil }
