package imap

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// uidlistWatch records every version of the dovecot-uidlist files of some
// mailbox directories that inotify reports (written in place, or renamed
// into place), with the time it saw it, and one line per message file
// created, renamed or removed in their cur/, new/ and tmp/: when a stress
// run fails on a Dovecot warning about a uidlist ("Duplicate file entry"),
// the kept log shows what the file held and when, and how a file got its
// name (a save renames it from tmp/ into cur/ or new/). A diagnostic: it
// never fails a test, and versions that come and go between two reads are
// missed.
type uidlistWatch struct {
	f     *os.File       // the inotify descriptor, non-blocking (Close ends a Read)
	names map[int]string // watch descriptor -> label ("A INBOX")
	dirs  map[int]string
	subs  map[int]string // watch descriptor of a cur/, new/ or tmp/ -> its name
	mu    sync.Mutex
	nver  int // uidlist versions recorded
	log   bytes.Buffer
	done  chan struct{}
	once  sync.Once
}

// maxWatchLog bounds what a watch keeps.
const maxWatchLog = 8 << 20

// watchUidlists starts watching dir/dovecot-uidlist for each label -> dir;
// nil when inotify is not available.
func watchUidlists(dirs map[string]string) *uidlistWatch {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	w := &uidlistWatch{f: os.NewFile(uintptr(fd), "inotify"), names: map[int]string{}, dirs: map[int]string{}, subs: map[int]string{}, done: make(chan struct{})}
	for label, dir := range dirs {
		wd, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO|syscall.IN_MODIFY)
		if err != nil {
			continue
		}
		w.names[wd], w.dirs[wd] = label, dir
		for _, sub := range []string{"cur", "new", "tmp"} {
			swd, err := syscall.InotifyAddWatch(fd, filepath.Join(dir, sub), syscall.IN_CREATE|syscall.IN_MOVED_TO|syscall.IN_MOVED_FROM|syscall.IN_DELETE)
			if err != nil {
				continue
			}
			w.names[swd], w.dirs[swd], w.subs[swd] = label, dir, sub
		}
	}
	go w.run()
	return w
}

func (w *uidlistWatch) run() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
				name = string(bytes.TrimRight(raw, "\x00"))
			}
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if sub, ok := w.subs[int(ev.Wd)]; ok {
				w.mu.Lock()
				if w.log.Len() < maxWatchLog {
					fmt.Fprintf(&w.log, "--- %s %s %s/ %s %s\n", time.Now().Format("15:04:05.000000"), w.names[int(ev.Wd)], sub, fileEvName(ev.Mask), name)
				}
				w.mu.Unlock()
				continue
			}
			if name != "dovecot-uidlist" {
				continue
			}
			label, dir := w.names[int(ev.Wd)], w.dirs[int(ev.Wd)]
			data, err := os.ReadFile(filepath.Join(dir, name))
			var ino uint64
			if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
				ino = fi.Sys().(*syscall.Stat_t).Ino
			}
			w.mu.Lock()
			if w.log.Len() < maxWatchLog {
				fmt.Fprintf(&w.log, "--- %s %s %s inode %d (%v)\n%s", time.Now().Format("15:04:05.000000"), label, evName(ev.Mask), ino, err, data)
				w.nver++
			}
			w.mu.Unlock()
		}
	}
}

func evName(m uint32) string {
	switch {
	case m&syscall.IN_MOVED_TO != 0:
		return "renamed into place"
	case m&syscall.IN_CLOSE_WRITE != 0:
		return "closed after writing"
	default:
		return "modified"
	}
}

func fileEvName(m uint32) string {
	switch {
	case m&syscall.IN_MOVED_TO != 0:
		return "renamed in:"
	case m&syscall.IN_MOVED_FROM != 0:
		return "renamed out:"
	case m&syscall.IN_CREATE != 0:
		return "created:"
	default:
		return "removed:"
	}
}

// versions reports how many file versions the watch recorded so far.
func (w *uidlistWatch) versions() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nver
}

// stop ends the watch (once) and returns what it recorded.
func (w *uidlistWatch) stop() string {
	if w == nil {
		return ""
	}
	w.once.Do(func() {
		w.f.Close()
		select {
		case <-w.done:
		case <-time.After(5 * time.Second):
		}
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.String()
}
