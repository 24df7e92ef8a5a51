package authz

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// The JOSE header and the claims are flat JSON objects of which a check
// reads a handful of members. scanObject walks the top level of one and
// hands each member's raw value to f, skipping nested values without
// decoding them: on the cold path, encoding/json's reflection cost a third
// of an RSA verify. Values f keeps are decoded with the helpers below, which
// fall back to encoding/json for anything unusual (escapes).

// scanObject calls f for each member of the JSON object b. It rejects
// anything that is not one well-formed object, as far as the top level and
// the nesting of skipped values go; the values f reads are checked by the
// helpers that decode them.
func scanObject(b []byte, f func(key, val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errMalformed
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		if skipWS(b, i+1) != len(b) {
			return errMalformed
		}
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errMalformed
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i+1 : end-1]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return errMalformed
		}
		i = skipWS(b, i+1)
		vend, err := skipValue(b, i)
		if err != nil {
			return err
		}
		if err := f(key, b[i:vend]); err != nil {
			return err
		}
		i = skipWS(b, vend)
		if i >= len(b) {
			return errMalformed
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			if skipWS(b, i+1) != len(b) {
				return errMalformed
			}
			return nil
		default:
			return errMalformed
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errMalformed
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errMalformed
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errMalformed
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errMalformed
		}
		return j, nil
	}
}

// jsonString decodes a JSON string value.
func jsonString(v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errMalformed
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		for _, c := range inner {
			if c < 0x20 {
				return "", errMalformed
			}
		}
		return string(inner), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", errMalformed
	}
	return s, nil
}

// jsonNumber decodes a JSON number value.
func jsonNumber(v []byte) (float64, error) {
	if len(v) == 0 || v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return 0, errMalformed
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return 0, errMalformed
	}
	return f, nil
}

// jsonAudience decodes aud: a string or an array of strings.
func jsonAudience(v []byte) (audience, error) {
	if len(v) > 0 && v[0] == '"' {
		s, err := jsonString(v)
		return audience{s}, err
	}
	var a audience
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, errMalformed
	}
	return a, nil
}

// parseHeader reads alg and kid of a JOSE header; a crit member is an error,
// since no critical extension is understood.
func parseHeader(b []byte) (alg, kid string, err error) {
	err = scanObject(b, func(key, val []byte) error {
		var err error
		switch string(key) {
		case "alg":
			alg, err = jsonString(val)
		case "kid":
			kid, err = jsonString(val)
		case "crit":
			err = errMalformed
		}
		return err
	})
	return alg, kid, err
}

// parseClaims reads the registered claims a check uses.
func parseClaims(b []byte, c *claims) error {
	return scanObject(b, func(key, val []byte) error {
		var err error
		switch string(key) {
		case "iss":
			c.Issuer, err = jsonString(val)
		case "sub":
			c.Subject, err = jsonString(val)
		case "azp":
			c.Azp, err = jsonString(val)
		case "client_id":
			c.ClientID, err = jsonString(val)
		case "scope":
			c.Scope, err = jsonString(val)
		case "jti":
			c.JTI, err = jsonString(val)
		case "aud":
			c.Audience, err = jsonAudience(val)
		case "exp":
			var n float64
			n, err = jsonNumber(val)
			c.Expiry = (*number)(&n)
		case "nbf":
			var n float64
			n, err = jsonNumber(val)
			c.NotBefore = (*number)(&n)
		case "iat":
			var n float64
			n, err = jsonNumber(val)
			c.IssuedAt = (*number)(&n)
		case "token_type":
			c.TokenType, err = jsonString(val)
		case "keytype":
			c.KeyType, err = jsonString(val)
		case "permittedIP":
			c.PermittedIP, err = jsonString(val)
		case "permittedReferer":
			c.PermittedReferer, err = jsonString(val)
		case "application":
			c.AppID, err = applicationID(val)
		}
		return err
	})
}

// applicationID reads the application of an API key's application claim,
// an object: its "uuid", else its "id" when that is a string. WSO2's tokens
// carry a numeric "id" beside the "uuid", which must not make them malformed.
func applicationID(b []byte) (string, error) {
	if len(b) == 0 || b[0] != '{' {
		return "", errMalformed
	}
	var id, uuid string
	err := scanObject(b, func(key, val []byte) error {
		var err error
		switch string(key) {
		case "uuid":
			uuid, err = jsonString(val)
		case "id":
			if len(val) > 0 && val[0] == '"' {
				id, err = jsonString(val)
			}
		}
		return err
	})
	if uuid != "" {
		return uuid, err
	}
	return id, err
}
