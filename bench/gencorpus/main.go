// Command gencorpus writes a deterministic, synthetic Maildir++ tree to
// benchmark twinbox against cp -a and doveadm sync/backup.
//
//	go run ./bench/gencorpus -out /tmp/corpus -messages 10000 -folders 20 -seed 1
//
// The tree is INBOX (the root: cur/ new/ tmp/) plus folders-1 Maildir++
// folders (.Sent, .Archive.2024, .Folder02.Sub03, ...), messages spread
// unevenly over them. Messages are RFC 5322 text: median about 4 KB with a
// log-normal-like spread (cut at 256 KB), some multipart/alternative HTML,
// and 0.5% carry a 100 KB-1 MB base64 attachment. File names are
// Dovecot-style, "<secs>.M<usecs>P<pid>.<host>,S=<size>,W=<vsize>:2,<flags>"
// in cur/ and the same without ":2,<flags>" in new/; each file's mtime is
// its delivery time (the name's <secs>, a few seconds after its Date:
// header); every directory's mtime is the corpus's fixed end date.
// No dovecot-uidlist, index or keyword file is written: the tree looks like
// one an MTA delivered into.
//
// The output is a pure function of the flags: same flags, same bytes, names
// and mtimes. It uses no floating point and no math/rand, so it is also the
// same across Go versions and architectures.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// corpusEnd is the corpus's fixed "now": every message is older.
const corpusEnd = 1748736000 // 2025-06-01T00:00:00Z

const (
	day  = 86400
	year = 365 * day
)

func main() {
	out := flag.String("out", "", "output Maildir root (must not exist or be empty)")
	messages := flag.Int("messages", 10000, "number of messages")
	folders := flag.Int("folders", 20, "number of folders, INBOX included")
	seed := flag.Uint64("seed", 1, "seed; the same seed gives the same bytes")
	quiet := flag.Bool("q", false, "no summary on stderr")
	flag.Parse()
	if *out == "" || *messages < 0 || *folders < 1 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gencorpus -out DIR [-messages N] [-folders F] [-seed S] [-q]")
		os.Exit(2)
	}
	st, err := generate(*out, *messages, *folders, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencorpus:", err)
		os.Exit(1)
	}
	if !*quiet {
		fmt.Fprintf(os.Stderr, "gencorpus: %s: %d messages (%d in new/, %d with attachments) in %d folders, %d bytes (%.1f MiB)\n",
			*out, st.messages, st.inNew, st.attachments, st.folders, st.bytes, float64(st.bytes)/(1<<20))
	}
}

// rng is SplitMix64: tiny, fast, and fixed forever (unlike math/rand's
// derived methods, whose streams are not promised to stay the same).
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n); n must be > 0.
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// between returns a number in [lo, hi].
func (r *rng) between(lo, hi int) int { return lo + r.intn(hi-lo+1) }

// chance is true with probability perMille/1000.
func (r *rng) chance(perMille int) bool { return r.intn(1000) < perMille }

func pick[T any](r *rng, xs []T) T { return xs[r.intn(len(xs))] }

