package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// frameOf is what ReadFrame returned for one frame.
type frameOf struct {
	typ  Type
	body string
}

// readAll reads frames until an error and returns them with the error.
func readAll(r *Reader) ([]frameOf, error) {
	var out []frameOf
	for {
		t, body, err := r.ReadFrame()
		if err != nil {
			return out, err
		}
		if len(body) > MaxBodyLen {
			return out, errors.New("body longer than MaxBodyLen")
		}
		out = append(out, frameOf{t, string(body)})
	}
}

// splitFrames splits a valid stream into frames, independently of Reader.
func splitFrames(t testing.TB, stream []byte) []frameOf {
	var out []frameOf
	for len(stream) > 0 {
		n := HeaderLen + (int(stream[1])<<8 | int(stream[2]))
		if len(stream) < n {
			t.Fatalf("stream ends inside a frame")
		}
		out = append(out, frameOf{Type(stream[3]), string(stream[HeaderLen:n])})
		stream = stream[n:]
	}
	return out
}

func equalFrames(a, b []frameOf) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReaderChunking feeds the same stream in reads of every shape: one
// byte at a time, halves, everything at once, with EOF on the last data.
func TestReaderChunking(t *testing.T) {
	stream := bytes.Repeat(transcriptStream(t), 50) // > 64 KiB: the buffer wraps
	max := make([]byte, HeaderLen+MaxBodyLen)
	max[0], max[1], max[2], max[3] = Version, MaxBodyLen>>8, MaxBodyLen&0xff, byte(TypeKeepalive)
	stream = append(stream, max...)
	stream = append(stream, transcriptStream(t)...)
	want := splitFrames(t, stream)

	tests := []struct {
		name string
		r    func() io.Reader
	}{
		{"one byte per read", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) }},
		{"half reads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) }},
		{"whole stream per read", func() io.Reader { return bytes.NewReader(stream) }},
		{"EOF with data", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) }},
		{"odd chunks", func() io.Reader { return &chunkReader{data: stream, sizes: []int{1, 3, 5, 7, 4, 1188, 2, 1300, 9}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(NewReader(tt.r()))
			if err != io.EOF {
				t.Errorf("final error %v, want io.EOF", err)
			}
			if !equalFrames(got, want) {
				t.Errorf("got %d frames, want %d (or they differ)", len(got), len(want))
			}
		})
	}
}

