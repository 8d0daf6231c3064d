// A Go client for upstream's current mq9 protocol (SPEC §4b) that puts the same bytes on the wire
// as upstream's Go SDK (module github.com/robustmq/mq9/go, go/client.go at commit 5152c4f) and
// reads replies the way it does.
//
// The SDK itself is not served by the Go module proxy this project can reach (every version and
// the version list are refused), so this file stands in for it. It was written from the SDK's
// documented behaviour, not copied; what matters is that the requests are the SDK's:
//   - request bodies are Go maps marshalled by encoding/json (so keys are sorted), with the SDK's
//     fields: FETCH always sends group_name (""), deliver, from_time, from_id, force_deliver and
//     config{num_msgs, max_wait_ms}; QUERY sends only key/limit/since when set (no tags); DISCOVER
//     always sends limit (20) and page (1); CREATE sends ttl always and name when not empty;
//   - SEND sets mq9-priority only for a non-normal priority, mq9-delay/mq9-ttl only when > 0,
//     mq9-tags comma-joined; DELETE sends an empty body;
//   - every reply is decoded as {"error": string}: a non-empty error is a failure; FETCH/QUERY
//     payloads are base64-decoded (StdEncoding; raw text if that fails), msg_id and create_time
//     are int64, an empty priority reads as normal.
//
// Swapping in the real SDK when it can be had is a change to this file only: the runner in
// main.go uses the method set below, which matches the SDK's.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

type Priority string

const (
	PriorityNormal   Priority = "normal"
	PriorityUrgent   Priority = "urgent"
	PriorityCritical Priority = "critical"
)

type Message struct {
	MsgID      int64
	Payload    []byte
	Priority   Priority
	CreateTime int64 // Unix seconds
}

type SendOptions struct {
	Priority Priority
	Key      string
	Delay    int64
	TTL      int64
	Tags     []string
}

type FetchOptions struct {
	GroupName    string
	Deliver      string
	FromTime     int64
	FromID       int64
	ForceDeliver bool
	NumMsgs      int
	MaxWaitMs    int64
}

// ServerError is a reply whose "error" was not empty.
type ServerError struct{ Text string }

func (e *ServerError) Error() string { return "mq9: " + e.Text }

type Client struct {
	nc      *nats.Conn
	timeout time.Duration
	// LastReply is the raw body of the last reply received, for the test to check its exact shape.
	LastReply []byte
}

func Connect(url string) (*Client, error) {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(2*time.Second))
	if err != nil {
		return nil, fmt.Errorf("mq9: connect: %w", err)
	}
	return &Client{nc: nc, timeout: 5 * time.Second}, nil
}

func (c *Client) Close() error { return c.nc.Drain() }

const prefix = "$mq9.AI"

// do sends one request message and checks the reply's "error" field.
func (c *Client) do(ctx context.Context, msg *nats.Msg) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	c.LastReply = nil
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("mq9: request %s: %w", msg.Subject, err)
	}
	c.LastReply = reply.Data
	var head struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &head); err != nil {
		return nil, fmt.Errorf("mq9: decode reply: %w", err)
	}
	if head.Error != "" {
		return nil, &ServerError{Text: head.Error}
	}
	return reply.Data, nil
}