// sizeQuantiles[i] is the i/256 quantile of the target message size: a
// log-normal with median 4096 bytes and sigma 0.95, kept within
// [700, 262144]. Sizes are drawn by linear interpolation between
// neighbours (an integer inverse-CDF).
var sizeQuantiles = [257]int{
	700, 700, 700, 700, 700, 700, 700, 700, 700, 734, 768, 801,
	833, 865, 895, 925, 954, 982, 1010, 1038, 1065, 1092, 1119, 1145,
	1171, 1197, 1223, 1248, 1273, 1299, 1324, 1348, 1373, 1398, 1423, 1447,
	1472, 1496, 1520, 1545, 1569, 1593, 1618, 1642, 1666, 1691, 1715, 1739,
	1763, 1788, 1812, 1836, 1861, 1885, 1910, 1934, 1959, 1984, 2008, 2033,
	2058, 2083, 2108, 2133, 2158, 2183, 2209, 2234, 2260, 2285, 2311, 2337,
	2363, 2389, 2415, 2441, 2468, 2494, 2521, 2548, 2575, 2602, 2629, 2656,
	2684, 2711, 2739, 2767, 2795, 2823, 2852, 2880, 2909, 2938, 2967, 2997,
	3026, 3056, 3086, 3116, 3146, 3177, 3207, 3238, 3270, 3301, 3333, 3364,
	3397, 3429, 3461, 3494, 3527, 3561, 3594, 3628, 3662, 3697, 3732, 3767,
	3802, 3838, 3874, 3910, 3946, 3983, 4020, 4058, 4096, 4134, 4173, 4212,
	4251, 4291, 4331, 4372, 4413, 4454, 4496, 4538, 4581, 4624, 4668, 4712,
	4756, 4801, 4847, 4893, 4939, 4987, 5034, 5082, 5131, 5181, 5231, 5281,
	5332, 5384, 5437, 5490, 5544, 5599, 5654, 5710, 5767, 5825, 5883, 5942,
	6002, 6063, 6125, 6188, 6252, 6316, 6382, 6449, 6517, 6585, 6655, 6727,
	6799, 6872, 6947, 7023, 7101, 7179, 7260, 7341, 7425, 7509, 7596, 7684,
	7774, 7866, 7959, 8055, 8152, 8252, 8354, 8458, 8564, 8673, 8785, 8899,
	9016, 9136, 9259, 9385, 9514, 9647, 9784, 9924, 10069, 10218, 10371, 10529,
	10692, 10860, 11034, 11214, 11400, 11593, 11793, 12001, 12217, 12442, 12676, 12920,
	13176, 13443, 13723, 14017, 14327, 14653, 14998, 15363, 15751, 16165, 16607, 17081,
	17592, 18144, 18746, 19404, 20129, 20934, 21837, 22860, 24037, 25414, 27060, 29089,
	31696, 35266, 40719, 51268, 262144,
}

func (r *rng) messageSize() int {
	x := r.next()
	b := int(x >> 56)
	f := int((x >> 40) & 0xffff)
	lo, hi := sizeQuantiles[b], sizeQuantiles[b+1]
	return lo + (hi-lo)*f/65536
}

type folderKind int

const (
	kindInbox folderKind = iota
	kindSent
	kindDrafts
	kindTrash
	kindJunk
	kindArchive
	kindList
	kindPlain
)

type folder struct {
	name        string // Maildir++ name without the leading dot; "" is INBOX
	kind        folderKind
	weight      int
	from, to    int64 // range of its messages' dates
	newPerMille int   // newest messages left in new/
	listID      string
	count       int
}

func (f *folder) dir(root string) string {
	if f.name == "" {
		return root
	}
	return filepath.Join(root, "."+f.name)
}

func ymd(y, m, d int) int64 { return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Unix() }

// fixedFolders come first, in an order where parents precede children.
var fixedFolders = []folder{
	{name: "", kind: kindInbox, weight: 2000, from: corpusEnd - 540*day, newPerMille: 20},
	{name: "Sent", kind: kindSent, weight: 900, from: corpusEnd - 5*year},
	{name: "Drafts", kind: kindDrafts, weight: 15, from: corpusEnd - year},
	{name: "Trash", kind: kindTrash, weight: 120, from: corpusEnd - 60*day},
	{name: "Junk", kind: kindJunk, weight: 150, from: corpusEnd - 30*day, newPerMille: 100},
	{name: "Archive", kind: kindArchive, weight: 300, from: ymd(2019, 1, 1), to: ymd(2023, 1, 1)},
	{name: "Archive.2023", kind: kindArchive, weight: 900, from: ymd(2023, 1, 1), to: ymd(2024, 1, 1)},
	{name: "Archive.2024", kind: kindArchive, weight: 1400, from: ymd(2024, 1, 1), to: ymd(2025, 1, 1)},
	{name: "Lists", kind: kindPlain, weight: 40, from: corpusEnd - 4*year},
	{name: "Lists.golang-nuts", kind: kindList, weight: 1100, from: corpusEnd - 3*year, newPerMille: 10, listID: "golang-nuts.googlegroups.example"},
	{name: "Lists.dovecot", kind: kindList, weight: 600, from: corpusEnd - 3*year, newPerMille: 10, listID: "dovecot.lists.example.org"},
	{name: "Entw&APw-rfe", kind: kindDrafts, weight: 10, from: corpusEnd - 2*year}, // "Entwürfe" in modified UTF-7
}