// chunkReader returns data in reads of the given sizes, round robin.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.sizes[c.i%len(c.sizes)], len(c.data))
	c.i++
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// TestReaderManyPerRead checks that frames that arrive in one read are
// served from the buffer, Buffered reports them, and a body that a caller
// appends to does not overwrite the next frame.
func TestReaderManyPerRead(t *testing.T) {
	stream := transcriptStream(t)
	want := splitFrames(t, stream)
	src := &countingReader{r: bytes.NewReader(stream)}
	r := NewReader(src)
	rest := len(stream)
	for i, w := range want {
		typ, body, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != w.typ || string(body) != w.body {
			t.Fatalf("frame %d: got %s %x, want %s %x", i, typ, body, w.typ, w.body)
		}
		_ = append(body, 0xff, 0xff, 0xff, 0xff) // must not clobber the buffer
		rest -= HeaderLen + len(body)
		if got := r.Buffered(); got != rest {
			t.Fatalf("frame %d: Buffered() = %d, want %d", i, got, rest)
		}
	}
	if _, _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
	if src.reads > 2 { // the data, then EOF
		t.Errorf("%d reads from the source, want at most 2", src.reads)
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// headerOnlyReader returns hdr in its first read and fails the test if it
// is read again: the Reader must decide on the header alone.
type headerOnlyReader struct {
	t    *testing.T
	hdr  []byte
	done bool
}

func (h *headerOnlyReader) Read(p []byte) (int, error) {
	if h.done {
		h.t.Errorf("Reader read past the header")
		return 0, errors.New("read past the header")
	}
	h.done = true
	return copy(p, h.hdr), nil
}

func TestReaderBadHeader(t *testing.T) {
	tests := []struct {
		name string
		hdr  []byte
		want error
		msg  string
	}{
		{"length 1189", []byte{1, 0x04, 0xa5, 5}, ErrTooLarge, "frame too large: body length 1189 > 1188"},
		{"length 5000", []byte{1, 0x13, 0x88, 5}, ErrTooLarge, "frame too large: body length 5000 > 1188"},
		{"length 65535", []byte{1, 0xff, 0xff, 2}, ErrTooLarge, "body length 65535 > 1188"},
		{"version 0", []byte{0, 0, 2, 1}, ErrBadVersion, "bad protocol version: 0 (want 1)"},
		{"version 2", []byte{2, 0x13, 0x88, 5}, ErrBadVersion, "bad protocol version: 2 (want 1)"},
		{"type 0", []byte{1, 0, 0, 0}, ErrUnknownType, "unknown message type: 0"},
		{"type 7", []byte{1, 0x13, 0x88, 7}, ErrUnknownType, "unknown message type: 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(&headerOnlyReader{t: t, hdr: tt.hdr})
			typ, body, err := r.ReadFrame()
			if err == nil {
				t.Fatalf("got %s %x, want error", typ, body)
			}
			if s, serr := sentinelOf(err); serr != nil || s != tt.want {
				t.Fatalf("error %q wraps %v (%v), want %v", err, s, serr, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			if _, err := r.ReadMessage(); !errors.Is(err, tt.want) {
				t.Errorf("ReadMessage: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReaderEOF(t *testing.T) {
	frame := transcriptStream(t)[:6] // HELLO
	tests := []struct {
		name string
		data []byte
		want error // io.EOF exactly, or wrapped io.ErrUnexpectedEOF
	}{
		{"empty", nil, io.EOF},
		{"one byte of header", frame[:1], io.ErrUnexpectedEOF},
		{"three bytes of header", frame[:3], io.ErrUnexpectedEOF},
		{"header only", frame[:4], io.ErrUnexpectedEOF},
		{"partial body", frame[:5], io.ErrUnexpectedEOF},
		{"frame then partial header", append(append([]byte{}, frame...), 1, 0), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, src := range []io.Reader{bytes.NewReader(tt.data), iotest.OneByteReader(bytes.NewReader(tt.data)), iotest.DataErrReader(bytes.NewReader(tt.data))} {
				_, err := readAll(NewReader(src))
				if tt.want == io.EOF {
					if err != io.EOF {
						t.Errorf("%T: got %v, want io.EOF", src, err)
					}
					continue
				}
				if !errors.Is(err, tt.want) || errors.Is(err, io.EOF) {
					t.Errorf("%T: got %v, want %v", src, err, tt.want)
				}
				if _, serr := sentinelOf(err); serr == nil {
					t.Errorf("%T: %v wraps a protocol sentinel", src, err)
				}
			}
		})
	}
}

var errTimeout = errors.New("i/o timeout")

// timeoutReader fails with errTimeout once after each of the given reads.
type timeoutReader struct {
	chunks [][]byte
	fail   bool
}

func (t *timeoutReader) Read(p []byte) (int, error) {
	if t.fail {
		t.fail = false
		return 0, errTimeout
	}
	if len(t.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, t.chunks[0])
	if t.chunks[0] = t.chunks[0][n:]; len(t.chunks[0]) == 0 {
		t.chunks = t.chunks[1:]
	}
	t.fail = true
	return n, nil
}

// TestReaderRetry checks that an error of the source (such as a read
// deadline) loses nothing: the next ReadFrame continues the frame.
func TestReaderRetry(t *testing.T) {
	stream := transcriptStream(t)
	want := splitFrames(t, stream)
	var chunks [][]byte
	for i := 0; i < len(stream); i += 3 {
		chunks = append(chunks, stream[i:min(i+3, len(stream))])
	}
	r := NewReader(&timeoutReader{chunks: chunks})
	var got []frameOf
	for {
		typ, body, err := r.ReadFrame()
		if errors.Is(err, errTimeout) {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, frameOf{typ, string(body)})
	}
	if !equalFrames(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

// loopReader serves data over and over.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

func TestReaderAllocs(t *testing.T) {
	r := NewReader(&loopReader{data: transcriptStream(t)})
	n := testing.AllocsPerRun(10000, func() {
		typ, body, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if typ == TypeUpdate {
			if _, err := DecodeUpdate(body); err != nil {
				t.Fatal(err)
			}
		}
	})
	if n != 0 {
		t.Errorf("ReadFrame+DecodeUpdate: %v allocations per frame, want 0", n)
	}
}
