package dovecot

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// CopyTree copies the directory tree src to dst like `cp -a`: directories, regular files
// and symbolic links with their permissions and modification times (a Maildir message's
// mtime is its INTERNALDATE), and their owners when running as root. dst must not exist.
// Other file types are an error.
func CopyTree(src, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("copy: %s already exists", dst)
	}
	type dirTimes struct {
		path         string
		atime, mtime time.Time
	}
	var dirs []dirTimes
	root := os.Geteuid() == 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		atime, mtime := fileTimes(info)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case info.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirTimes{target, atime, mtime})
		case info.Mode().IsRegular():
			if err := copyFile(p, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("copy: %s: unsupported file type %v", p, info.Mode().Type())
		}
		if root {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
					return err
				}
			}
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Chmod(target, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		if !info.IsDir() {
			return os.Chtimes(target, atime, mtime)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	// Directory times last, deepest first: creating entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chtimes(dirs[i].path, dirs[i].atime, dirs[i].mtime); err != nil {
			return err
		}
	}
	return nil
}

// fileTimes returns the times to give a copy: atime is not preserved (it means nothing
// to a Maildir), so both are the mtime.
func fileTimes(info fs.FileInfo) (atime, mtime time.Time) {
	return info.ModTime(), info.ModTime()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
