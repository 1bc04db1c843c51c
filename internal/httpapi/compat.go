package httpapi

import (
	"bufio"
	"net/http"
	"strconv"
	"time"

	"github.com/metalbond/metalbond/route"
)

// The historical route dump of /routes.json and /routes.yaml. Deployed
// scripts parse it, so its shape must not change: a "date", a "vnet" object
// keyed by VNI (as a string) whose keys are destinations, each itself a
// small JSON text {"IPVersion":4,"Prefix":"10.0.23.0/24"}, mapping to the
// list of nexthops, and "metalbondVersion". Type is the v1 wire value
// (0 standard, 1 NAT, 2 load-balancer target).
//
// Both documents are written as a stream, VNIs in numeric order and routes
// in route.Route.Compare order, so that a large table is not held twice in
// memory.

// compatDateLayout is the format of "date": local time, no zone.
const compatDateLayout = "2006-01-02 15:04:05"

// appendDestinationKey appends the key of r's destination, itself JSON
// text: {"IPVersion":4,"Prefix":"10.0.23.0/24"}.
func appendDestinationKey(b []byte, r route.Route) []byte {
	if r.Prefix.Addr().Is6() {
		b = append(b, `{"IPVersion":6,"Prefix":"`...)
	} else {
		b = append(b, `{"IPVersion":4,"Prefix":"`...)
	}
	b = r.Prefix.AppendTo(b)
	return append(b, `"}`...)
}

// compatDumper writes the dump in JSON or YAML.
type compatDumper interface {
	begin(date, version string)
	vni(vni route.VNI, first bool)
	destination(key []byte, first bool)
	nexthop(nh route.NextHop, first bool)
	endDestination()
	endVNI()
	end(version string)
}

// dumpCompat walks the table in order and drives d.
func (h *handler) dumpCompat(d compatDumper) {
	version := h.opts.Version
	d.begin(time.Now().Format(compatDateLayout), version)
	firstVNI := true
	var key []byte
	for _, v := range h.src.VNIs() {
		routes := h.src.Routes(v.VNI)
		if len(routes) == 0 {
			continue
		}
		d.vni(v.VNI, firstVNI)
		firstVNI = false
		for i, ri := range routes {
			newDest := i == 0 || ri.Prefix != routes[i-1].Prefix
			if newDest {
				if i > 0 {
					d.endDestination()
				}
				key = appendDestinationKey(key[:0], ri.Route)
				d.destination(key, i == 0)
			}
			d.nexthop(ri.NextHop, newDest)
		}
		d.endDestination()
		d.endVNI()
	}
	d.end(version)
}

func (h *handler) compatJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	d := &jsonDumper{dumpBuffer{w: bufio.NewWriterSize(w, 64<<10)}}
	h.dumpCompat(d)
	if err := d.flush(); err != nil {
		h.log.Debug("http: write response", "err", err)
	}
}

func (h *handler) compatYAML(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	d := &yamlDumper{dumpBuffer: dumpBuffer{w: bufio.NewWriterSize(w, 64<<10)}}
	h.dumpCompat(d)
	if err := d.flush(); err != nil {
		h.log.Debug("http: write response", "err", err)
	}
}

// dumpBuffer assembles the dump in a reused buffer and hands it to w in
// large pieces. Write errors are remembered and reported by flush.
type dumpBuffer struct {
	w   *bufio.Writer
	b   []byte
	err error
}

func (d *dumpBuffer) emit() {
	if len(d.b) >= 32<<10 {
		d.write()
	}
}

func (d *dumpBuffer) write() {
	if d.err == nil {
		_, d.err = d.w.Write(d.b)
	}
	d.b = d.b[:0]
}

func (d *dumpBuffer) flush() error {
	d.write()
	if d.err == nil {
		d.err = d.w.Flush()
	}
	return d.err
}

