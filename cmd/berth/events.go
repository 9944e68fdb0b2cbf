package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	// Registers containerd's event payloads (containerd.events.*) for typeurl.
	_ "github.com/containerd/containerd/api/events"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Aliases:   []string{"event"},
		Usage:     "print berthd's events as they happen: TIMESTAMP NAMESPACE TOPIC EVENT",
		ArgsUsage: "[FILTER…]",
		Description: `Events of all namespaces are printed, one a line, until interrupted. Filters use
	containerd's filter language over the envelope, e.g. namespace==default, topic~=^/containers/
	or event.id==web.`,
		Flags:  []cli.Flag{jsonFlag()},
		Action: eventsAction,
	}
}

// eventView is an event as --json prints it, one object a line.
type eventView struct {
	Timestamp *time.Time      `json:"timestamp,omitempty"`
	Namespace string          `json:"namespace"`
	Topic     string          `json:"topic"`
	Type      string          `json:"type,omitempty"`
	Event     json.RawMessage `json:"event,omitempty"`
}

func newEventView(e *types.Envelope) eventView {
	return eventView{
		Timestamp: jsonTime(e.GetTimestamp()),
		Namespace: e.GetNamespace(),
		Topic:     e.GetTopic(),
		Type:      e.GetEvent().GetTypeUrl(),
		Event:     anyJSON(e.GetEvent()),
	}
}

// writeEvent prints one event: "TIMESTAMP NAMESPACE TOPIC EVENT-JSON", or a JSON object.
func writeEvent(w io.Writer, e *types.Envelope, asJSON bool) error {
	v := newEventView(e)
	if asJSON {
		return printJSONLine(w, v)
	}
	ts := formatTime(e.GetTimestamp())
	if ts == "" {
		ts = "-"
	}
	payload := string(v.Event)
	if payload == "" {
		payload = "{}"
	}
	_, err := fmt.Fprintf(w, "%s %s %s %s\n", ts, v.Namespace, v.Topic, payload)
	return err
}

// eventsAction calls Events.Subscribe with the arguments as filters and prints each event as
// it arrives, until interrupted or the daemon goes away.
func eventsAction(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	stream, err := eventsapi.NewEventsClient(cl.conn).Subscribe(ctx,
		&eventsapi.SubscribeRequest{Filters: c.Args().Slice()})
	if err != nil {
		return cl.fail(err, "subscribe to", object{kind: "events"})
	}
	asJSON := wantJSON(c)
	for {
		e, err := stream.Recv()
		if err != nil {
			if c.Context.Err() != nil { // interrupted: the normal end
				return nil
			}
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Unavailable {
				return fmt.Errorf("berthd at %s ended the event stream: is it shutting down? (run berth events again once it is back)", cl.address)
			}
			return cl.fail(err, "subscribe to", object{kind: "events"})
		}
		if err := writeEvent(c.App.Writer, e, asJSON); err != nil {
			return err
		}
	}
}
