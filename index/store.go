package index

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/twinbox-mail/twinbox/maildir"
	"github.com/twinbox-mail/twinbox/model"
	"github.com/twinbox-mail/twinbox/sync/replica"
)

// DBName is the index file in a replica's root (or under --index-dir).
const DBName = "twinbox.db"

// indexVersion is the format of the index; other formats are refused.
const indexVersion = "2"

// ErrLocked is returned when another process holds the user's index.
var ErrLocked = errors.New("another twinbox process holds this replica's lock")

var (
	bMeta  = []byte("meta")
	bBoxes = []byte("boxes")
	bMsgs  = []byte("msgs")
	bSubs  = []byte("subs")
	bPeers = []byte("peers")
	bGUIDs = []byte("guids")
	// bTGUIDs finds a message GUID's expunge tombstones: key msgGUID \0
	// boxGUID uid(4 bytes), no value. Added within format "2": an index
	// without it gets it built at open. Entries are hints, checked against
	// the tombstone itself when read.
	bTGUIDs = []byte("tguids")

	bUID  = []byte("uid")
	bMod  = []byte("mod")
	bTomb = []byte("tomb")
	bTMod = []byte("tmod")
)

// Box is the index's record of one mailbox: the replicated fields and what
// the last scan saw on disk.
type Box struct {
	model.Mailbox
	Dir      string   `json:"dir,omitempty"` // relative to the root; "" is INBOX
	Keywords []string `json:"keywords,omitempty"`
	// Revived marks the DELETE records for the mailbox's GUID in
	// dovecot.mailbox.log that were there when this replica last found it
	// alive (first seen, made by a sync, adopted by a merge, its directory
	// back): those are of an earlier life. It is the latest record's time
	// (Unix ns, a whole second) plus the number of records of that second
	// (lifeMark); an index written before session 9 holds the time alone,
	// which covers every record of that second.
	Revived int64 `json:"revived,omitempty"`
	Held    int   `json:"held,omitempty"` // messages held back by the mass-expunge guard
	Stamp   Stamp `json:"stamp"`
}

// Stamp is what a scan compares to decide that a mailbox did not change.
type Stamp struct {
	Cur, New, Uidlist, Keywords int64 // mtimes in ns, -1 when missing
	UidlistSize, UidlistIno     int64
	// Racy marks the directory and keywords mtimes that were too recent
	// to vouch for what the scan read (settled): bit 0 Cur, 1 New, 2
	// Keywords. (The uidlist is told by its size and inode as well: a
	// change rewrites it through a new file or appends to it.)
	Racy uint8 `json:",omitempty"`
}

// racyWindow: a stamp's mtime this close to the time the stamp was taken
// (or later) may be shared by a change made after it. File times come
// from a coarse clock: Linux before 6.13 (and tmpfs on later ones) stamps
// with the time of the last timer tick, 1-10 ms; ext3, FAT and many NFS
// servers keep whole (FAT: even) seconds. A message Dovecot expunged or
// renamed in the tick of the stamp, after the listing, leaves the
// directory's mtime as it was, and a scan that trusted it would never see
// the change. An mtime with a fraction of a second comes from a file
// system with sub-second times: 50 ms covers the coarsest tick (and the
// lag of the coarse clock behind time.Now) with room to spare; a whole
// second's mtime may come from a whole-second file system: 2 s, as
// Dovecot's maildir sync keeps a second (MAILDIR_SYNC_SECS) and FAT two.
// (A whole-second mtime on a fine file system, one in 10^9, costs one
// more listing.) Clocks of an NFS client and server that drift apart by
// more than the window are not covered, as they are not for Dovecot.
const (
	racyWindow      = 50 * time.Millisecond
	racyWindowWhole = 2 * time.Second
)

// stampRacy stands, in the stamp a scan compares with (trusted), for an
// mtime too recent to vouch for the directory: it equals no mtime a stat
// returns, so the scan reads that part again.
const stampRacy = -2

