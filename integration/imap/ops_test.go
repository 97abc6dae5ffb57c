package imap

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/twinbox-mail/twinbox/integration/dovecot"
)

// op is one scripted client or MTA operation. setup runs on the acting side
// and is synced before the views are cached; do is the operation itself;
// check looks at the settled view (the same on both sides).
type op struct {
	name  string
	setup func(t *testing.T, x *opCtx)
	do    func(t *testing.T, x *opCtx)
	check func(t *testing.T, x *opCtx, v *view)
	// revalidates names the mailbox that must come out of the operation
	// under a new UIDVALIDITY (the same on both sides: requireSame); every
	// other mailbox keeps its value.
	revalidates func(x *opCtx) string
}

// opCtx is what an operation works with.
type opCtx struct {
	p    *pair
	s    *side // the acting side
	tag  string
	c    *imapclient.Client
	hash map[string]string // named body hashes the op made
}

// msgIn returns the message with body hash h in mailbox, failing the test
// unless there is exactly one.
func msgIn(t *testing.T, v *view, mailbox, h string) msg {
	t.Helper()
	return v.Boxes[mailbox].Msgs[uidOf(t, v, mailbox, h)]
}

func absent(t *testing.T, v *view, h string) {
	t.Helper()
	if where := v.hashes()[h]; len(where) > 0 {
		t.Errorf("message %s still in %v", h[:12], where)
	}
}

func uidSet(u uint32) imap.UIDSet { return imap.UIDSetNum(imap.UID(u)) }

// uidNow finds a message's UID on the acting side, by its body hash.
func (x *opCtx) uidNow(t *testing.T, mailbox, h string) uint32 {
	t.Helper()
	return uidOf(t, readView(t, x.s), mailbox, h)
}

func (x *opCtx) store(t *testing.T, mailbox, h string, sf *imap.StoreFlags) {
	t.Helper()
	u := x.uidNow(t, mailbox, h)
	selectBox(t, x.c, mailbox)
	if _, err := x.c.Store(uidSet(u), sf, nil).Collect(); err != nil {
		t.Fatalf("UID STORE %d in %q: %v", u, mailbox, err)
	}
}

func (x *opCtx) must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s on %s: %v", what, x.s.name, err)
	}
}

