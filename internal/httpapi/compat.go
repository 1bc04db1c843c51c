package httpapi

import (
	"bufio"
	"encoding/json"
	"io"
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

// compatNextHop is one nexthop of the historical dump; the field names are
// part of the format.
type compatNextHop struct {
	TargetAddress    string
	TargetVNI        uint32
	Type             uint8
	NATPortRangeFrom uint16
	NATPortRangeTo   uint16
}

// compatDestination is the key of a destination, itself JSON text.
type compatDestination struct {
	IPVersion int
	Prefix    string
}

func destinationKey(r route.Route) string {
	v := 4
	if r.Prefix.Addr().Is6() {
		v = 6
	}
	b, _ := json.Marshal(compatDestination{IPVersion: v, Prefix: r.Prefix.String()})
	return string(b)
}

// compatDumper writes the dump in JSON or YAML.
type compatDumper interface {
	begin(date, version string)
	vni(vni route.VNI, first bool)
	destination(key string, first bool)
	nexthop(nh compatNextHop, first bool)
	endDestination()
	endVNI()
	end(version string)
}

// dumpCompat walks the table in order and drives d.
func (h *handler) dumpCompat(d compatDumper) {
	version := h.opts.Version
	d.begin(time.Now().Format(compatDateLayout), version)
	firstVNI := true
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
				d.destination(destinationKey(ri.Route), i == 0)
			}
			nh := ri.NextHop
			d.nexthop(compatNextHop{
				TargetAddress:    nh.Address.String(),
				TargetVNI:        uint32(nh.TargetVNI),
				Type:             uint8(nh.Type),
				NATPortRangeFrom: nh.NATPortFrom,
				NATPortRangeTo:   nh.NATPortTo,
			}, newDest)
		}
		d.endDestination()
		d.endVNI()
	}
	d.end(version)
}

func (h *handler) compatJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(w, 64<<10)
	h.dumpCompat(&jsonDumper{w: bw})
	if err := bw.Flush(); err != nil {
		h.log.Debug("http: write response", "err", err)
	}
}

func (h *handler) compatYAML(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(w, 64<<10)
	h.dumpCompat(&yamlDumper{w: bw})
	if err := bw.Flush(); err != nil {
		h.log.Debug("http: write response", "err", err)
	}
}

// quote returns s as a JSON string, which is also a valid YAML
// double-quoted scalar.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// jsonDumper writes the dump as indented JSON.
type jsonDumper struct{ w io.StringWriter }

func (d *jsonDumper) begin(date, _ string) {
	d.w.WriteString("{\n  \"date\": " + quote(date) + ",\n  \"vnet\": {")
}

func (d *jsonDumper) vni(vni route.VNI, first bool) {
	if !first {
		d.w.WriteString(",")
	}
	d.w.WriteString("\n    " + quote(vni.String()) + ": {")
}

func (d *jsonDumper) destination(key string, first bool) {
	if !first {
		d.w.WriteString(",")
	}
	d.w.WriteString("\n      " + quote(key) + ": [")
}

func (d *jsonDumper) nexthop(nh compatNextHop, first bool) {
	if !first {
		d.w.WriteString(",")
	}
	d.w.WriteString("\n        {\"TargetAddress\": " + quote(nh.TargetAddress) +
		", \"TargetVNI\": " + strconv.FormatUint(uint64(nh.TargetVNI), 10) +
		", \"Type\": " + strconv.Itoa(int(nh.Type)) +
		", \"NATPortRangeFrom\": " + strconv.Itoa(int(nh.NATPortRangeFrom)) +
		", \"NATPortRangeTo\": " + strconv.Itoa(int(nh.NATPortRangeTo)) + "}")
}

func (d *jsonDumper) endDestination() { d.w.WriteString("\n      ]") }
func (d *jsonDumper) endVNI()         { d.w.WriteString("\n    }") }

func (d *jsonDumper) end(version string) {
	d.w.WriteString("\n  },\n  \"metalbondVersion\": " + quote(version) + "\n}\n")
}

// yamlDumper writes the dump as block-style YAML with the same structure
// as the JSON: VNI keys are strings, destination keys the same JSON text.
type yamlDumper struct {
	w     io.StringWriter
	empty bool // no VNI written yet
}

func (d *yamlDumper) begin(date, _ string) {
	d.w.WriteString("date: " + quote(date) + "\nvnet:")
	d.empty = true
}

func (d *yamlDumper) vni(vni route.VNI, _ bool) {
	d.empty = false
	d.w.WriteString("\n  " + quote(vni.String()) + ":")
}

func (d *yamlDumper) destination(key string, _ bool) {
	// Destination keys are JSON text without single quotes: a YAML
	// single-quoted scalar keeps them readable.
	d.w.WriteString("\n    '" + key + "':")
}

func (d *yamlDumper) nexthop(nh compatNextHop, _ bool) {
	d.w.WriteString("\n      - TargetAddress: " + quote(nh.TargetAddress) +
		"\n        TargetVNI: " + strconv.FormatUint(uint64(nh.TargetVNI), 10) +
		"\n        Type: " + strconv.Itoa(int(nh.Type)) +
		"\n        NATPortRangeFrom: " + strconv.Itoa(int(nh.NATPortRangeFrom)) +
		"\n        NATPortRangeTo: " + strconv.Itoa(int(nh.NATPortRangeTo)))
}

func (d *yamlDumper) endDestination() {}
func (d *yamlDumper) endVNI()         {}

func (d *yamlDumper) end(version string) {
	if d.empty {
		d.w.WriteString(" {}")
	}
	d.w.WriteString("\nmetalbondVersion: " + quote(version) + "\n")
}
