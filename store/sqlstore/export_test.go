package sqlstore

// SetPurgeBatch sets how many rows one step of s.Purge deletes (tests).
func SetPurgeBatch(s *Store, n int) { s.purgeBatch = n }
