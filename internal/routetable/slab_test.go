package routetable

import "testing"

func TestSlab(t *testing.T) {
	var s slab[uint32]
	const n = 3*chunkLen + 5
	for i := range uint32(n) {
		if pos := s.push(i * 3); pos != i {
			t.Fatalf("push #%d returned %d", i, pos)
		}
	}
	if s.len() != n || len(s.chunks) != 4 || s.capacity() != 4*chunkLen {
		t.Fatalf("len %d, %d chunks, capacity %d", s.len(), len(s.chunks), s.capacity())
	}
	for i := range uint32(n) {
		if v := *s.at(i); v != i*3 {
			t.Fatalf("at(%d) = %d", i, v)
		}
	}
	// Around a chunk boundary the empty chunk after it stays.
	for s.len() > 2*chunkLen-1 {
		s.pop()
	}
	if len(s.chunks) != 3 {
		t.Errorf("%d records: %d chunks, want 3", s.len(), len(s.chunks))
	}
	s.push(uint32(s.len()) * 3)
	s.push(uint32(s.len()) * 3)
	for s.len() > 10 {
		s.pop()
		if v := *s.at(uint32(s.len() - 1)); v != uint32(s.len()-1)*3 {
			t.Fatalf("at(%d) = %d after pop", s.len()-1, v)
		}
	}
	if len(s.chunks) != 1 || s.capacity() > 64 {
		t.Errorf("10 records: %d chunks, capacity %d", len(s.chunks), s.capacity())
	}
	for s.len() > 0 {
		s.pop()
	}
	if s.chunks != nil {
		t.Errorf("empty slab keeps %d chunks", len(s.chunks))
	}
}
