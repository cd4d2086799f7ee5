// Package apikey is the format of Portcullis API keys, free of storage and
// HTTP: `pcak_` + 32 base62 random characters + 6 base62 characters of the
// CRC32 of everything before them (43 characters, `pcak_[0-9A-Za-z]{38}`).
//
// Parse refuses a string that is not a well-formed key (prefix, length,
// alphabet, checksum) with no other work, so typos, guesses and scanner
// noise cost no lookup. The checksum has no security role: the key's
// strength is its ≈190 random bits. A key is stored only as Hash (SHA-256
// of the whole key) and shown to people as Hint (its first 8 and last 4
// characters).
//
// It imports only the standard library, so the downstream verifier
// (keys/verify) may use it too. It must never log or return a key except
// from Generate.
package apikey
