package portal

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// jsonFrame is one open object or array of a document being scanned.
type jsonFrame struct {
	object bool
	keys   map[string]bool
	key    string // the object's current key
	index  int    // the array's current index
	path   string
}

func (f *jsonFrame) child() string {
	if f.object {
		if f.path == "" {
			return f.key
		}
		return f.path + "." + f.key
	}
	return f.path + "[" + strconv.Itoa(f.index) + "]"
}

// duplicateKey returns the path of the first key that appears twice in one
// object of data ("operations[1].verb"), or "". encoding/json keeps the
// last of them silently, so a body could say one thing to a reviewer and
// another to apim. Malformed JSON returns "": the decoder reports it.
func duplicateKey(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*jsonFrame
	// value marks the end of one value in the innermost frame.
	value := func() {
		if n := len(stack); n > 0 {
			if top := stack[n-1]; !top.object {
				top.index++
			} else {
				top.key = ""
			}
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		var top *jsonFrame
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				path := ""
				if top != nil {
					path = top.child()
				}
				stack = append(stack, &jsonFrame{object: t == '{', keys: map[string]bool{}, path: path})
			default:
				stack = stack[:len(stack)-1]
				value()
				if len(stack) == 0 {
					return ""
				}
			}
		case string:
			if top != nil && top.object && top.key == "" {
				if top.keys[t] {
					top.key = t
					return top.child()
				}
				top.keys[t], top.key = true, t
				continue
			}
			value()
		default:
			value()
		}
	}
}
