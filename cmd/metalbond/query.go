package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/metalbond/metalbond/internal/httpapi"
	"github.com/metalbond/metalbond/route"
)

// defaultQueryAddr is where the query commands look for a daemon's HTTP API.
const defaultQueryAddr = "[::1]:4712"

// queryFlags are the flags shared by the query commands.
type queryFlags struct {
	http    string
	output  string
	timeout time.Duration
}

func (q *queryFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&q.http, "http", defaultQueryAddr,
		"HTTP `address` of the running server or client (its --http), HOST:PORT or a URL")
	fs.StringVarP(&q.output, "output", "o", "table", "output `format`: table (for people) or json")
	fs.DurationVar(&q.timeout, "timeout", 10*time.Second, "give up after this long")
}

// check validates the flags and returns the API's base URL.
func (q *queryFlags) check() (*url.URL, error) {
	if q.output != "table" && q.output != "json" {
		return nil, flagError("output", q.output, errors.New("want table or json"))
	}
	if q.timeout <= 0 {
		return nil, flagError("timeout", q.timeout.String(), errors.New("must be positive"))
	}
	return baseURL(q.http)
}

// baseURL turns an --http value (HOST:PORT or http(s)://HOST:PORT/PATH) into
// the base URL of the API.
func baseURL(s string) (*url.URL, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, flagError("http", s, errors.New("want HOST:PORT or an http:// or https:// URL"))
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		return u, nil
	}
	if err := checkAddr(s, false); err != nil {
		return nil, flagError("http", s, err)
	}
	return &url.URL{Scheme: "http", Host: s}, nil
}

// getJSON fetches base+path with query and decodes the JSON body into v.
func getJSON(ctx context.Context, base *url.URL, path string, query url.Values, v any) error {
	u := *base
	u.Path += path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e httpapi.ErrorJSON
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("GET %s: %s: %s", u.String(), resp.Status, e.Error)
		}
		return fmt.Errorf("GET %s: %s", u.String(), resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode response: %w", u.String(), err)
	}
	return nil
}

