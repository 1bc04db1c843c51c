// Package tlsauth secures MetalBond sessions with TLS 1.3 and authorizes
// peers per VNI by the identity in their client certificate.
//
// Plain v1 has no authentication: whoever reaches a route server's port can
// announce routes into any VNI and read every VNI's table. This package
// provides the pieces a metalbond.Server and metalbond.Client need to close
// that hole without changing the v1 protocol inside the TLS channel:
//
//   - Credentials load a certificate, its key and a CA bundle, and give TLS
//     configurations (TLS 1.3 only) that read them at each handshake, so
//     that Reload takes effect for new connections without touching
//     established ones. A server with a CA bundle requires client
//     certificates issued by it (mutual TLS).
//   - Policy is a metalbond.Authorizer read from a YAML authorization file
//     that maps certificate identities to the VNIs they may announce into
//     and subscribe to. Reload swaps it atomically; running sessions obey
//     the new policy from their next message on.
//   - Watch reloads both when a trigger fires (SIGHUP in the command).
//
// # Authorization file
//
//	rules:
//	  - name: tenant-a hypervisors
//	    identities:
//	      - uri:spiffe://dc1.example.net/hypervisor/*
//	      - dns:hv1.dc1.example.net
//	    announce: [100-199, 300]
//	    subscribe: [100-199, 300]
//	  - name: monitoring
//	    identities: [cn:metalbond-monitor]
//	    subscribe: ["*"]
//	default:           # authenticated peers that no rule names
//	  subscribe: [999]
//	unauthenticated:   # plain TCP peers, TLS peers without a client certificate
//	  subscribe: []
//
// An identity is KIND:VALUE, KIND being uri (a URI subject alternative
// name), dns (a DNS SAN, compared without case) or cn (the subject common
// name). A value may hold one "*", which stands for one or more characters
// of any kind. A VNI list holds VNIs, inclusive ranges such as 100-199, and
// "*" for every VNI (quoted: a bare * starts a YAML alias).
//
// A peer gets the union of every rule that names one of its certificate's
// identities; if none does, the default rule; and without a verified
// client certificate, the unauthenticated rule. Omitted lists grant
// nothing, and a peer granted nothing at all is refused when it connects.
// Unknown keys are errors that name them.
//
// # Use
//
//	creds, err := tlsauth.Load(tlsauth.Config{CertFile: "server.pem", KeyFile: "server.key", CAFile: "clients-ca.pem"})
//	policy, err := tlsauth.LoadPolicy("/etc/metalbond/authz.yaml")
//	srv, err := metalbond.NewServer(metalbond.ServerConfig{Authorizer: policy})
//	ln, err := net.Listen("tcp", "[::]:4711")
//	tln, err := creds.NewListener(ln)
//	go tlsauth.Watch(ctx, sighup, log, creds, policy)
//	err = srv.Serve(ctx, tln)
//
// A client dials with Credentials.Dial:
//
//	creds, err := tlsauth.Load(tlsauth.Config{CertFile: "hv1.pem", KeyFile: "hv1.key", CAFile: "servers-ca.pem"})
//	c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: servers, Dial: creds.Dial})
package tlsauth