// racyTimes are the mtimes a racy mark can cover, in the order of their
// bits in Stamp.Racy (racyNew is the second).
func (s *Stamp) racyTimes() [3]*int64 { return [3]*int64{&s.Cur, &s.New, &s.Keywords} }

const racyNew uint8 = 1 << 1

// settled returns the stamp to keep: each mtime within the racy window of
// at (Unix ns, taken before the stamp) is marked racy.
func (s Stamp) settled(at int64) Stamp {
	for i, p := range s.racyTimes() {
		w := racyWindow
		if *p%int64(time.Second) == 0 {
			w = racyWindowWhole
		}
		if *p > at-int64(testRacyWindow(w)) {
			s.Racy |= 1 << i
		}
	}
	return s
}

// trusted is the stamp a scan compares with the disk: the racy mtimes
// replaced by stampRacy, which no stat returns. (An apply compares the
// raw stamp: it only asks whether the index read the directory as it is
// now, and what it keeps is settled again.)
func (s Stamp) trusted() Stamp {
	for i, p := range s.racyTimes() {
		if s.Racy&(1<<i) != 0 {
			*p = stampRacy
		}
	}
	s.Racy = 0
	return s
}

// withNew is s with o's new/ mtime and racy mark: an apply keeps new/'s
// time from before its writes (so that a delivery since shows), marked as
// racy or not by when that time was read.
func (s Stamp) withNew(o Stamp) Stamp {
	s.New = o.New
	s.Racy = s.Racy&^racyNew | o.Racy&racyNew
	return s
}

// raw is the stamp without its racy marks.
func (s Stamp) raw() Stamp {
	s.Racy = 0
	return s
}

// stampClock is the time a stamp is taken, for settled: the wall clock
// (file times are the wall clock's, whatever Options.Now says), or a
// test's frozen file clock.
func stampClock() int64 {
	if testHookFrozenFileClock != 0 {
		return testHookFrozenFileClock
	}
	return time.Now().UnixNano()
}

// testHookFrozenFileClock, when not 0, is every mtime stampAt reports and
// the time stampClock tells: a file system whose clock never moves (the
// extreme of a coarse one).
var testHookFrozenFileClock int64

// testHookRacyWindow, when not nil, replaces racyWindow (SetTestRacyWindow).
var testHookRacyWindow *time.Duration

// SetTestRacyWindow is for tests of what a scan reads right after a sync
// wrote (which a real scan reads again, racyWindow): d replaces racyWindow
// until the returned function is called; 0 makes a stamp racy only where
// a file changed after it was taken, as if the file clock had moved on.
// Not safe while a scan runs.
func SetTestRacyWindow(d time.Duration) (restore func()) {
	testHookRacyWindow = &d
	return func() { testHookRacyWindow = nil }
}

func testRacyWindow(d time.Duration) time.Duration {
	if testHookRacyWindow != nil {
		return *testHookRacyWindow
	}
	return d
}

// Msg is the index's record of one message.
type Msg struct {
	model.Message
	File string `json:"file,omitempty"` // last known file name (cur/ or new/)
}

// fileBase is the base name of the message's file on this replica: Base
// (set when the file is not named by the GUID), else the GUID.
func (m *Msg) fileBase() string {
	if m.Base != "" {
		return m.Base
	}
	return m.GUID
}

// fileOK reports whether the recorded file name is the message's own (its
// base is the message's): a record naming another message's file must
// never serve a body.
func (m *Msg) fileOK() bool {
	return m.File != "" && baseOf(m.File) == m.fileBase()
}

// Store is an open index. It holds the replica's lock until Close.
type Store struct {
	db      *bolt.DB
	indexID string
	now     func() time.Time
	touch   atomic.Int64 // records read or written since the last trimMapped
	// unborn: a new index whose first complete scan is still to come
	// (meta/unborn; born.go)
	unborn bool
}