var ops = []op{
	{name: "APPEND",
		do: func(t *testing.T, x *opCtx) {
			x.hash["m"] = appendMsg(t, x.c, "INBOX", body("append "+x.tag), imap.FlagSeen, "$Work")
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			m := msgIn(t, v, "INBOX", x.hash["m"])
			if !slices.Equal(m.Flags, []string{`\Seen`}) || !slices.Equal(m.Keywords, []string{"$Work"}) {
				t.Errorf("appended message: %s", m)
			}
		}},
	{name: "STORE-add",
		setup: func(t *testing.T, x *opCtx) { x.hash["m"] = appendMsg(t, x.c, "INBOX", body("store add "+x.tag)) },
		do: func(t *testing.T, x *opCtx) {
			x.store(t, "INBOX", x.hash["m"], &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged, imap.FlagAnswered, "$Label1", "kw" + imap.Flag(x.tag)}})
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			m := msgIn(t, v, "INBOX", x.hash["m"])
			if !slices.Equal(m.Flags, []string{`\Answered`, `\Flagged`}) || !slices.Equal(m.Keywords, []string{"$Label1", "kw" + x.tag}) {
				t.Errorf("flags after STORE +FLAGS: %s", m)
			}
		}},
	{name: "STORE-remove",
		setup: func(t *testing.T, x *opCtx) {
			x.hash["m"] = appendMsg(t, x.c, "INBOX", body("store remove "+x.tag), imap.FlagSeen, imap.FlagFlagged, "$Label2", "$Keep")
		},
		do: func(t *testing.T, x *opCtx) {
			x.store(t, "INBOX", x.hash["m"], &imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{imap.FlagFlagged, "$Label2"}})
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			m := msgIn(t, v, "INBOX", x.hash["m"])
			if !slices.Equal(m.Flags, []string{`\Seen`}) || !slices.Equal(m.Keywords, []string{"$Keep"}) {
				t.Errorf("flags after STORE -FLAGS: %s", m)
			}
		}},
	{name: "EXPUNGE",
		setup: func(t *testing.T, x *opCtx) { x.hash["m"] = appendMsg(t, x.c, "INBOX", body("expunge "+x.tag)) },
		do: func(t *testing.T, x *opCtx) {
			u := x.uidNow(t, "INBOX", x.hash["m"])
			selectBox(t, x.c, "INBOX")
			_, err := x.c.Store(uidSet(u), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect()
			x.must(t, "STORE \\Deleted", err)
			_, err = x.c.UIDExpunge(uidSet(u)).Collect()
			x.must(t, "UID EXPUNGE", err)
		},
		check: func(t *testing.T, x *opCtx, v *view) { absent(t, v, x.hash["m"]) }},
	{name: "COPY",
		setup: func(t *testing.T, x *opCtx) {
			x.hash["m"] = appendMsg(t, x.c, "INBOX", body("copy "+x.tag), imap.FlagSeen)
		},
		do: func(t *testing.T, x *opCtx) {
			u := x.uidNow(t, "INBOX", x.hash["m"])
			selectBox(t, x.c, "INBOX")
			_, err := x.c.Copy(uidSet(u), "Work").Wait()
			x.must(t, "UID COPY", err)
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			msgIn(t, v, "INBOX", x.hash["m"])
			if m := msgIn(t, v, "Work", x.hash["m"]); !slices.Equal(m.Flags, []string{`\Seen`}) {
				t.Errorf("copied message: %s", m)
			}
		}},
	{name: "MOVE",
		setup: func(t *testing.T, x *opCtx) { x.hash["m"] = appendMsg(t, x.c, "INBOX", body("move "+x.tag), "$Moved") },
		do: func(t *testing.T, x *opCtx) {
			u := x.uidNow(t, "INBOX", x.hash["m"])
			selectBox(t, x.c, "INBOX")
			_, err := x.c.Move(uidSet(u), "Work").Wait()
			x.must(t, "UID MOVE", err)
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			if us := v.Boxes["INBOX"].find(x.hash["m"]); len(us) > 0 {
				t.Errorf("moved message still in INBOX at %v", us)
			}
			if m := msgIn(t, v, "Work", x.hash["m"]); !slices.Equal(m.Keywords, []string{"$Moved"}) {
				t.Errorf("moved message: %s", m)
			}
		}},
	{name: "CREATE",
		do: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("New-"+x.tag, nil).Wait())
			x.must(t, "CREATE", x.c.Create("NewParent-"+x.tag+"/Child", nil).Wait())
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			for _, n := range []string{"New-" + x.tag, "NewParent-" + x.tag + "/Child"} {
				if v.Boxes[n] == nil {
					t.Errorf("created mailbox %q missing", n)
				}
			}
		}},
	{name: "RENAME",
		setup: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("Ren-"+x.tag, nil).Wait())
			x.hash["m"] = appendMsg(t, x.c, "Ren-"+x.tag, body("rename "+x.tag))
		},
		do: func(t *testing.T, x *opCtx) {
			x.must(t, "RENAME", x.c.Rename("Ren-"+x.tag, "Renamed-"+x.tag, nil).Wait())
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			if v.Boxes["Ren-"+x.tag] != nil {
				t.Errorf("old name still there")
			}
			msgIn(t, v, "Renamed-"+x.tag, x.hash["m"])
		}},
	{name: "RENAME-with-children",
		setup: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("P-"+x.tag, nil).Wait())
			x.must(t, "CREATE", x.c.Create("P-"+x.tag+"/C", nil).Wait())
			x.must(t, "CREATE", x.c.Create("P-"+x.tag+"/C/D", nil).Wait())
			x.hash["p"] = appendMsg(t, x.c, "P-"+x.tag, body("parent "+x.tag))
			x.hash["c"] = appendMsg(t, x.c, "P-"+x.tag+"/C", body("child "+x.tag))
			x.hash["d"] = appendMsg(t, x.c, "P-"+x.tag+"/C/D", body("grandchild "+x.tag))
		},
		do: func(t *testing.T, x *opCtx) {
			x.must(t, "RENAME", x.c.Rename("P-"+x.tag, "Q-"+x.tag, nil).Wait())
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			for _, n := range []string{"P-" + x.tag, "P-" + x.tag + "/C", "P-" + x.tag + "/C/D"} {
				if v.Boxes[n] != nil {
					t.Errorf("old name %q still there", n)
				}
			}
			msgIn(t, v, "Q-"+x.tag, x.hash["p"])
			msgIn(t, v, "Q-"+x.tag+"/C", x.hash["c"])
			msgIn(t, v, "Q-"+x.tag+"/C/D", x.hash["d"])
		}},
	{name: "DELETE",
		setup: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("Del-"+x.tag, nil).Wait())
			x.hash["m"] = appendMsg(t, x.c, "Del-"+x.tag, body("delete "+x.tag))
		},
		do: func(t *testing.T, x *opCtx) { x.must(t, "DELETE", x.c.Delete("Del-"+x.tag).Wait()) },
		check: func(t *testing.T, x *opCtx, v *view) {
			if v.Boxes["Del-"+x.tag] != nil {
				t.Errorf("deleted mailbox still there")
			}
			absent(t, v, x.hash["m"])
		}},
	{name: "rm-rf-is-restored",
		setup: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("Gone-"+x.tag, nil).Wait())
			x.hash["m"] = appendMsg(t, x.c, "Gone-"+x.tag, body("rm -rf "+x.tag), imap.FlagSeen)
		},
		do: func(t *testing.T, x *opCtx) {
			if err := os.RemoveAll(filepath.Join(x.s.root(), ".Gone-"+x.tag)); err != nil {
				t.Fatal(err)
			}
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			if m := msgIn(t, v, "Gone-"+x.tag, x.hash["m"]); !slices.Equal(m.Flags, []string{`\Seen`}) {
				t.Errorf("restored message: %s", m)
			}
		},
		// Restored under a new UIDVALIDITY: Dovecot may have given UIDs
		// in the removed directory that no sync saw (contract §3.1).
		revalidates: func(x *opCtx) string { return "Gone-" + x.tag }},
	// The same with an empty folder: the other side takes the new value in
	// place with nothing to move in cur/ or new/, and its Dovecot must
	// still show the new value.
	{name: "rm-rf-of-an-empty-folder",
		setup: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("Empty-"+x.tag, nil).Wait())
		},
		do: func(t *testing.T, x *opCtx) {
			if err := os.RemoveAll(filepath.Join(x.s.root(), ".Empty-"+x.tag)); err != nil {
				t.Fatal(err)
			}
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			if b := v.Boxes["Empty-"+x.tag]; b == nil || len(b.Msgs) != 0 {
				t.Errorf("restored empty folder: %+v", b)
			}
		},
		revalidates: func(x *opCtx) string { return "Empty-" + x.tag }},
	{name: "SUBSCRIBE",
		setup: func(t *testing.T, x *opCtx) { x.must(t, "CREATE", x.c.Create("Sub-"+x.tag, nil).Wait()) },
		do:    func(t *testing.T, x *opCtx) { x.must(t, "SUBSCRIBE", x.c.Subscribe("Sub-"+x.tag).Wait()) },
		check: func(t *testing.T, x *opCtx, v *view) {
			if !slices.Contains(v.Subs, "Sub-"+x.tag) {
				t.Errorf("not subscribed: %v", v.Subs)
			}
		}},
	{name: "UNSUBSCRIBE",
		setup: func(t *testing.T, x *opCtx) {
			x.must(t, "CREATE", x.c.Create("Unsub-"+x.tag, nil).Wait())
			x.must(t, "SUBSCRIBE", x.c.Subscribe("Unsub-"+x.tag).Wait())
		},
		do: func(t *testing.T, x *opCtx) { x.must(t, "UNSUBSCRIBE", x.c.Unsubscribe("Unsub-"+x.tag).Wait()) },
		check: func(t *testing.T, x *opCtx, v *view) {
			if slices.Contains(v.Subs, "Unsub-"+x.tag) {
				t.Errorf("still subscribed: %v", v.Subs)
			}
		}},
	{name: "MTA-delivery",
		do: func(t *testing.T, x *opCtx) {
			x.hash["inbox"] = deliverMTA(t, x.s, "", body("mta inbox "+x.tag), 1)
			x.hash["work"] = deliverMTA(t, x.s, ".Work", body("mta work "+x.tag), 2)
		},
		check: func(t *testing.T, x *opCtx, v *view) {
			msgIn(t, v, "INBOX", x.hash["inbox"])
			msgIn(t, v, "Work", x.hash["work"])
		}},
}