// appendQuoted appends s as a JSON string, which is also a valid YAML
// double-quoted scalar.
func appendQuoted[S ~string | ~[]byte](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendNextHopFields appends the five nexthop fields, each written as its
// name followed by colon and the value, and preceded by first (the first
// field) or sep (the others).
func appendNextHopFields(b []byte, nh route.NextHop, first, sep, colon string) []byte {
	b = append(b, first...)
	b = append(b, "TargetAddress"...)
	b = append(b, colon...)
	b = append(b, '"')
	b = nh.Address.AppendTo(b)
	b = append(b, '"')
	for _, f := range [...]struct {
		name string
		v    uint64
	}{
		{"TargetVNI", uint64(nh.TargetVNI)},
		{"Type", uint64(nh.Type)},
		{"NATPortRangeFrom", uint64(nh.NATPortFrom)},
		{"NATPortRangeTo", uint64(nh.NATPortTo)},
	} {
		b = append(b, sep...)
		b = append(b, f.name...)
		b = append(b, colon...)
		b = strconv.AppendUint(b, f.v, 10)
	}
	return b
}

// jsonDumper writes the dump as indented JSON.
type jsonDumper struct{ dumpBuffer }

func (d *jsonDumper) begin(date, _ string) {
	d.b = append(d.b, "{\n  \"date\": "...)
	d.b = appendQuoted(d.b, date)
	d.b = append(d.b, ",\n  \"vnet\": {"...)
}

func (d *jsonDumper) vni(vni route.VNI, first bool) {
	if !first {
		d.b = append(d.b, ',')
	}
	d.b = append(d.b, "\n    \""...)
	d.b = strconv.AppendUint(d.b, uint64(vni), 10)
	d.b = append(d.b, "\": {"...)
}

func (d *jsonDumper) destination(key []byte, first bool) {
	if !first {
		d.b = append(d.b, ',')
	}
	d.b = append(d.b, "\n      "...)
	d.b = appendQuoted(d.b, key)
	d.b = append(d.b, ": ["...)
}

func (d *jsonDumper) nexthop(nh route.NextHop, first bool) {
	if !first {
		d.b = append(d.b, ',')
	}
	d.b = appendNextHopFields(d.b, nh, "\n        {\"", ", \"", "\": ")
	d.b = append(d.b, '}')
	d.emit()
}

func (d *jsonDumper) endDestination() { d.b = append(d.b, "\n      ]"...) }
func (d *jsonDumper) endVNI()         { d.b = append(d.b, "\n    }"...) }

func (d *jsonDumper) end(version string) {
	d.b = append(d.b, "\n  },\n  \"metalbondVersion\": "...)
	d.b = appendQuoted(d.b, version)
	d.b = append(d.b, "\n}\n"...)
}

// yamlDumper writes the dump as block-style YAML with the same structure
// as the JSON: VNI keys are strings, destination keys the same JSON text.
type yamlDumper struct {
	dumpBuffer
	empty bool // no VNI written yet
}

func (d *yamlDumper) begin(date, _ string) {
	d.b = append(d.b, "date: "...)
	d.b = appendQuoted(d.b, date)
	d.b = append(d.b, "\nvnet:"...)
	d.empty = true
}

func (d *yamlDumper) vni(vni route.VNI, _ bool) {
	d.empty = false
	d.b = append(d.b, "\n  \""...)
	d.b = strconv.AppendUint(d.b, uint64(vni), 10)
	d.b = append(d.b, "\":"...)
}

func (d *yamlDumper) destination(key []byte, _ bool) {
	// Destination keys are JSON text without single quotes: a YAML
	// single-quoted scalar keeps them readable.
	d.b = append(d.b, "\n    '"...)
	d.b = append(d.b, key...)
	d.b = append(d.b, "':"...)
}

func (d *yamlDumper) nexthop(nh route.NextHop, _ bool) {
	d.b = appendNextHopFields(d.b, nh, "\n      - ", "\n        ", ": ")
	d.emit()
}

func (d *yamlDumper) endDestination() {}
func (d *yamlDumper) endVNI()         {}

func (d *yamlDumper) end(version string) {
	if d.empty {
		d.b = append(d.b, " {}"...)
	}
	d.b = append(d.b, "\nmetalbondVersion: "...)
	d.b = appendQuoted(d.b, version)
	d.b = append(d.b, '\n')
}