func planFolders(r *rng, n int) []*folder {
	var fs []*folder
	for i := 0; i < n && i < len(fixedFolders); i++ {
		f := fixedFolders[i]
		fs = append(fs, &f)
	}
	// Odd numbers are top level, even ones a child of the last top-level
	// folder, every sixth a grandchild: Folder01, Folder01.Sub02, Folder03,
	// Folder03.Sub04, Folder05, Folder03.Sub04.Sub06, ...
	lastTop, lastChild := "", ""
	for i := len(fs); i < n; i++ {
		num := i - len(fixedFolders) + 1
		var name string
		switch {
		case num%2 == 1:
			name = fmt.Sprintf("Folder%02d", num)
			lastTop = name
		case num%6 == 0 && lastChild != "":
			name = fmt.Sprintf("%s.Sub%02d", lastChild, num)
		default:
			name = fmt.Sprintf("%s.Sub%02d", lastTop, num)
			lastChild = name
		}
		w := r.between(1, 30)
		age := int64(r.between(90, 6*365)) * day
		fs = append(fs, &folder{name: name, kind: kindPlain, weight: w * w, from: corpusEnd - age})
	}
	for _, f := range fs {
		if f.to == 0 {
			f.to = corpusEnd - 600
		}
	}
	return fs
}

// spread gives each folder its share of n by weight (largest remainder).
func spread(fs []*folder, n int) {
	total := 0
	for _, f := range fs {
		total += f.weight
	}
	type rem struct{ i, r int }
	var rems []rem
	left := n
	for i, f := range fs {
		f.count = n * f.weight / total
		left -= f.count
		rems = append(rems, rem{i, n * f.weight % total})
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return b.r - a.r })
	for i := 0; i < left; i++ {
		fs[rems[i%len(rems)].i].count++
	}
}

// plan is what the sequential pass decides for one message; content comes
// later from seed alone, so files can be written in parallel.
type plan struct {
	f         *folder
	date      int64 // Date: header
	delivered int64 // file name secs and mtime
	prefix    string
	flags     string
	isNew     bool
	attach    int // decoded attachment size, 0 for none
	seed      uint64
}

func flagsFor(r *rng, k folderKind, recent bool) string {
	var d, f, p, rr, s, t bool
	switch k {
	case kindDrafts:
		d = true
		s = r.chance(700)
	case kindSent:
		s = true
		f = r.chance(10)
	case kindTrash:
		s = r.chance(800)
		t = r.chance(50)
	case kindJunk:
		s = r.chance(400)
	default:
		unseen := 150
		if recent {
			unseen = 600
		}
		if r.chance(unseen) {
			f = r.chance(20)
		} else {
			s = true
			rr = r.chance(120)
			f = r.chance(40)
			p = r.chance(10)
		}
	}
	var b []byte
	for _, x := range []struct {
		on bool
		c  byte
	}{{d, 'D'}, {f, 'F'}, {p, 'P'}, {rr, 'R'}, {s, 'S'}, {t, 'T'}} {
		if x.on {
			b = append(b, x.c)
		}
	}
	return string(b)
}

func planMessages(r *rng, fs []*folder, n int, seed uint64) []*plan {
	used := make(map[string]bool, n)
	var ps []*plan
	for _, f := range fs {
		dates := make([]int64, f.count)
		for i := range dates {
			dates[i] = f.from + int64(r.intn(int(f.to-f.from)))
		}
		slices.Sort(dates)
		nNew := f.count * f.newPerMille / 1000
		if nNew == 0 && f.newPerMille > 0 && f.count >= 10 {
			nNew = 1
		}
		for i, d := range dates {
			p := &plan{f: f, date: d, delivered: d + int64(r.between(1, 90))}
			host := "mail1"
			if p.delivered >= ymd(2023, 3, 1) {
				host = "mail2"
			}
			usecs, pid := r.intn(1000000), r.between(1000, 65000)
			for {
				p.prefix = fmt.Sprintf("%d.M%dP%d.%s", p.delivered, usecs, pid, host)
				if !used[p.prefix] {
					break
				}
				usecs = (usecs + 1) % 1000000
			}
			used[p.prefix] = true
			p.isNew = i >= f.count-nNew
			recent := i >= f.count-f.count/20
			p.flags = flagsFor(r, f.kind, recent)
			ps = append(ps, p)
		}
	}
	// Exactly 0.5% (rounded) of the messages carry an attachment.
	nAtt := (n + 100) / 200
	for i := 0; i < nAtt && i < len(ps); i++ {
		for {
			p := ps[r.intn(len(ps))]
			if p.attach == 0 {
				p.attach = r.between(100<<10, 1<<20)
				break
			}
		}
	}
	for i, p := range ps {
		s := rng{s: seed ^ (uint64(i+1) * 0xd1b54a32d192ed03)}
		p.seed = s.next()
	}
	return ps
}