// precreate makes a missing index file already owned as the mail root is
// (when running as root): made under a temporary name, given its owner,
// then linked into place, so that a process of the mail owner (the far end
// of a sync in the other direction) never finds it root's for an instant.
// bolt initialises the empty file. Errors are left to bolt.Open.
func precreate(path string) {
	if os.Geteuid() != 0 {
		return
	}
	if _, err := os.Lstat(path); err == nil {
		return
	}
	tmp := fmt.Sprintf("%s.new.%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return
	}
	f.Close()
	defer os.Remove(tmp)
	if maildir.OwnLike(tmp, filepath.Dir(path)) != nil {
		return
	}
	_ = os.Link(tmp, path) // an existing index (another process's) stays
}

// openStore opens (creating if needed) the index at path, waiting up to timeout
// for another process that holds it.
func openStore(path string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = time.Millisecond
	}
	precreate(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("opening index %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("opening index %s: %w", path, err)
	}
	_ = maildir.OwnLike(path, filepath.Dir(path)) // root-run: the mail owner keeps access
	s := &Store{db: db, now: time.Now}
	// An index made before has its buckets and identity: read them without
	// a write transaction (each commit costs two fdatasyncs).
	ready := false
	_ = db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bBoxes, bMsgs, bSubs, bPeers, bGUIDs, bTGUIDs} {
			if tx.Bucket(b) == nil {
				return nil
			}
		}
		m := tx.Bucket(bMeta)
		if id := m.Get([]byte("index_id")); id != nil && string(m.Get([]byte("version"))) == indexVersion && m.Get(metaDupChecked) != nil {
			s.indexID, ready = string(id), true
			s.unborn = m.Get(metaUnborn) != nil
		}
		return nil
	})
	if ready {
		return s, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bBoxes, bMsgs, bSubs, bPeers, bGUIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(bTGUIDs) == nil {
			if err := buildTGUIDs(tx); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		if id := m.Get([]byte("index_id")); id != nil {
			if v := string(m.Get([]byte("version"))); v != indexVersion {
				return fmt.Errorf("index format %q, this build reads %q: move the file away (the next sync rebuilds it by a full compare)", v, indexVersion)
			}
			s.indexID = string(id)
			s.unborn = m.Get(metaUnborn) != nil
			return checkDupGUIDs(tx) // once (dupguid.go)
		}
		s.indexID = randomHex(16)
		if err := m.Put(metaDupChecked, []byte{1}); err != nil {
			return err
		}
		if err := m.Put([]byte("index_id"), []byte(s.indexID)); err != nil {
			return err
		}
		// A new index: the mail it finds was born before, when is unknown.
		s.unborn = true
		if err := m.Put(metaUnborn, []byte{1}); err != nil {
			return err
		}
		return m.Put([]byte("version"), []byte(indexVersion))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising index %s: %w", path, err)
	}
	return s, nil
}

// Close releases the index and its lock.
func (s *Store) Close() error { return s.db.Close() }

// IndexID is the random identity of this index: a new one means everything
// a peer saved about this replica is stale.
func (s *Store) IndexID() string { return s.indexID }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func randomUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return binary.BigEndian.Uint64(b[:]) | 1
}

// stamp returns a hybrid logical timestamp later than both the clock and
// prev, and records it as the index's latest.
func (s *Store) stamp(tx *bolt.Tx, prev int64) int64 {
	m := tx.Bucket(bMeta)
	var last int64
	if v := m.Get([]byte("hlc")); len(v) == 8 {
		last = int64(binary.BigEndian.Uint64(v))
	}
	t := s.now().UnixNano()
	t = max(t, last+1, prev+1)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t))
	_ = m.Put([]byte("hlc"), b[:])
	return t
}

// observe moves the hybrid clock to at least t (a stamp that came from a
// peer), so that every later local stamp orders after it: a copy a client
// puts back after an instance arrived is born after that instance, whatever
// the clocks of the hosts say.
func (s *Store) observe(tx *bolt.Tx, t int64) {
	m := tx.Bucket(bMeta)
	var last int64
	if v := m.Get([]byte("hlc")); len(v) == 8 {
		last = int64(binary.BigEndian.Uint64(v))
	}
	if t <= last {
		return
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t))
	_ = m.Put([]byte("hlc"), b[:])
}

