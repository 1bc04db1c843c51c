package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// readBufferSize is the size of the Reader's buffer: large enough to hold
// many frames, so that one read from a connection serves a batch of them.
const readBufferSize = 64 << 10

// Reader reads frames from a byte stream such as a TCP connection. It
// copes with frames split over many reads and with many frames in one
// read, and allocates nothing after NewReader.
//
// A Reader is not safe for concurrent use: one goroutine owns it.
type Reader struct {
	br *bufio.Reader
}

// NewReader returns a Reader that reads from r through a 64 KiB buffer.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize)}
}

// NewReaderSize returns a Reader with a buffer of size bytes, at least
// HeaderLen+MaxBodyLen so that any frame fits. A server with many mostly
// idle peers uses small buffers; a peer that streams many updates gets
// more of them per read from a larger one.
func NewReaderSize(r io.Reader, size int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, max(size, HeaderLen+MaxBodyLen))}
}

// ReadFrame reads the next frame and returns its type and body. The body
// aliases the Reader's buffer and is valid only until the next call of any
// Reader method; callers that keep it must copy it.
//
// ReadFrame checks the header (version, type, length) before it reads the
// body, and returns an error wrapping ErrBadVersion, ErrUnknownType or
// ErrTooLarge for a bad one. It does not decode the body (see Decode).
//
// It returns io.EOF only when the stream ends cleanly between two frames,
// and an error wrapping io.ErrUnexpectedEOF when it ends inside a frame.
// Other errors of the underlying reader are returned wrapped. After an
// error nothing of the failed frame has been consumed, so that a read
// interrupted by a deadline can be retried; after a protocol error the
// stream cannot be resynchronised and should be closed.
func (r *Reader) ReadFrame() (Type, []byte, error) {
	hdr, err := r.br.Peek(HeaderLen)
	if err != nil {
		if errors.Is(err, io.EOF) {
			if len(hdr) == 0 {
				return 0, nil, io.EOF
			}
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read frame header: %w", err)
	}
	if hdr[0] != Version {
		return 0, nil, fmt.Errorf("%w: %d (want %d)", ErrBadVersion, hdr[0], Version)
	}
	t := Type(hdr[3])
	if !t.Valid() {
		return 0, nil, fmt.Errorf("%w: %d", ErrUnknownType, hdr[3])
	}
	n := int(hdr[1])<<8 | int(hdr[2])
	if n > MaxBodyLen {
		return 0, nil, fmt.Errorf("%w: body length %d > %d", ErrTooLarge, n, MaxBodyLen)
	}
	frame, err := r.br.Peek(HeaderLen + n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read %s frame body (%d bytes): %w", t, n, err)
	}
	// Discard cannot fail: the bytes are buffered. The buffer is reused
	// only by the next read, so frame stays valid until then.
	_, _ = r.br.Discard(HeaderLen + n)
	return t, frame[HeaderLen : HeaderLen+n : HeaderLen+n], nil
}

// ReadMessage reads the next frame and decodes its body (see ReadFrame and
// Decode). The message does not alias the Reader's buffer. It allocates
// for an Update; a hot loop can call ReadFrame and DecodeUpdate instead.
func (r *Reader) ReadMessage() (Message, error) {
	t, body, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	return Decode(t, body)
}

// HasFrame reports whether a whole frame is buffered, so that the next
// ReadFrame returns without reading from the stream. A caller can use it
// to finish the work of a batch of frames before it may block.
func (r *Reader) HasFrame() bool {
	if r.br.Buffered() < HeaderLen {
		return false
	}
	hdr, _ := r.br.Peek(HeaderLen)
	return r.br.Buffered() >= HeaderLen+(int(hdr[1])<<8|int(hdr[2]))
}

// Buffered returns the number of bytes that have been read from the
// stream but not yet consumed. While it is at least HeaderLen, the next
// ReadFrame may complete without waiting for the stream, so callers can
// batch the work of several frames.
func (r *Reader) Buffered() int { return r.br.Buffered() }