type stats struct {
	messages, inNew, attachments, folders int
	bytes                                 int64
}

func generate(root string, n, nf int, seed uint64) (stats, error) {
	var st stats
	if ents, err := os.ReadDir(root); err == nil && len(ents) > 0 {
		return st, fmt.Errorf("%s exists and is not empty", root)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	r := &rng{s: seed}
	fs := planFolders(r, nf)
	spread(fs, n)
	ppl := people(r)
	ps := planMessages(r, fs, n, seed)

	var dirs []string
	for _, f := range fs {
		d := f.dir(root)
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o700); err != nil {
				return st, err
			}
			dirs = append(dirs, filepath.Join(d, sub))
		}
		if f.name != "" {
			mf := filepath.Join(d, "maildirfolder")
			if err := os.WriteFile(mf, nil, 0o600); err != nil {
				return st, err
			}
			dirs = append(dirs, mf, d)
		}
	}
	dirs = append(dirs, root)

	workers := min(runtime.NumCPU(), 8)
	jobs := make(chan *plan)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				size, err := writeMessage(root, p, ppl)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				st.bytes += int64(size)
				mu.Unlock()
			}
		}()
	}
	for _, p := range ps {
		jobs <- p
		st.messages++
		if p.isNew {
			st.inNew++
		}
		if p.attach > 0 {
			st.attachments++
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return st, firstErr
	}
	end := time.Unix(corpusEnd, 0)
	for _, d := range dirs { // children before parents
		if err := os.Chtimes(d, end, end); err != nil {
			return st, err
		}
	}
	st.folders = len(fs)
	return st, nil
}

func writeMessage(root string, p *plan, ppl []person) (int, error) {
	g := &msgGen{r: &rng{s: p.seed}, p: p, ppl: ppl}
	body := g.message()
	size := len(body)
	vsize := size
	for _, c := range body {
		if c == '\n' {
			vsize++
		}
	}
	name := p.prefix + ",S=" + strconv.Itoa(size) + ",W=" + strconv.Itoa(vsize)
	sub := "new"
	if !p.isNew {
		sub = "cur"
		name += ":2," + p.flags
	}
	path := filepath.Join(p.f.dir(root), sub, name)
	if err := os.WriteFile(path, body, 0o600); err != nil {
		return 0, err
	}
	t := time.Unix(p.delivered, 0)
	return size, os.Chtimes(path, t, t)
}

type person struct {
	display string // as it goes in a header (RFC 2047-encoded if needed)
	first   string // for greetings and sign-offs (UTF-8)
	addr    string
}

var (
	firstNames = []string{"Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
		"Karl", "Laura", "Mallory", "Nina", "Oscar", "Peggy", "Quentin", "Rupert", "Sybil", "Trent",
		"Uma", "Victor", "Wendy", "Xavier", "Yara", "Zoe", "Jürgen", "Zoë", "José", "François",
		"Søren", "Ana", "Mei", "Rahul", "Fatima", "Olga", "Kenji", "Amara", "Liam", "Sofia"}
	lastNames = []string{"Smith", "Jones", "Miller", "Davis", "Garcia", "Wilson", "Moore", "Taylor", "Anderson", "Thomas",
		"Müller", "Schmidt", "Dubois", "Rossi", "Novák", "Kowalski", "Nielsen", "Tanaka", "Singh", "Okafor",
		"Ivanova", "Martínez", "Brown", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright"}
	domains = []string{"example.com", "example.net", "example.org", "mail.example.com", "corp.example.net",
		"university.example.edu", "startup.example.io", "lists.example.org", "shop.example.com", "bank.example.com"}
	userPerson = person{display: "Bench User", first: "Bench", addr: "bench@example.org"}
)

func people(r *rng) []person {
	ps := make([]person, 300)
	for i := range ps {
		fn, ln := pick(r, firstNames), pick(r, lastNames)
		local := strings.ToLower(asciiOnly(fn) + "." + asciiOnly(ln))
		if r.chance(200) {
			local += strconv.Itoa(r.between(1, 99))
		}
		ps[i] = person{display: encodeWord(fn + " " + ln), first: fn, addr: local + "@" + pick(r, domains)}
	}
	return ps
}

var toASCII = strings.NewReplacer("ü", "ue", "Ü", "Ue", "ë", "e", "é", "e", "è", "e", "ç", "c",
	"ø", "oe", "á", "a", "í", "i", "ó", "o", "ö", "oe", "ä", "ae")

func asciiOnly(s string) string { return toASCII.Replace(s) }

// encodeWord returns s as a header phrase: as is if ASCII, else as an
// RFC 2047 Q-encoded word.
func encodeWord(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
		}
	}
	if ascii {
		return s
	}
	var b strings.Builder
	b.WriteString("=?UTF-8?Q?")
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			b.WriteByte('_')
		case c >= 0x80 || c == '=' || c == '?' || c == '_':
			fmt.Fprintf(&b, "=%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteString("?=")
	return b.String()
}