func u32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getBox(tx *bolt.Tx, g model.MailboxGUID) (*Box, error) {
	v := tx.Bucket(bBoxes).Get(g[:])
	if v == nil {
		return nil, nil
	}
	b, err := decodeBox(v)
	if err != nil {
		return nil, fmt.Errorf("index record of mailbox %s: %w", g, err)
	}
	return b, nil
}

// boxCache holds decoded mailbox records by their encoded bytes: a sync
// reads every mailbox record several times (scan, begin, apply), and
// decoding the JSON was most of what a no-change sync of 40 folders cost.
// A record found here is byte for byte the one decoded, so the cache is
// right for any index and any transaction.
var boxCache struct {
	sync.Mutex
	m map[string]*Box
}

// boxCacheMax bounds boxCache (a server syncing many users): past it the
// cache starts over.
const boxCacheMax = 4096

// decodeBox decodes a mailbox record into a Box of the caller's own.
func decodeBox(v []byte) (*Box, error) {
	boxCache.Lock()
	c := boxCache.m[string(v)]
	boxCache.Unlock()
	if c == nil {
		c = &Box{}
		if !decodeBoxFast(v, c) {
			*c = Box{}
			if err := json.Unmarshal(v, c); err != nil {
				return nil, err
			}
		}
		boxCache.Lock()
		if boxCache.m == nil || len(boxCache.m) >= boxCacheMax {
			boxCache.m = map[string]*Box{}
		}
		boxCache.m[string(v)] = c
		boxCache.Unlock()
	}
	b := *c
	b.Keywords = slices.Clone(c.Keywords)
	return &b, nil
}

func putBox(tx *bolt.Tx, b *Box) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return tx.Bucket(bBoxes).Put(b.GUID[:], v)
}