// TestOperationsReplicate does every client operation of issue 3 (and an
// MTA delivery, and an rm -rf of a folder) on one side through Dovecot,
// syncs, and checks that IMAP on both sides shows the same mail, that the
// operation took effect on both, and that no UID changed its meaning; each
// in both directions.
func TestOperationsReplicate(t *testing.T) { dovecot.ForEach(t, testOperationsReplicate) }

func testOperationsReplicate(t *testing.T, d *dovecot.Install) {
	operationsReplicate(t, newPair(t, dovecot.ServerOptions{Dovecot: d}))
}

// TestOperationsReplicateMixed23And24 is TestOperationsReplicate between a
// Dovecot 2.3 (A, the host's) and a Dovecot 2.4 (B, the trixie root): one
// host upgraded before the other.
func TestOperationsReplicateMixed23And24(t *testing.T) {
	if v := dovecot.DovecotVersion(); v.Is24() {
		t.Skipf("the host's Dovecot is %s: no 2.3 here", v)
	}
	a := dovecot.StartServer(t, dovecot.ServerOptions{Name: "a"})
	b := dovecot.StartServer(t, dovecot.ServerOptions{Name: "b", Dovecot: dovecot.Trixie()})
	operationsReplicate(t, &pair{a: &side{name: "A", srv: a}, b: &side{name: "B", srv: b}})
}

