package session

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/twinbox-mail/twinbox/model"
)

// filterBoxes and onlyKept give what appending one by one gives: the same
// mailboxes in the same order, and nil (not empty) when none is kept.
func TestFilterBoxesAndOnlyKept(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 500; i++ {
		var in []model.Mailbox
		keepName, keepGUID := map[string]bool{}, map[model.MailboxGUID]bool{}
		for j := 0; j < rng.IntN(8); j++ {
			m := model.Mailbox{GUID: model.MailboxGUID{byte(i), byte(j)}, Name: fmt.Sprint("F", j), Messages: j}
			in = append(in, m)
			keepName[m.Name] = rng.IntN(2) == 0
			keepGUID[m.GUID] = rng.IntN(2) == 0
		}
		var wantN, wantG []model.Mailbox
		for _, m := range in {
			if keepName[m.Name] {
				wantN = append(wantN, m)
			}
			if keepGUID[m.GUID] {
				wantG = append(wantG, m)
			}
		}
		gotN := filterBoxes(in, func(n string) bool { return keepName[n] })
		gotG := onlyKept(in, keepGUID)
		if !reflect.DeepEqual(gotN, wantN) || (gotN == nil) != (wantN == nil) {
			t.Fatalf("filterBoxes: %v, want %v", gotN, wantN)
		}
		if !reflect.DeepEqual(gotG, wantG) || (gotG == nil) != (wantG == nil) {
			t.Fatalf("onlyKept: %v, want %v", gotG, wantG)
		}
	}
}