func allBoxes(tx *bolt.Tx) ([]*Box, error) {
	var out []*Box
	err := tx.Bucket(bBoxes).ForEach(func(k, v []byte) error {
		b, err := decodeBox(v)
		if err != nil {
			return fmt.Errorf("index record of mailbox %x: %w", k, err)
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

// loadBoxes reads every mailbox record in one read transaction.
func (r *Replica) loadBoxes() ([]*Box, error) {
	var boxes []*Box
	err := r.store.db.View(func(tx *bolt.Tx) error {
		var err error
		boxes, err = allBoxes(tx)
		return err
	})
	return boxes, err
}

// boxBuckets returns the per-mailbox buckets, creating them when create.
type boxBuckets struct{ uid, mod, tomb, tmod *bolt.Bucket }

func buckets(tx *bolt.Tx, g model.MailboxGUID, create bool) (*boxBuckets, error) {
	root := tx.Bucket(bMsgs)
	var mb *bolt.Bucket
	if create {
		var err error
		if mb, err = root.CreateBucketIfNotExists(g[:]); err != nil {
			return nil, err
		}
		bb := &boxBuckets{}
		for _, p := range []struct {
			name []byte
			dst  **bolt.Bucket
		}{{bUID, &bb.uid}, {bMod, &bb.mod}, {bTomb, &bb.tomb}, {bTMod, &bb.tmod}} {
			b, err := mb.CreateBucketIfNotExists(p.name)
			if err != nil {
				return nil, err
			}
			*p.dst = b
		}
		return bb, nil
	}
	if mb = root.Bucket(g[:]); mb == nil {
		return nil, nil
	}
	return &boxBuckets{uid: mb.Bucket(bUID), mod: mb.Bucket(bMod), tomb: mb.Bucket(bTomb), tmod: mb.Bucket(bTMod)}, nil
}

// loadMsgs returns a mailbox's message records in UID order.
func loadMsgs(tx *bolt.Tx, g model.MailboxGUID) ([]*Msg, error) {
	bb, err := buckets(tx, g, false)
	if err != nil || bb == nil {
		return nil, err
	}
	var out []*Msg
	err = bb.uid.ForEach(func(k, v []byte) error {
		m, err := decodeMsg(v)
		if err != nil {
			return fmt.Errorf("mailbox %s UID %d: %w", g, binary.BigEndian.Uint32(k), err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

func loadTombs(tx *bolt.Tx, g model.MailboxGUID) ([]model.Tombstone, error) {
	bb, err := buckets(tx, g, false)
	if err != nil || bb == nil {
		return nil, err
	}
	var out []model.Tombstone
	err = bb.tomb.ForEach(func(k, v []byte) error {
		var t model.Tombstone
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("mailbox %s tombstone: %w", g, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// boxTx is a write transaction on one mailbox's records that keeps the
// modseq and GUID indexes right.
type boxTx struct {
	tx  *bolt.Tx
	box *Box
	bb  *boxBuckets
}

func openBoxTx(tx *bolt.Tx, box *Box) (*boxTx, error) {
	bb, err := buckets(tx, box.GUID, true)
	if err != nil {
		return nil, err
	}
	return &boxTx{tx: tx, box: box, bb: bb}, nil
}

func (t *boxTx) get(uid uint32) (*Msg, error) {
	v := t.bb.uid.Get(u32(uid))
	if v == nil {
		return nil, nil
	}
	return decodeMsg(v)
}

func guidKey(msgGUID string, box model.MailboxGUID, uid uint32) []byte {
	k := make([]byte, 0, len(msgGUID)+1+16+4)
	k = append(k, msgGUID...)
	k = append(k, 0)
	k = append(k, box[:]...)
	return append(k, u32(uid)...)
}

// put stores m with a new modseq.
func (t *boxTx) put(m *Msg) error {
	old, err := t.get(m.UID)
	if err != nil {
		return err
	}
	if old != nil {
		_ = t.bb.mod.Delete(u64(old.Modseq))
		if old.GUID != m.GUID {
			_ = t.tx.Bucket(bGUIDs).Delete(guidKey(old.GUID, t.box.GUID, old.UID))
		}
	}
	t.box.Modseq++
	m.Modseq = t.box.Modseq
	if err := t.bb.uid.Put(u32(m.UID), encodeMsg(m)); err != nil {
		return err
	}
	if err := t.bb.mod.Put(u64(m.Modseq), u32(m.UID)); err != nil {
		return err
	}
	if v := t.bb.tomb.Get(u32(m.UID)); v != nil {
		var ot model.Tombstone
		if json.Unmarshal(v, &ot) == nil {
			// Its modseq entry goes too: a stale one would report the next
			// tombstone at this UID twice.
			_ = t.bb.tmod.Delete(u64(ot.Modseq))
			if isExpunge(&ot) {
				_ = t.tx.Bucket(bTGUIDs).Delete(guidKey(ot.GUID, t.box.GUID, m.UID))
			}
		}
		_ = t.bb.tomb.Delete(u32(m.UID))
	}
	return t.tx.Bucket(bGUIDs).Put(guidKey(m.GUID, t.box.GUID, m.UID), nil)
}

// lostAt reports whether uid holds a Lost tombstone of message g.
func (t *boxTx) lostAt(uid uint32, g string) bool {
	v := t.bb.tomb.Get(u32(uid))
	if v == nil {
		return false
	}
	var ot model.Tombstone
	return json.Unmarshal(v, &ot) == nil && ot.Lost && ot.GUID == g
}

// unindexTomb removes the tombstone v at uid from the GUID index. (Its
// modseq entry stays: Changes skips entries whose tombstone is gone.)
func (t *boxTx) unindexTomb(uid uint32, v []byte) {
	var ot model.Tombstone
	if json.Unmarshal(v, &ot) == nil && isExpunge(&ot) {
		_ = t.tx.Bucket(bTGUIDs).Delete(guidKey(ot.GUID, t.box.GUID, uid))
	}
}

func isExpunge(t *model.Tombstone) bool { return t.MovedTo == 0 && !t.Lost }

// buildTGUIDs makes the tombstone GUID index of an index written before it
// existed.
func buildTGUIDs(tx *bolt.Tx) error {
	tg, err := tx.CreateBucket(bTGUIDs)
	if err != nil {
		return err
	}
	return tx.Bucket(bMsgs).ForEach(func(k, _ []byte) error {
		if len(k) != 16 {
			return nil
		}
		var g model.MailboxGUID
		copy(g[:], k)
		tombs, err := loadTombs(tx, g)
		if err != nil {
			return err
		}
		for _, t := range tombs {
			if isExpunge(&t) {
				if err := tg.Put(guidKey(t.GUID, g, t.UID), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// recordsOf returns the records of message GUID mg in mailbox g.
func recordsOf(tx *bolt.Tx, g model.MailboxGUID, mg string) ([]model.Message, error) {
	bb, err := buckets(tx, g, false)
	if err != nil || bb == nil {
		return nil, err
	}
	prefix := make([]byte, 0, len(mg)+1+16)
	prefix = append(append(append(prefix, mg...), 0), g[:]...)
	var out []model.Message
	c := tx.Bucket(bGUIDs).Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+4 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
		v := bb.uid.Get(k[len(prefix):])
		if v == nil {
			continue
		}
		m, err := decodeMsg(v)
		if err != nil {
			return nil, fmt.Errorf("mailbox %s UID %d: %w", g, binary.BigEndian.Uint32(k[len(prefix):]), err)
		}
		if m.GUID == mg {
			out = append(out, m.Message)
		}
	}
	return out, nil
}

// expungesOf returns the expunge tombstones of message GUID mg in mailbox g.
func expungesOf(tx *bolt.Tx, g model.MailboxGUID, mg string) ([]model.Tombstone, error) {
	tg := tx.Bucket(bTGUIDs)
	if tg == nil {
		return nil, nil
	}
	bb, err := buckets(tx, g, false)
	if err != nil || bb == nil {
		return nil, err
	}
	prefix := make([]byte, 0, len(mg)+1+16)
	prefix = append(append(append(prefix, mg...), 0), g[:]...)
	var out []model.Tombstone
	c := tg.Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+4 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
		v := bb.tomb.Get(k[len(prefix):])
		if v == nil {
			continue
		}
		var t model.Tombstone
		if err := json.Unmarshal(v, &t); err != nil {
			return nil, fmt.Errorf("mailbox %s tombstone: %w", g, err)
		}
		if isExpunge(&t) && t.GUID == mg {
			out = append(out, t)
		}
	}
	return out, nil
}

// usedIn reports whether message GUID mg was ever seen in mailbox g on
// this replica as far as the index knows: a live record or an expunge
// tombstone (from the GUID buckets' hints, which may be stale: a stale one
// only errs towards true).
func usedIn(tx *bolt.Tx, g model.MailboxGUID, mg string) bool {
	prefix := make([]byte, 0, len(mg)+1+16)
	prefix = append(append(append(prefix, mg...), 0), g[:]...)
	for _, name := range [][]byte{bGUIDs, bTGUIDs} {
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		if k, _ := b.Cursor().Seek(prefix); k != nil && len(k) == len(prefix)+4 && string(k[:len(prefix)]) == string(prefix) {
			return true
		}
	}
	return false
}

// drop removes the message at uid and, unless tomb is nil, records tomb.
func (t *boxTx) drop(uid uint32, tomb *model.Tombstone) error {
	old, err := t.get(uid)
	if err != nil {
		return err
	}
	if old != nil {
		_ = t.bb.mod.Delete(u64(old.Modseq))
		_ = t.bb.uid.Delete(u32(uid))
		_ = t.tx.Bucket(bGUIDs).Delete(guidKey(old.GUID, t.box.GUID, old.UID))
	}
	if tomb == nil {
		return nil
	}
	if old != nil && old.Born != 0 && (tomb.Born == 0 || old.Born < 0 || tomb.Born < 0 || old.Born < tomb.Born) {
		// The instance this tombstone retires (a peer that did not hear of
		// it yet still holds that instance, and an implied record made
		// from the tombstone carries its Born); an expunge that came from
		// a peer keeps the lower of its Born and the local record's when
		// both are known. An unsure local stamp stays (it names the line
		// of copies of this instance that the tombstone must reach:
		// model.KilledByBorn), and a known one beats an unsure one. The
		// peer's stamp counts only where the local one is unknown.
		tomb.Born = old.Born
	}
	if v := t.bb.tomb.Get(u32(uid)); v != nil {
		var ot model.Tombstone
		if json.Unmarshal(v, &ot) == nil {
			_ = t.bb.tmod.Delete(u64(ot.Modseq))
			if isExpunge(&ot) {
				_ = t.tx.Bucket(bTGUIDs).Delete(guidKey(ot.GUID, t.box.GUID, uid))
			}
		}
	}
	t.box.Modseq++
	tomb.Modseq = t.box.Modseq
	tomb.UID = uid
	v, err := json.Marshal(tomb)
	if err != nil {
		return err
	}
	if err := t.bb.tomb.Put(u32(uid), v); err != nil {
		return err
	}
	if isExpunge(tomb) {
		if err := t.tx.Bucket(bTGUIDs).Put(guidKey(tomb.GUID, t.box.GUID, uid), nil); err != nil {
			return err
		}
	}
	return t.bb.tmod.Put(u64(tomb.Modseq), u32(uid))
}

// resetMessages forgets every message record (not the tombstones).
func (t *boxTx) resetMessages() error {
	var uids []uint32
	if err := t.bb.uid.ForEach(func(k, _ []byte) error {
		uids = append(uids, binary.BigEndian.Uint32(k))
		return nil
	}); err != nil {
		return err
	}
	for _, u := range uids {
		if err := t.drop(u, nil); err != nil {
			return err
		}
	}
	return nil
}

// findGUID returns the (mailbox, UID) pairs that hold message GUID g.
func findGUID(tx *bolt.Tx, g string) []struct {
	Box model.MailboxGUID
	UID uint32
} {
	var out []struct {
		Box model.MailboxGUID
		UID uint32
	}
	prefix := append([]byte(g), 0)
	c := tx.Bucket(bGUIDs).Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+20 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
		var e struct {
			Box model.MailboxGUID
			UID uint32
		}
		copy(e.Box[:], k[len(prefix):len(prefix)+16])
		e.UID = binary.BigEndian.Uint32(k[len(prefix)+16:])
		out = append(out, e)
	}
	return out
}

func getPair(tx *bolt.Tx, peer string) (*replica.PairState, error) {
	v := tx.Bucket(bPeers).Get([]byte(peer))
	if v == nil {
		return nil, nil
	}
	var p replica.PairState
	if decodePairFast(v, &p) {
		return &p, nil
	}
	p = replica.PairState{}
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("saved state for peer %q: %w", peer, err)
	}
	return &p, nil
}

func putPair(tx *bolt.Tx, peer string, p *replica.PairState) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return tx.Bucket(bPeers).Put([]byte(peer), v)
}

func loadSubs(tx *bolt.Tx) ([]model.Subscription, error) {
	var out []model.Subscription
	err := tx.Bucket(bSubs).ForEach(func(k, v []byte) error {
		var s model.Subscription
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("subscription %q: %w", k, err)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func putSub(tx *bolt.Tx, s model.Subscription) error {
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return tx.Bucket(bSubs).Put([]byte(s.Name), v)
}

// putQuiet stores m without a new modseq (local-only fields changed).
func (t *boxTx) putQuiet(m *Msg) error {
	return t.bb.uid.Put(u32(m.UID), encodeMsg(m))
}

// trimAfter is how many records a replica reads or writes between two
// trims of the memory-mapped index (trimMapped): small syncs never trim,
// large ones keep few index pages resident.
const trimAfter = 2048

// touched counts records read or written through the map; past trimAfter
// the touched pages are let go.
func (s *Store) touched(n int) {
	if s.touch.Add(int64(n)) >= trimAfter {
		s.touch.Store(0)
		s.trimMapped()
	}
}
