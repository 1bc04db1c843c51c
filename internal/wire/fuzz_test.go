package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// FuzzDecode decodes an arbitrary body of an arbitrary type. It must never
// panic; every error must wrap exactly one sentinel; what decodes must
// encode again and decode to the same message; and for UPDATE the fast
// decoder must agree with proto.Unmarshal, value for value.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		if len(body) > MaxBodyLen {
			// Refused before decoding. Returning early keeps long inputs
			// uninteresting to the fuzzer, which would spend its time
			// minimising them.
			if _, err := Decode(Type(typ), body); !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("Decode(%s, %d bytes): %v, want ErrTooLarge", Type(typ), len(body), err)
			}
			return
		}
		m, err := Decode(Type(typ), body)
		if err != nil {
			if m != nil {
				t.Errorf("Decode returned %#v with error %v", m, err)
			}
			if _, serr := sentinelOf(err); serr != nil {
				t.Error(serr)
			}
		} else {
			checkRoundTrip(t, Type(typ), m)
		}

		switch Type(typ) {
		case TypeUpdate:
			fast, ferr := DecodeUpdate(body)
			ref, rerr := referenceDecodeUpdate(body)
			switch {
			case (ferr == nil) != (rerr == nil):
				t.Fatalf("body %x: fast decoder: %v, reference: %v", body, ferr, rerr)
			case ferr == nil && fast != ref:
				t.Fatalf("body %x: fast decoder %v, reference %v", body, fast, ref)
			case ferr != nil:
				fs, _ := sentinelOf(ferr)
				rs, _ := sentinelOf(rerr)
				if fs != rs {
					t.Fatalf("body %x: fast decoder: %v, reference: %v", body, ferr, rerr)
				}
			}
		case TypeKeepalive:
			perr := proto.Unmarshal(body, &emptypb.Empty{})
			if (err == nil) != (perr == nil) {
				t.Fatalf("keepalive body %x: Decode: %v, proto.Unmarshal: %v", body, err, perr)
			}
		}
	})
}

// checkRoundTrip encodes m, decoded from a body of type typ, and checks
// that the frame decodes to m again and is canonical.
func checkRoundTrip(t *testing.T, typ Type, m Message) {
	t.Helper()
	if m.Type() != typ {
		t.Fatalf("decoded %#v from type %s", m, typ)
	}
	frame, err := AppendFrame(nil, m)
	if err != nil {
		t.Fatalf("AppendFrame(%#v): %v", m, err)
	}
	if len(frame) < HeaderLen || frame[0] != Version || Type(frame[3]) != typ ||
		int(frame[1])<<8|int(frame[2]) != len(frame)-HeaderLen || len(frame)-HeaderLen > MaxBodyLen {
		t.Fatalf("AppendFrame(%#v): bad frame %x", m, frame)
	}
	m2, err := Decode(typ, frame[HeaderLen:])
	if err != nil {
		t.Fatalf("decode %x (from %#v): %v", frame, m, err)
	}
	if m2 != m {
		t.Fatalf("round trip: %#v became %#v", m, m2)
	}
	if u, ok := m.(Update); ok {
		if err := u.Route.Validate(); err != nil {
			t.Fatalf("decoded route %v is invalid: %v", u.Route, err)
		}
		if want := referenceUpdateBody(t, u.Action, u.Route); !bytes.Equal(frame[HeaderLen:], want) {
			t.Fatalf("encoded %x, proto.Marshal %x", frame[HeaderLen:], want)
		}
	}
}

// FuzzReader reads frames from an arbitrary stream. It must never panic,
// must find the same frames and the same error however the stream is
// split into reads, and must not allocate for what a header announces.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantErr := modelFrames(data)
		sources := []struct {
			name string
			r    io.Reader
		}{
			{"whole", bytes.NewReader(data)},
			{"one byte", iotest.OneByteReader(bytes.NewReader(data))},
			{"EOF with data", iotest.DataErrReader(bytes.NewReader(data))},
		}
		for _, src := range sources {
			r := NewReader(src.r)
			var got []frameOf
			var err error
			for {
				var typ Type
				var body []byte
				if typ, body, err = r.ReadFrame(); err != nil {
					break
				}
				if len(body) > MaxBodyLen || cap(body) != len(body) {
					t.Fatalf("%s: body of length %d, capacity %d", src.name, len(body), cap(body))
				}
				got = append(got, frameOf{typ, string(body)})
				_, _ = Decode(typ, body) // must not panic; FuzzDecode checks the rest
			}
			if !equalFrames(got, want) {
				t.Fatalf("%s: got frames %v, want %v", src.name, got, want)
			}
			if wantErr == io.EOF {
				if err != io.EOF {
					t.Fatalf("%s: got error %v, want io.EOF", src.name, err)
				}
			} else if !errors.Is(err, wantErr) || errors.Is(err, io.EOF) {
				t.Fatalf("%s: got error %v, want %v", src.name, err, wantErr)
			}
		}

		// The Reader allocates its buffer in NewReader and at most an
		// error afterwards, whatever lengths the headers announce. The
		// measure is process-wide, so other goroutines (the testing
		// package finishing the previous test, a GC cleanup) may add to
		// it: a pass that allocated too much is repeated, and only an
		// allocation in every pass is a failure.
		if n, frames := readAllocs(data); n > 1024 {
			t.Fatalf("reading %d frames allocated %d bytes", frames, n)
		}
	})
}