func newPeersCommand() *cobra.Command {
	var q queryFlags
	cmd := &cobra.Command{
		Use:   "peers [flags]",
		Short: "List the peers of a running server or client",
		Long: `List the sessions of a running metalbond server or client, read from its
HTTP API (--http of the daemon; /api/v1/peers).`,
		Example: `  metalbond peers
  metalbond peers --http [2001:db8::10]:4712 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := q.check()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), q.timeout)
			defer cancel()
			var peers httpapi.PeersJSON
			if err := getJSON(ctx, base, "/api/v1/peers", nil, &peers); err != nil {
				return runtimeError{err}
			}
			out := cmd.OutOrStdout()
			if q.output == "json" {
				return writeJSON(out, peers)
			}
			return runtimeErr(printPeers(out, peers.Peers))
		},
	}
	cmd.Flags().SortFlags = false
	q.register(cmd.Flags())
	return cmd
}

func newRoutesCommand() *cobra.Command {
	var (
		q                    queryFlags
		vni, prefix, nexthop string
	)
	cmd := &cobra.Command{
		Use:   "routes [flags]",
		Short: "List the routes of a running server or client",
		Long: `List the routes known to a running metalbond server (every announced route)
or client (every received route), read from its HTTP API (/api/v1/routes).

--prefix takes a prefix (routes within it), an address (routes containing it)
or any text (routes whose prefix contains it). --nexthop takes an address or
any text matched against the nexthop, such as NAT or LB.`,
		Example: `  metalbond routes --vni 23
  metalbond routes --prefix 10.0.23.7 -o json
  metalbond routes --vni 23 --nexthop 2001:db8::1 --http [2001:db8::10]:4712`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := q.check()
			if err != nil {
				return err
			}
			query := url.Values{}
			if vni != "" {
				v, err := route.ParseVNI(vni)
				if err != nil {
					return flagError("vni", vni, errors.New("want a VNI from 0 to 16777215"))
				}
				query.Set("vni", v.String())
			}
			if prefix != "" {
				query.Set("prefix", prefix)
			}
			if nexthop != "" {
				query.Set("nexthop", nexthop)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), q.timeout)
			defer cancel()
			all, err := fetchRoutes(ctx, base, query)
			if err != nil {
				return runtimeError{err}
			}
			out := cmd.OutOrStdout()
			if q.output == "json" {
				return writeJSON(out, all)
			}
			return runtimeErr(printRoutes(out, all.Routes))
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&vni, "vni", "", "only routes of this `VNI` (default: all VNIs)")
	fs.StringVar(&prefix, "prefix", "", "only routes whose prefix matches: a `prefix`, an address or text")
	fs.StringVar(&nexthop, "nexthop", "", "only routes whose nexthop matches: an `address` or text")
	q.register(fs)
	return cmd
}

// fetchRoutes reads every page of /api/v1/routes.
func fetchRoutes(ctx context.Context, base *url.URL, query url.Values) (httpapi.RoutesJSON, error) {
	all := httpapi.RoutesJSON{Routes: []httpapi.RouteJSON{}}
	query.Set("limit", strconv.Itoa(httpapi.MaxLimit))
	for {
		query.Set("offset", strconv.Itoa(len(all.Routes)))
		var page httpapi.RoutesJSON
		if err := getJSON(ctx, base, "/api/v1/routes", query, &page); err != nil {
			return all, err
		}
		all.Routes = append(all.Routes, page.Routes...)
		all.Total = page.Total
		if len(page.Routes) == 0 || len(all.Routes) >= page.Total {
			break
		}
	}
	all.Limit = len(all.Routes)
	return all, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return runtimeErr(enc.Encode(v))
}

// runtimeErr wraps a non-nil err as a runtime error.
func runtimeErr(err error) error {
	if err == nil {
		return nil
	}
	return runtimeError{err}
}

func printPeers(w io.Writer, peers []httpapi.PeerJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREMOTE\tNAME\tDIRECTION\tSTATE\tUPTIME\tKEEPALIVE\tSUBSCRIPTIONS\tROUTES\tUPDATES IN\tUPDATES OUT\tQUEUE")
	for _, p := range peers {
		uptime := "-"
		if p.EstablishedAt != nil {
			uptime = formatDuration(time.Duration(p.UptimeSeconds * float64(time.Second)))
		}
		keepalive := "-"
		if p.KeepaliveSeconds > 0 {
			keepalive = strconv.FormatFloat(p.KeepaliveSeconds, 'f', -1, 64) + "s"
		}
		state := p.State
		if p.Paced {
			state += " (paced)"
		}
		if p.StaleUntil != nil {
			state += fmt.Sprintf(" (%d held until %s)", p.HeldRoutes, p.StaleUntil.Local().Format("15:04:05"))
		}
		name := cmp.Or(p.Name, p.Identity, "-")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n",
			p.ID, p.Remote, name, p.Direction, state, uptime, keepalive, vniList(p.Subscriptions),
			p.Routes, p.UpdatesReceived, p.UpdatesSent, formatBytes(p.QueueBytes))
	}
	return tw.Flush()
}

func printRoutes(w io.Writer, routes []httpapi.RouteJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VNI\tPREFIX\tNEXTHOP\tTYPE\tTARGET VNI\tNAT PORTS\tFROM")
	for _, r := range routes {
		ports := "-"
		if r.NextHop.Type == route.NextHopNAT.String() {
			ports = fmt.Sprintf("%d-%d", r.NextHop.NATPortFrom, r.NextHop.NATPortTo)
		}
		from := make([]string, 0, len(r.Peers))
		for _, p := range r.Peers {
			f := p.Remote
			if p.Name != "" {
				f = p.Name + "(" + p.Remote + ")"
			}
			if p.HeldUntil != nil {
				f += "(held until " + p.HeldUntil.Local().Format("15:04:05") + ")"
			}
			from = append(from, f)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", r.VNI, r.Prefix, r.NextHop.Address, r.NextHop.Type,
			r.NextHop.TargetVNI, ports, strings.Join(from, ","))
	}
	return tw.Flush()
}

func vniList(vnis []route.VNI) string {
	if len(vnis) == 0 {
		return "-"
	}
	s := make([]string, len(vnis))
	for i, v := range slices.Sorted(slices.Values(vnis)) {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

// formatDuration renders d compactly: 45s, 12m3s, 5h2m, 3d4h.
func formatDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}

// formatBytes renders n bytes compactly: 0, 512B, 1.5KiB, 3.2MiB.
func formatBytes(n int) string {
	switch {
	case n == 0:
		return "0"
	case n < 1<<10:
		return strconv.Itoa(n) + "B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + "KiB"
	}
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB"
}
