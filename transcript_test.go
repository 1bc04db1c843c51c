package metalbond_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// transcriptLine is one frame of testdata/v1-transcript.txt.
type transcriptLine struct {
	conn, dir string
	frame     []byte
}

func readTranscript(t *testing.T) []transcriptLine {
	t.Helper()
	f, err := os.Open("internal/wire/testdata/v1-transcript.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []transcriptLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		frame, err := hex.DecodeString(fields[2])
		if err != nil {
			t.Fatalf("bad transcript line %q: %v", line, err)
		}
		out = append(out, transcriptLine{fields[0], fields[1], frame})
	}
	return out
}

// TestTranscriptAgainstServer plays the client side of the recorded v1
// conversation against our server and checks that every frame the server
// sends is byte for byte the recorded one.
func TestTranscriptAgainstServer(t *testing.T) {
	lines := readTranscript(t)
	// Index the recorded frames: c>s frames in order per connection, and
	// the set of s>c frames per connection.
	send := map[string][][]byte{}
	for _, l := range lines {
		if l.dir == "c>s" {
			send[l.conn] = append(send[l.conn], l.frame)
		}
	}
	recorded := func(conn string, i int) []byte { return send[conn][i] }
	sfind := func(conn string, typ wire.Type, nth int) []byte {
		for _, l := range lines {
			if l.conn == conn && l.dir == "s>c" && wire.Type(l.frame[3]) == typ {
				if nth == 0 {
					return l.frame
				}
				nth--
			}
		}
		t.Fatalf("no %s s>c frame #%d on connection %s", typ, nth, conn)
		return nil
	}

	_, addr := startServer(t, metalbond.ServerConfig{})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	expect := func(c net.Conn, want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading %x: %v", want, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("server sent %x, recorded %x", got, want)
		}
	}
	write := func(c net.Conn, frame []byte) {
		t.Helper()
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}

	// Connection 1: handshake, SUBSCRIBE 23, announce 10.0.23.0/24.
	c1 := dial()
	write(c1, recorded("1", 0))
	expect(c1, sfind("1", wire.TypeHello, 0))
	write(c1, recorded("1", 1))
	expect(c1, sfind("1", wire.TypeKeepalive, 0))
	write(c1, recorded("1", 2))
	write(c1, recorded("1", 3))

	// Connection 2: handshake, SUBSCRIBE 23 gets client 1's route.
	c2 := dial()
	write(c2, recorded("2", 0))
	expect(c2, sfind("2", wire.TypeHello, 0))
	write(c2, recorded("2", 1))
	expect(c2, sfind("2", wire.TypeKeepalive, 0))
	write(c2, recorded("2", 2))
	expect(c2, sfind("2", wire.TypeUpdate, 0))

	// Client 2 announces its NAT route in 23: client 1 gets it.
	write(c2, recorded("2", 5))
	expect(c1, sfind("1", wire.TypeUpdate, 0))
	// Client 2 announces its LB route in 24, then subscribes to 24: the
	// initial table echoes the LB route (only NAT routes are not echoed).
	write(c2, recorded("2", 4))
	write(c2, recorded("2", 3))
	expect(c2, sfind("2", wire.TypeUpdate, 1))

	// Keepalives are answered.
	write(c1, recorded("1", 4))
	expect(c1, sfind("1", wire.TypeKeepalive, 1))

	// Client 2 disconnects: client 1 gets the REMOVE of the NAT route.
	c2.Close()
	expect(c1, sfind("1", wire.TypeUpdate, 1))
}

// TestTranscriptAgainstClient plays the server side of the recorded
// conversation against our client: the client must send the recorded
// frames byte for byte and install what the recorded server sends.
func TestTranscriptAgainstClient(t *testing.T) {
	lines := readTranscript(t)
	var fromClient, fromServer [][]byte
	for _, l := range lines {
		if l.conn != "1" {
			continue
		}
		if l.dir == "c>s" {
			fromClient = append(fromClient, l.frame)
		} else {
			fromServer = append(fromServer, l.frame)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := startClient(t, []string{ln.Addr().String()}, plainV1, func(cfg *metalbond.ClientConfig) {
		cfg.Keepalive = 3 * time.Second
	})
	c.subscribe(t, 23)
	c.announce(t, mustRoute(t, "23#10.0.23.0/24#2001:db8::1"))

	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	expect := func(want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatalf("reading %x: %v", want, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("client sent %x, recorded %x", got, want)
		}
	}
	expect(fromClient[0]) // HELLO
	conn.Write(fromServer[0])
	expect(fromClient[1]) // KEEPALIVE
	conn.Write(fromServer[1])
	expect(fromClient[2]) // SUBSCRIBE 23
	expect(fromClient[3]) // UPDATE ADD 23#10.0.23.0/24#2001:db8::1

	// The recorded server delivers client 2's NAT route, later withdraws it.
	conn.Write(fromServer[2])
	c.inst.WaitRoutes(t, []route.Route{mustRoute(t, "23#10.0.24.0/24#2001:db8::2#NAT#1000#2000")})
	conn.Write(fromServer[4])
	c.inst.WaitRoutes(t, nil)
}