func (c *Client) doJSON(ctx context.Context, subject string, body any) ([]byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("mq9: marshal request: %w", err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	return c.do(ctx, msg)
}

func (c *Client) MailboxCreate(ctx context.Context, name string, ttl int64) (string, error) {
	body := map[string]any{"ttl": ttl}
	if name != "" {
		body["name"] = name
	}
	data, err := c.doJSON(ctx, prefix+".MAILBOX.CREATE", body)
	if err != nil {
		return "", err
	}
	var out struct {
		MailAddress string `json:"mail_address"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return "", fmt.Errorf("mq9: decode create reply: %w", err)
	}
	return out.MailAddress, nil
}

func (c *Client) Send(ctx context.Context, addr string, payload []byte, o SendOptions) (int64, error) {
	msg := nats.NewMsg(prefix + ".MSG.SEND." + addr)
	msg.Data = payload
	if o.Priority != "" && o.Priority != PriorityNormal {
		msg.Header.Set("mq9-priority", string(o.Priority))
	}
	if o.Key != "" {
		msg.Header.Set("mq9-key", o.Key)
	}
	if o.Delay > 0 {
		msg.Header.Set("mq9-delay", fmt.Sprint(o.Delay))
	}
	if o.TTL > 0 {
		msg.Header.Set("mq9-ttl", fmt.Sprint(o.TTL))
	}
	if len(o.Tags) > 0 {
		msg.Header.Set("mq9-tags", strings.Join(o.Tags, ","))
	}
	data, err := c.do(ctx, msg)
	if err != nil {
		return 0, err
	}
	var out struct {
		MsgID int64 `json:"msg_id"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, fmt.Errorf("mq9: decode send reply: %w", err)
	}
	return out.MsgID, nil
}

func decodeMessages(data []byte) ([]Message, error) {
	var out struct {
		Messages []struct {
			MsgID      int64  `json:"msg_id"`
			Payload    string `json:"payload"`
			Priority   string `json:"priority"`
			CreateTime int64  `json:"create_time"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("mq9: decode messages: %w", err)
	}
	msgs := make([]Message, 0, len(out.Messages))
	for _, m := range out.Messages {
		payload, err := base64.StdEncoding.DecodeString(m.Payload)
		if err != nil {
			payload = []byte(m.Payload)
		}
		p := Priority(m.Priority)
		if p == "" {
			p = PriorityNormal
		}
		msgs = append(msgs, Message{MsgID: m.MsgID, Payload: payload, Priority: p, CreateTime: m.CreateTime})
	}
	return msgs, nil
}

func (c *Client) Fetch(ctx context.Context, addr string, o FetchOptions) ([]Message, error) {
	deliver, num, wait := o.Deliver, o.NumMsgs, o.MaxWaitMs
	if deliver == "" {
		deliver = "latest"
	}
	if num == 0 {
		num = 100
	}
	if wait == 0 {
		wait = 500
	}
	body := map[string]any{
		"group_name": o.GroupName, "deliver": deliver, "from_time": o.FromTime, "from_id": o.FromID,
		"force_deliver": o.ForceDeliver, "config": map[string]any{"num_msgs": num, "max_wait_ms": wait},
	}
	data, err := c.doJSON(ctx, prefix+".MSG.FETCH."+addr, body)
	if err != nil {
		return nil, err
	}
	return decodeMessages(data)
}

func (c *Client) Ack(ctx context.Context, addr, group string, msgID int64) error {
	_, err := c.doJSON(ctx, prefix+".MSG.ACK."+addr,
		map[string]any{"group_name": group, "mail_address": addr, "msg_id": msgID})
	return err
}

func (c *Client) Query(ctx context.Context, addr, key string, limit, since int64) ([]Message, error) {
	body := map[string]any{}
	if key != "" {
		body["key"] = key
	}
	if limit > 0 {
		body["limit"] = limit
	}
	if since > 0 {
		body["since"] = since
	}
	data, err := c.doJSON(ctx, prefix+".MSG.QUERY."+addr, body)
	if err != nil {
		return nil, err
	}
	return decodeMessages(data)
}

// QueryTags is beyond the Go SDK (its Query has no tags parameter): protocol.md's `tags` filter,
// sent the way the other SDKs send it, as a JSON list.
func (c *Client) QueryTags(ctx context.Context, addr string, tags []string, limit int64) ([]Message, error) {
	body := map[string]any{"tags": tags}
	if limit > 0 {
		body["limit"] = limit
	}
	data, err := c.doJSON(ctx, prefix+".MSG.QUERY."+addr, body)
	if err != nil {
		return nil, err
	}
	return decodeMessages(data)
}

func (c *Client) Delete(ctx context.Context, addr string, msgID int64) error {
	msg := nats.NewMsg(fmt.Sprintf("%s.MSG.DELETE.%s.%d", prefix, addr, msgID))
	msg.Data = []byte{}
	_, err := c.do(ctx, msg)
	return err
}

func (c *Client) AgentRegister(ctx context.Context, card map[string]any) error {
	_, err := c.doJSON(ctx, prefix+".AGENT.REGISTER", card)
	return err
}

func (c *Client) AgentUnregister(ctx context.Context, mailbox string) error {
	_, err := c.doJSON(ctx, prefix+".AGENT.UNREGISTER", map[string]any{"mailbox": mailbox})
	return err
}

func (c *Client) AgentReport(ctx context.Context, report map[string]any) error {
	_, err := c.doJSON(ctx, prefix+".AGENT.REPORT", report)
	return err
}

func (c *Client) AgentDiscover(ctx context.Context, text, semantic string, limit, page int) ([]map[string]any, error) {
	body := map[string]any{"limit": 20, "page": 1}
	if text != "" {
		body["text"] = text
	}
	if semantic != "" {
		body["semantic"] = semantic
	}
	if limit > 0 {
		body["limit"] = limit
	}
	if page > 0 {
		body["page"] = page
	}
	data, err := c.doJSON(ctx, prefix+".AGENT.DISCOVER", body)
	if err != nil {
		return nil, err
	}
	var out struct {
		Agents []map[string]any `json:"agents"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("mq9: decode discover reply: %w", err)
	}
	if out.Agents == nil {
		out.Agents = []map[string]any{}
	}
	return out.Agents, nil
}
