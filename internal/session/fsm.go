package session

import (
	"errors"
	"fmt"

	"github.com/metalbond/metalbond/internal/wire"
)

// Role says which side of the handshake a session plays.
type Role uint8

const (
	// RoleClient opens the connection and sends the first HELLO.
	RoleClient Role = iota
	// RoleServer accepts the connection and answers the HELLO.
	RoleServer
)

func (r Role) String() string {
	if r == RoleServer {
		return "server"
	}
	return "client"
}

// State is a session state of the v1 protocol.
type State uint8

// The session states of PROTOCOL.md. Connecting and Retry belong to the
// client's dial loop; a Session itself starts in Connecting and ends in Closed.
const (
	StateConnecting State = iota
	StateHelloSent
	StateHelloReceived
	StateEstablished
	StateRetry
	StateClosed
)

var stateNames = [...]string{"CONNECTING", "HELLO_SENT", "HELLO_RECEIVED", "ESTABLISHED", "RETRY", "CLOSED"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ErrProtocol is wrapped by every error caused by a message the peer should
// not have sent in the current state.
var ErrProtocol = errors.New("protocol error")

// action is what the session does after a transition.
type action uint8

const (
	actNone          action = iota
	actSendHello            // server: answer the client's HELLO
	actSendKeepalive        // send a KEEPALIVE
	actEstablished          // the session just became established (may also send)
	actDeliver              // hand the message to the handler
)

// transition is the v1 session FSM as a pure function: given the role, the
// current state and the type of a received message, it returns the next state
// and the actions to take. It never does I/O.
//
// Client:  HELLO_SENT --HELLO--> HELLO_RECEIVED (send KEEPALIVE)
//
//	HELLO_RECEIVED --KEEPALIVE--> ESTABLISHED
//	ESTABLISHED --KEEPALIVE--> ESTABLISHED (the server's answer)
//
// Server:  CONNECTING --HELLO--> HELLO_RECEIVED (send HELLO)
//
//	HELLO_RECEIVED --KEEPALIVE--> ESTABLISHED (send KEEPALIVE)
//	ESTABLISHED --KEEPALIVE--> ESTABLISHED (send KEEPALIVE)
//
// SUBSCRIBE, UNSUBSCRIBE, UPDATE and END_OF_SYNC are delivered only when
// established (END_OF_SYNC only if negotiated; the session checks that).
// Anything else is a protocol error.
// The action lists transition returns. They are shared and must not be
// modified: returning a fresh slice would cost an allocation per message.
var (
	actsSendHello            = []action{actSendHello}
	actsSendKeepalive        = []action{actSendKeepalive}
	actsEstablished          = []action{actEstablished}
	actsKeepaliveEstablished = []action{actSendKeepalive, actEstablished}
	actsDeliver              = []action{actDeliver}
)

func transition(role Role, st State, t wire.Type) (State, []action, error) {
	switch {
	case role == RoleClient && st == StateHelloSent && t == wire.TypeHello:
		return StateHelloReceived, actsSendKeepalive, nil
	case role == RoleClient && st == StateHelloReceived && t == wire.TypeKeepalive:
		return StateEstablished, actsEstablished, nil
	case role == RoleClient && st == StateEstablished && t == wire.TypeKeepalive:
		return st, nil, nil
	case role == RoleServer && st == StateConnecting && t == wire.TypeHello:
		return StateHelloReceived, actsSendHello, nil
	case role == RoleServer && st == StateHelloReceived && t == wire.TypeKeepalive:
		return StateEstablished, actsKeepaliveEstablished, nil
	case role == RoleServer && st == StateEstablished && t == wire.TypeKeepalive:
		return st, actsSendKeepalive, nil
	case st == StateEstablished && (t == wire.TypeSubscribe || t == wire.TypeUnsubscribe || t == wire.TypeUpdate || t == wire.TypeEndOfSync):
		return st, actsDeliver, nil
	}
	return st, nil, fmt.Errorf("%w: unexpected %s in state %s", ErrProtocol, t, st)
}