func operationsReplicate(t *testing.T, p *pair) {
	ca := dial(t, p.a)
	if err := ca.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ca.Subscribe("Work").Wait(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		appendMsg(t, ca, "INBOX", body("base inbox "+string(rune('0'+i))))
		appendMsg(t, ca, "Work", body("base work "+string(rune('0'+i))), imap.FlagSeen)
	}
	ca.Logout().Wait()
	p.settle(t)
	p.requireSame(t)
	revalidated := map[string]bool{}
	for _, s := range p.sides() {
		for _, o := range ops {
			t.Run(o.name+"/on-"+s.name, func(t *testing.T) {
				x := &opCtx{p: p, s: s, tag: s.name, c: dial(t, s), hash: map[string]string{}}
				defer func() { _ = x.c.Logout().Wait() }()
				if o.setup != nil {
					o.setup(t, x)
					p.settle(t)
					p.requireSame(t)
				}
				ba, bb := readView(t, p.a), readView(t, p.b)
				o.do(t, x)
				p.settle(t)
				va, vb := p.requireSame(t)
				checkUIDMeaning(t, "A", ba, va)
				checkUIDMeaning(t, "B", bb, vb)
				fresh := ""
				if o.revalidates != nil {
					fresh = o.revalidates(x)
					revalidated["."+fresh] = true
				}
				checkUIDValidityKept(t, "A", ba, va, fresh)
				checkUIDValidityKept(t, "B", bb, vb, fresh)
				o.check(t, x, va)
			})
		}
	}
	p.checkLogsRevalidated(t, revalidated)
	t.Logf("%d syncs", p.syncs)
}
