package wire

import (
	"bytes"
	"testing"
)

// A tiny requested buffer still holds the largest frame.
func TestNewReaderSizeHoldsLargestFrame(t *testing.T) {
	frame := append([]byte{Version, MaxBodyLen >> 8, MaxBodyLen & 0xff, byte(TypeKeepalive)}, make([]byte, MaxBodyLen)...)
	r := NewReaderSize(bytes.NewReader(frame), 16)
	typ, body, err := r.ReadFrame()
	if err != nil || typ != TypeKeepalive || len(body) != MaxBodyLen {
		t.Fatalf("ReadFrame = %v, %d bytes, %v", typ, len(body), err)
	}
}