var vocabulary = strings.Fields(`the of and to a in is it you that he was for on are with as I his they be
at one have this from or had by hot word but what some we can out other were all there when up use your
how said an each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my over know
water than call first who may down side been now find any new work part take get place made live where
after back little only round man year came show every good me give our under name very through just form
sentence great think say help low line differ turn cause much mean before move right boy old too same tell
does set three want air well also play small end put home read hand port large spell add even land here
must big high such follow act why ask men change went light kind off need house picture try us again animal
point mother world near build self earth father report budget meeting schedule deadline release server
backup mailbox folder invoice quarterly review draft proposal contract customer project team update patch
build test deploy rollback ticket issue agenda minutes summary forecast revenue travel flight hotel
conference slides demo feedback approval signature attachment document spreadsheet calendar reminder
weekend holiday lunch coffee office remote migration dovecot maildir replication latency throughput
café naïve résumé Grüße façade déjà jalapeño piñata smörgåsbord`)

var subjects = []string{"quarterly report draft", "meeting notes", "lunch on Friday?", "server migration plan",
	"invoice %d", "your order #%d has shipped", "budget review", "re-org announcement", "trip to Lisbon",
	"holiday schedule", "build failure on main", "patch for issue %d", "welcome aboard", "contract renewal",
	"weekly status", "photos from the weekend", "password expiry notice", "conference talk proposal",
	"Maildir replication question", "minutes %d", "team offsite", "Grüße aus Berlin", "Café meetup",
	"backup restore test", "release %d.%d checklist", "slides for tomorrow", "feedback on the draft",
	"deadline moved", "new ticket #%d", "reminder: timesheets"}

var junkSubjects = []string{"You have WON!!!", "Cheap meds %d", "Urgent: verify your account",
	"Re: invoice overdue", "Unclaimed parcel %d", "Hot singles in your area", "Crypto opportunity",
	"Your mailbox is full", "Last chance: %d%% off"}

type msgGen struct {
	r   *rng
	p   *plan
	ppl []person
	b   []byte
}

func (g *msgGen) s(parts ...string) {
	for _, p := range parts {
		g.b = append(g.b, p...)
	}
}

func (g *msgGen) person() person {
	// Skewed: a few correspondents send most of the mail.
	u := g.r.intn(1000)
	return g.ppl[u*u*len(g.ppl)/1000000]
}

func (g *msgGen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.intn(16)]
	}
	return string(b)
}

func (g *msgGen) alnum(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = chars[g.r.intn(len(chars))]
	}
	return string(b)
}

var zones = []int{0, 3600, 7200, -5 * 3600, -8 * 3600, 19800, 32400, -3 * 3600, 3600, 7200}

func rfc5322Date(secs int64, off int) string {
	return time.Unix(secs, 0).In(time.FixedZone("", off)).Format("Mon, 2 Jan 2006 15:04:05 -0700")
}

func (g *msgGen) subject(junk bool) string {
	list := subjects
	if junk {
		list = junkSubjects
	}
	s := pick(g.r, list)
	switch strings.Count(s, "%d") {
	case 1:
		s = fmt.Sprintf(s, g.r.between(2, 99999))
	case 2:
		s = fmt.Sprintf(s, g.r.between(1, 9), g.r.between(0, 30))
	}
	return encodeWord(s)
}

func (g *msgGen) msgID(secs int64, dom string) string {
	return "<" + time.Unix(secs, 0).UTC().Format("20060102150405") + "." + g.hex(12) + "@" + dom + ">"
}

func domainOf(addr string) string { return addr[strings.IndexByte(addr, '@')+1:] }

