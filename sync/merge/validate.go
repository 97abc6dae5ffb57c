package merge

import (
	"fmt"

	"github.com/twinbox-mail/twinbox/model"
)

// BoxError is a problem in the part of a plan that concerns one mailbox,
// which it names by GUID (the receiver knows its name).
type BoxError struct {
	Box model.MailboxGUID
	Err error
}

func (e *BoxError) Error() string { return fmt.Sprintf("mailbox %s: %v", e.Box, e.Err) }
func (e *BoxError) Unwrap() error { return e.Err }

// ValidGUID reports whether s can be a message GUID: 1 to 255 bytes, no
// white space, control characters, "/" or ":" (it becomes a file base name
// and a dovecot-uidlist field).
func ValidGUID(s string) error {
	if len(s) == 0 || len(s) > 255 {
		return fmt.Errorf("message GUID of %d bytes", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f || c == '/' || c == ':' {
			return fmt.Errorf("message GUID %q has a forbidden character", s)
		}
	}
	if s == "." || s == ".." || s[0] == '.' {
		return fmt.Errorf("message GUID %q starts with a dot", s)
	}
	return nil
}

// ValidName reports whether s can be a mailbox or subscription name as it
// travels: UTF-8 text without control characters, at most 1024 bytes.
// (The layout's own rules are checked where a directory is made.)
func ValidName(s string) error {
	if len(s) == 0 || len(s) > 1024 {
		return fmt.Errorf("mailbox name of %d bytes", len(s))
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == 0xfffd {
			return fmt.Errorf("mailbox name %q has a control or invalid character", s)
		}
	}
	return nil
}

// ValidatePlan checks everything in a side plan that came from a peer and
// ends up in file names or control files.
func ValidatePlan(p *SidePlan) error {
	for _, ops := range [][]MailboxOp{p.Renames, p.Creates, p.Deletes} {
		for _, op := range ops {
			if err := ValidName(op.Name); err != nil {
				return err
			}
		}
	}
	for _, a := range p.Adopts {
		if err := ValidName(a.Name); err != nil {
			return err
		}
	}
	for _, s := range p.Subs {
		if err := ValidName(s.Name); err != nil {
			return fmt.Errorf("subscription: %w", err)
		}
	}
	for _, bp := range p.Boxes {
		if err := validateBox(&bp); err != nil {
			return &BoxError{Box: bp.GUID, Err: err}
		}
	}
	return nil
}

// validateBox checks one mailbox's message work.
func validateBox(bp *BoxPlan) error {
	for _, a := range bp.Adds {
		if err := ValidGUID(a.Msg.GUID); err != nil {
			return err
		}
		if a.Msg.UID == 0 || a.Msg.Size < 0 {
			return fmt.Errorf("message %s: UID %d size %d", a.Msg.GUID, a.Msg.UID, a.Msg.Size)
		}
		if a.Msg.Base != "" {
			if err := ValidGUID(a.Msg.Base); err != nil {
				return fmt.Errorf("base name: %w", err)
			}
		}
	}
	for _, m := range bp.Moves {
		if err := ValidGUID(m.GUID); err != nil {
			return err
		}
		if m.To == 0 {
			return fmt.Errorf("message %s moved to UID 0", m.GUID)
		}
	}
	for _, f := range bp.Flags {
		if f.UID == 0 {
			return fmt.Errorf("flags for UID 0")
		}
		if err := validFlagNames(f.Flags); err != nil {
			return fmt.Errorf("UID %d: %w", f.UID, err)
		}
	}
	for _, b := range bp.Borns {
		if err := ValidGUID(b.GUID); err != nil {
			return err
		}
		if b.UID == 0 || b.Born == 0 {
			return fmt.Errorf("message %s: Born %d at UID %d", b.GUID, b.Born, b.UID)
		}
	}
	return nil
}

func validFlagNames(f model.Flags) error {
	for name := range f {
		if len(name) == 0 || len(name) > 250 {
			return fmt.Errorf("flag name of %d bytes", len(name))
		}
	}
	return nil
}
