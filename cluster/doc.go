// Package cluster lets several MetalBond route servers act as one, sharing
// their routes through etcd, so that each client can connect to two or
// three servers of its choice and still learn every route of its VNIs, and
// any server can fail.
//
// Each server runs a Member. The Member writes the routes that the
// server's own peers announce (reported through the metalbond.RouteSink it
// provides) into etcd, in batched transactions, under a lease that it keeps
// alive; and it watches the routes of all other servers with one watch on
// the cluster's key prefix, feeding each server's routes into the local
// server through one metalbond.ExternalSource per server. When a server
// dies its lease expires, etcd deletes its keys, and every other server
// withdraws its routes within the lease TTL.
//
// Life cycle:
//
//	m, err := cluster.New(cluster.Config{Endpoints: []string{"http://etcd-1:2379"}})
//	srv, err := metalbond.NewServer(metalbond.ServerConfig{Sink: m.Sink()})
//	go m.Run(ctx, srv)      // until ctx is done
//	srv.ListenAndServe(ctx, "[::]:4711")
//
// Member.Ready reports whether the member is in sync with etcd; a server
// that loses etcd keeps serving what it has and resyncs when etcd is back.
// See docs/scale-out.md for the key layout, the failure behaviour and the
// measured costs.
package cluster