// message renders the whole message, LF line endings, no CR anywhere.
func (g *msgGen) message() []byte {
	p, r := g.p, g.r
	target := r.messageSize() * 15 / 16 // the text generators overshoot a little
	g.b = make([]byte, 0, target+target/8+p.attach*14/10+1024)
	k := p.f.kind
	from, to := g.person(), userPerson
	if k == kindSent || k == kindDrafts {
		from, to = userPerson, g.person()
	}
	off := pick(r, zones)
	if k != kindSent && k != kindDrafts {
		fromDom := domainOf(from.addr)
		g.s("Return-Path: <", from.addr, ">\nDelivered-To: ", userPerson.addr, "\n")
		for i, hops := 0, r.between(1, 3); i < hops; i++ {
			g.s("Received: from mx", strconv.Itoa(r.between(1, 9)), ".", fromDom, " (mx.", fromDom,
				" [192.0.2.", strconv.Itoa(r.between(1, 254)), "])\n\tby mx", strconv.Itoa(i+1),
				".example.org (Postfix) with ESMTPS id ", g.alnum(12), "\n\tfor <", userPerson.addr, ">; ",
				rfc5322Date(p.delivered-int64(i), 0), "\n")
		}
		if r.chance(400) {
			g.s("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=", fromDom, ";\n\ts=sel",
				strconv.Itoa(r.between(1, 4)), "; t=", strconv.FormatInt(p.date, 10), ";\n\th=from:to:subject:date:message-id;\n\tbh=",
				g.alnum(43), "=;\n\tb=")
			for i := 0; i < 5; i++ {
				if i > 0 {
					g.s("\n\t  ")
				}
				g.s(g.alnum(68))
			}
			g.s("\n")
		}
	}
	g.s("Message-ID: ", g.msgID(p.date, domainOf(from.addr)), "\n")
	g.s("Date: ", rfc5322Date(p.date, off), "\n")
	g.s("From: ", from.display, " <", from.addr, ">\n")
	if k == kindList {
		l := strings.SplitN(p.f.listID, ".", 2)
		g.s("To: ", l[0], "@", l[1], "\n")
	} else {
		g.s("To: ", to.display, " <", to.addr, ">\n")
	}
	if r.chance(150) {
		cc := g.person()
		g.s("Cc: ", cc.display, " <", cc.addr, ">\n")
	}
	reply := k != kindJunk && r.chance(300)
	subj := g.subject(k == kindJunk)
	if reply {
		subj = "Re: " + subj
	}
	g.s("Subject: ", subj, "\n")
	if reply {
		parent := g.msgID(p.date-int64(r.between(600, 5*day)), domainOf(to.addr))
		g.s("In-Reply-To: ", parent, "\nReferences:")
		for i, n := 0, r.between(0, 4); i < n; i++ {
			g.s(" ", g.msgID(p.date-int64(r.between(5*day, 60*day)), pick(r, domains)), "\n\t")
		}
		g.s(" ", parent, "\n")
	}
	if k == kindList {
		g.s("List-Id: <", p.f.listID, ">\nList-Unsubscribe: <mailto:unsubscribe@", p.f.listID,
			">\nPrecedence: list\n")
	}
	g.s("MIME-Version: 1.0\n")
	if r.chance(500) {
		g.s("User-Agent: ", pick(r, []string{"Mozilla Thunderbird", "Mutt/2.2.9", "Roundcube Webmail/1.6.1",
			"Evolution 3.46.4", "K-9 Mail for Android", "Apple Mail (2.3731)"}), "\n")
	}

	bodyTarget := max(target-len(g.b), 200)
	switch {
	case p.attach > 0:
		g.multipartMixed(from, to)
	case bodyTarget > 2000 && r.chance(300):
		g.multipartAlternative(from, to, bodyTarget)
	default:
		g.s("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
		g.textBody(from, to, len(g.b)+bodyTarget, reply)
	}
	return g.b
}

// textBody appends greeting, paragraphs, maybe a quote, and a signature
// until the whole message is about end bytes long.
func (g *msgGen) textBody(from, to person, end int, quote bool) {
	r := g.r
	g.s(pick(r, []string{"Hi ", "Hello ", "Dear ", "Hey "}), to.first, ",\n\n")
	ownEnd := end - 150
	if quote {
		ownEnd = len(g.b) + (end-len(g.b))*r.between(20, 70)/100
	}
	for first := true; first || len(g.b) < ownEnd; first = false {
		g.paragraph("")
		g.s("\n")
	}
	g.s(pick(r, []string{"Best regards", "Thanks", "Cheers", "Kind regards", "Viele Grüße"}), ",\n", from.first, "\n")
	if quote {
		g.s("\nOn ", rfc5322Date(g.p.date-int64(r.between(600, 3*day)), 0), ", ", to.first, " <", to.addr, "> wrote:\n")
		for len(g.b) < end {
			g.paragraph("> ")
			g.s(">\n")
		}
	}
	if g.p.f.kind == kindList {
		g.s("\n-- \nYou received this message because you are subscribed to ", g.p.f.listID,
			".\nTo unsubscribe, send an email to unsubscribe@", g.p.f.listID, ".\n")
	}
}

// paragraph appends 2-6 sentences wrapped at 72 columns, each line
// starting with prefix.
func (g *msgGen) paragraph(prefix string) {
	r := g.r
	g.s(prefix)
	col := len(prefix)
	for s, n := 0, r.between(2, 6); s < n; s++ {
		for w, nw := 0, r.between(4, 17); w < nw; w++ {
			word := pick(r, vocabulary)
			if w == 0 && word[0] >= 'a' && word[0] <= 'z' {
				word = string(word[0]-32) + word[1:]
			}
			if w == nw-1 {
				word += pick(r, []string{".", ".", ".", ".", "?", "!"})
			} else if r.chance(60) {
				word += ","
			}
			if col > len(prefix) {
				if col+1+len(word) > 72 {
					g.s("\n", prefix)
					col = len(prefix)
				} else {
					g.s(" ")
					col++
				}
			}
			g.s(word)
			col += len(word)
		}
	}
	g.s("\n")
}

func (g *msgGen) boundary() string { return "----=_Part_" + g.hex(8) + "_" + g.hex(8) }

func (g *msgGen) multipartAlternative(from, to person, bodyTarget int) {
	bd := g.boundary()
	g.s("Content-Type: multipart/alternative; boundary=\"", bd, "\"\n\n--", bd,
		"\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
	textStart := len(g.b)
	g.textBody(from, to, textStart+bodyTarget*10/23, false)
	text := string(g.b[textStart:])
	g.s("\n--", bd, "\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
		"<!DOCTYPE html>\n<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\n",
		"<style>body{font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222222}</style>\n</head>\n<body>\n")
	for _, para := range strings.Split(strings.TrimRight(text, "\n"), "\n\n") {
		g.s("<p style=\"margin:0 0 12px 0;line-height:20px\">", para, "</p>\n")
	}
	g.s("</body>\n</html>\n\n--", bd, "--\n")
}

var attachTypes = []struct{ mime, ext, magic string }{
	{"application/pdf", "pdf", "%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"},
	{"image/jpeg", "jpg", "\xff\xd8\xff\xe0\x00\x10JFIF\x00"},
	{"application/zip", "zip", "PK\x03\x04\x14\x00\x06\x00"},
	{"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx", "PK\x03\x04\x14\x00\x06\x00"},
}

func (g *msgGen) multipartMixed(from, to person) {
	r := g.r
	bd := g.boundary()
	at := pick(r, attachTypes)
	fname := pick(r, []string{"report", "scan", "photo", "invoice", "slides", "backup"}) + "-" +
		strconv.Itoa(r.between(1, 9999)) + "." + at.ext
	g.s("Content-Type: multipart/mixed; boundary=\"", bd, "\"\n\nThis is a multi-part message in MIME format.\n\n--", bd,
		"\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
	g.textBody(from, to, len(g.b)+r.between(300, 1500), false)
	g.s("\n--", bd, "\nContent-Type: ", at.mime, "; name=\"", fname, "\"\nContent-Disposition: attachment; filename=\"",
		fname, "\"\nContent-Transfer-Encoding: base64\n\n")
	raw := make([]byte, g.p.attach+8)
	for i := 0; i+8 <= len(raw); i += 8 {
		binary.LittleEndian.PutUint64(raw[i:], r.next())
	}
	raw = raw[:g.p.attach]
	copy(raw, at.magic)
	enc := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(enc, raw)
	for len(enc) > 0 {
		n := min(76, len(enc))
		g.b = append(g.b, enc[:n]...)
		g.b = append(g.b, '\n')
		enc = enc[n:]
	}
	g.s("\n--", bd, "--\n")
}