// readAllocs reads data through a Reader and returns the bytes allocated
// after NewReader, the least of a few passes, and the number of frames.
func readAllocs(data []byte) (allocated uint64, frames int) {
	allocated = math.MaxUint64
	for pass := 0; pass < 5 && allocated > 1024; pass++ {
		r := NewReader(bytes.NewReader(data))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		frames = 0
		for {
			if _, _, err := r.ReadFrame(); err != nil {
				break
			}
			frames++
		}
		runtime.ReadMemStats(&after)
		allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
	}
	return allocated, frames
}

// modelFrames is the frame grammar of the protocol, written out plainly:
// the frames a stream holds and the error that ends it.
func modelFrames(data []byte) ([]frameOf, error) {
	var out []frameOf
	for {
		switch {
		case len(data) == 0:
			return out, io.EOF
		case len(data) < HeaderLen:
			return out, io.ErrUnexpectedEOF
		case data[0] != Version:
			return out, ErrBadVersion
		case data[3] < 1 || data[3] > 6: // 6 is END_OF_SYNC, an extension
			return out, ErrUnknownType
		}
		n := int(data[1])*256 + int(data[2])
		switch {
		case n > MaxBodyLen:
			return out, ErrTooLarge
		case len(data) < HeaderLen+n:
			return out, io.ErrUnexpectedEOF
		}
		out = append(out, frameOf{Type(data[3]), string(data[HeaderLen : HeaderLen+n])})
		data = data[HeaderLen+n:]
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the named seed files of the fuzz corpus in testdata/fuzz")

// fuzzSeeds are the named seeds of the fuzz corpus: the transcript frames
// and edge cases. Crashers that fuzzing finds are added beside them under
// the names go test gives them.
func fuzzSeeds(t *testing.T) map[string][]any {
	hexFrame := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	upd := func(s string) []any { return []any{byte(TypeUpdate), hexFrame(s)} }
	stream := transcriptStream(t)
	seeds := map[string][]any{}
	for _, fr := range loadTranscript(t) {
		name := "FuzzDecode/transcript-" + fmt.Sprintf("%x", fr.frame)
		if len(name) > 60 {
			name = name[:60]
		}
		seeds[name] = []any{fr.frame[3], fr.frame[HeaderLen:]}
	}
	for name, v := range map[string][]any{
		"unknown-fields":      upd("7801 10 17 1a0c 2a00 12040a001700 1818 7801 22120a1020010db8000000000000000000000001 4b 0801 4c 7d01000000"),
		"merged-destination":  upd("10 17 1a06 12040a001700 22120a1020010db8000000000000000000000001 1a02 1818"),
		"wrong-wire-type":     upd("15 17000000 10 17 1a0812040a001700 1818 22120a1020010db8000000000000000000000001 18 01"),
		"prefixLength-33":     upd("10 17 1a0812040a001700 1821 22120a1020010db8000000000000000000000001"),
		"nat-reversed":        upd("10 17 1a0812040a001700 1818 221a0a1020010db8000000000000000000000002 1801 20d00f 28e807"),
		"truncated":           upd("10 17 1a0812040a00"),
		"empty":               {byte(TypeUpdate), []byte{}},
		"keepalive-unknown":   {byte(TypeKeepalive), []byte{0x08, 0x01}},
		"subscribe-too-large": {byte(TypeSubscribe), []byte{0x08, 0x80, 0x80, 0x80, 0x08}},
		"hello-keepalive-0":   {byte(TypeHello), []byte{0x10, 0x01}},
		"type-0":              {byte(0), []byte{}},
		"type-6":              {byte(6), []byte{0x08, 0x01}},
	} {
		seeds["FuzzDecode/"+name] = v
	}
	for name, data := range map[string][]byte{
		"transcript":       stream,
		"too-large":        {1, 0x13, 0x88, 5, 0, 0},
		"bad-version":      append([]byte{2}, stream[1:]...),
		"unknown-type":     {1, 0, 0, 9},
		"truncated-header": stream[:len(stream)-2],
		"max-body":         append([]byte{1, MaxBodyLen >> 8, MaxBodyLen & 0xff, 2}, make([]byte, MaxBodyLen)...),
	} {
		seeds["FuzzReader/"+name] = []any{data}
	}
	return seeds
}

// TestFuzzCorpus checks that the named seed files are up to date (rewrite
// them with -update-corpus).
func TestFuzzCorpus(t *testing.T) {
	for name, values := range fuzzSeeds(t) {
		path := filepath.Join("testdata", "fuzz", filepath.FromSlash(name))
		want := encodeCorpus(values)
		if *updateCorpus {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("seed %s is missing or stale (run go test -run=TestFuzzCorpus -update-corpus): %v", path, err)
		}
	}
}

// encodeCorpus writes values in the go test fuzz v1 file format.
func encodeCorpus(values []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		default:
			panic(fmt.Sprintf("unsupported corpus value %T", v))
		}
	}
	return b.Bytes()
}
