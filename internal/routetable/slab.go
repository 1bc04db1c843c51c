package routetable

// slab is a dense array of records that grows and shrinks at its end
// without moving its records: past the first chunk, which grows like a
// slice so that small shards stay small, it adds and drops whole chunks of
// chunkLen records. Growing never copies a large array, and the memory
// beyond the records in use is at most about two chunks.
type slab[T any] struct {
	chunks [][]T
	n      int
}

const (
	chunkBits = 12
	chunkLen  = 1 << chunkBits
)

// len returns the number of records.
func (s *slab[T]) len() int { return s.n }

// at returns record i, which is valid until the next push or pop.
func (s *slab[T]) at(i uint32) *T { return &s.chunks[i>>chunkBits][i&(chunkLen-1)] }

// push appends v and returns its position.
func (s *slab[T]) push(v T) uint32 {
	c := s.n >> chunkBits
	switch {
	case c == len(s.chunks):
		var chunk []T
		if c > 0 {
			chunk = make([]T, 0, chunkLen)
		}
		s.chunks = append(s.chunks, chunk)
	case c == 0 && len(s.chunks[0]) == cap(s.chunks[0]):
		// Grow the first chunk like a slice, but to chunkLen at most.
		size := min(max(2*cap(s.chunks[0]), 8), chunkLen)
		s.chunks[0] = append(make([]T, 0, size), s.chunks[0]...)
	}
	s.chunks[c] = append(s.chunks[c], v)
	s.n++
	return uint32(s.n - 1)
}

// pop removes the last record.
func (s *slab[T]) pop() {
	s.n--
	c := s.n >> chunkBits
	s.chunks[c] = s.chunks[c][:s.n&(chunkLen-1)]
	if s.n == 0 {
		s.chunks = nil
		return
	}
	// Keep the empty chunk after chunk c while chunk c is at least half
	// full, so that a slab that hovers around a chunk boundary does not
	// allocate and drop a chunk over and over.
	keep := c + 1
	if len(s.chunks[c]) >= chunkLen/2 {
		keep++
	}
	for len(s.chunks) > keep {
		s.chunks[len(s.chunks)-1] = nil
		s.chunks = s.chunks[:len(s.chunks)-1]
	}
	if c == 0 {
		s.chunks[0] = shrink(s.chunks[0])
	}
}

// shrink returns v in a smaller array if v uses less than a quarter of its
// capacity.
func shrink[T any](v []T) []T {
	if c := cap(v); c > 64 && len(v) < c/4 {
		return append(make([]T, 0, 2*len(v)), v...)
	}
	return v
}
