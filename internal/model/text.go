package model

import (
	"fmt"
	"strings"
	"unicode"
)

// Lengths of names and texts, as WSO2's definitions bound them.
const (
	MaxAPINameLength     = 60
	MaxVersionLength     = 30
	MaxContextLength     = 232
	MaxProviderLength    = 50
	MaxDescriptionLength = 32766
	MaxAppNameLength     = 100
	MaxPolicyNameLength  = 60
)

// nameForbidden are the characters WSO2's patterns refuse in API names;
// versions refuse whitespace too.
const nameForbidden = "~!@#;:%^*()+={}|\\<>\"',&$[]/"

// CheckText refuses a value longer than max characters or holding control
// or bidirectional-override characters (which make a name display as
// something else).
func CheckText(v string, max int) error {
	if n := len([]rune(v)); n > max {
		return fmt.Errorf("%w: at most %d characters, got %d", ErrInvalid, max, n)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) }) {
		return fmt.Errorf("%w: control and bidirectional-override characters are not allowed", ErrInvalid)
	}
	return nil
}

// CheckProse is CheckText that lets line breaks and tabs through:
// descriptions.
func CheckProse(v string, max int) error {
	return CheckText(strings.NewReplacer("\n", "", "\r", "", "\t", "").Replace(v), max)
}

// CheckName is CheckText that also refuses WSO2's forbidden name
// characters.
func CheckName(v string, max int) error {
	if err := CheckText(v, max); err != nil {
		return err
	}
	if i := strings.IndexAny(v, nameForbidden); i >= 0 {
		return fmt.Errorf("%w: %q is not allowed in a name", ErrInvalid, v[i])
	}
	return nil
}
