package verify

// scanClaims is a fast path for decoding the claims: it parses payloads in a
// plain subset of JSON (no escapes or non-ASCII in the strings it keeps, no
// null for known claims, nesting at most maxScanDepth) straight into w, with
// no reflection. It returns false for anything else, and the caller then
// uses encoding/json, whose result is authoritative: whenever scanClaims
// returns true, encoding/json yields the same claims (FuzzScanClaims).
func scanClaims(p []byte, w *wireClaims) bool {
	s := scanner{b: p}
	s.ws()
	if !s.eat('{') {
		return false
	}
	s.ws()
	if s.eat('}') {
		return s.end()
	}
	for {
		s.ws()
		key, ok := s.plainBytes()
		if !ok {
			return false
		}
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		if !s.claim(key, w) {
			return false
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return s.end()
		}
		return false
	}
}

// maxScanDepth bounds the nesting scanClaims skips through.
const maxScanDepth = 16

type scanner struct {
	b []byte
	i int
}

var knownClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "roles", "sid", "amr", "acr", "tenant"}

// claim reads the value of key into w, or skips it for an unknown key.
func (s *scanner) claim(key []byte, w *wireClaims) bool {
	var ok bool
	switch string(key) {
	case "iss":
		w.Iss, ok = s.plainString()
	case "sub":
		w.Sub, ok = s.plainString()
	case "jti":
		w.Jti, ok = s.plainString()
	case "client_id":
		w.ClientID, ok = s.plainString()
	case "scope":
		w.Scope, ok = s.plainString()
	case "sid":
		w.Sid, ok = s.plainString()
	case "exp":
		ok = s.date(&w.Exp)
	case "iat":
		ok = s.date(&w.Iat)
	case "nbf":
		ok = s.date(&w.Nbf)
	case "aud":
		if s.peek() == '"' {
			var v string
			if v, ok = s.plainString(); ok {
				w.Aud = audience{list: []string{v}, set: true}
			}
		} else {
			var list []string
			if list, ok = s.stringArray(); ok {
				w.Aud = audience{list: list, set: true}
			}
		}
	case "roles":
		w.Roles, ok = s.stringArray()
	case "amr":
		w.AMR, ok = s.stringArray()
	case "acr":
		w.ACR, ok = s.plainString()
	case "tenant":
		w.Tenant, ok = s.plainString()
	default:
		// encoding/json matches keys case-insensitively: leave such a key to it.
		for _, k := range knownClaims {
			if equalFoldASCII(k, key) {
				return false
			}
		}
		ok = s.skip(0)
	}
	return ok
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// plainString reads a string of printable ASCII without escapes.
func (s *scanner) plainString() (string, bool) {
	b, ok := s.plainBytes()
	if !ok {
		return "", false
	}
	return string(b), true
}

// plainBytes is plainString returning the bytes in the payload.
func (s *scanner) plainBytes() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// equalFoldASCII compares a known claim name with a key, ignoring ASCII case.
func equalFoldASCII(name string, key []byte) bool {
	if len(name) != len(key) {
		return false
	}
	for i := range key {
		a, b := name[i], key[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// stringArray reads an array of plain strings (an empty array is an empty,
// non-nil slice, as encoding/json makes it).
func (s *scanner) stringArray() ([]string, bool) {
	if !s.eat('[') {
		return nil, false
	}
	list := make([]string, 0, 2)
	s.ws()
	if s.eat(']') {
		return list, true
	}
	for {
		s.ws()
		v, ok := s.plainString()
		if !ok {
			return nil, false
		}
		list = append(list, v)
		s.ws()
		if s.eat(',') {
			continue
		}
		return list, s.eat(']')
	}
}

// number reads a JSON number and returns its text.
func (s *scanner) number() ([]byte, bool) {
	start := s.i
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.digits() == 0:
		return nil, false
	}
	if s.eat('.') && s.digits() == 0 {
		return nil, false
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) date(d *numericDate) bool {
	num, ok := s.number()
	if !ok {
		return false
	}
	var v numericDate
	if v.UnmarshalJSON(num) != nil {
		return false
	}
	*d = v
	return true
}

// skip passes over one value of an unknown claim.
func (s *scanner) skip(depth int) bool {
	if depth > maxScanDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, ok := s.skipString()
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		_, ok := s.number()
		return ok
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '[':
		s.i++
		s.ws()
		if s.eat(']') {
			return true
		}
		for {
			s.ws()
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	case c == '{':
		s.i++
		s.ws()
		if s.eat('}') {
			return true
		}
		for {
			s.ws()
			if _, ok := s.skipString(); !ok {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat('}')
		}
	}
	return false
}

// skipString passes over a string without escapes or control characters
// (other bytes, even invalid UTF-8, are accepted by encoding/json too).
func (s *scanner) skipString() (int, bool) {
	if !s.eat('"') {
		return 0, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.i - start, true
		case c < 0x20 || c == '\\':
			return 0, false
		}
		s.i++
	}
	return 0, false
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}
