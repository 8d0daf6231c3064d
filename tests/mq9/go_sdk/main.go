// mq9-go-sdk-check: runs a script of mq9 commands through the Go client in wire.go and prints
// what the client saw, for tests/mq9/test_go_sdk.py.
//
//	mq9-go-sdk-check <nats-url> '<json list of steps>'
//
// Each step is an object with "op" and that op's fields; a string "@N" anywhere in a step is
// replaced by the value step N returned (an address, a msg_id). The output is one JSON list with,
// per step, {"op", "value", "error", "raw"}: "error" is the client's error text ("" on success) and
// "raw" the reply body exactly as received. A failing step does not stop the script.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
)

type step struct {
	Op         string         `json:"op"`
	Name       string         `json:"name"`
	TTL        int64          `json:"ttl"`
	Addr       string         `json:"addr"`
	Payload    string         `json:"payload"`
	PayloadB64 string         `json:"payload_b64"`
	Priority   string         `json:"priority"`
	Key        string         `json:"key"`
	Delay      int64          `json:"delay"`
	Tags       []string       `json:"tags"`
	Group      string         `json:"group"`
	Deliver    string         `json:"deliver"`
	FromTime   int64          `json:"from_time"`
	FromID     int64          `json:"from_id"`
	Force      bool           `json:"force"`
	Num        int            `json:"num"`
	WaitMs     int64          `json:"wait_ms"`
	MsgID      int64          `json:"msg_id"`
	Limit      int64          `json:"limit"`
	Since      int64          `json:"since"`
	Card       map[string]any `json:"card"`
	Mailbox    string         `json:"mailbox"`
	Text       string         `json:"text"`
	Semantic   string         `json:"semantic"`
	Page       int            `json:"page"`
	Count      int            `json:"count"`
	TimeoutMs  int64          `json:"timeout_ms"`
	Ms         int64          `json:"ms"`
}

type result struct {
	Op    string          `json:"op"`
	Value any             `json:"value"`
	Error string          `json:"error"`
	Raw   json.RawMessage `json:"raw"`
}

type outMsg struct {
	MsgID      int64  `json:"msg_id"`
	PayloadB64 string `json:"payload_b64"`
	Priority   string `json:"priority"`
	CreateTime int64  `json:"create_time"`
}

func messages(ms []Message) []outMsg {
	out := make([]outMsg, 0, len(ms))
	for _, m := range ms {
		out = append(out, outMsg{m.MsgID, base64.StdEncoding.EncodeToString(m.Payload), string(m.Priority), m.CreateTime})
	}
	return out
}

var ref = regexp.MustCompile(`^@(\d+)$`)

// resolve replaces "@N" strings by the value of step N.
func resolve(v any, results []result) any {
	switch x := v.(type) {
	case string:
		if m := ref.FindStringSubmatch(x); m != nil {
			i, _ := strconv.Atoi(m[1])
			if i < len(results) {
				return results[i].Value
			}
		}
		return x
	case map[string]any:
		for k, e := range x {
			x[k] = resolve(e, results)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = resolve(e, results)
		}
		return x
	}
	return v
}

func run(ctx context.Context, c *Client, s step) (any, error) {
	switch s.Op {
	case "create":
		return c.MailboxCreate(ctx, s.Name, s.TTL)
	case "send":
		payload := []byte(s.Payload)
		if s.PayloadB64 != "" {
			var err error
			if payload, err = base64.StdEncoding.DecodeString(s.PayloadB64); err != nil {
				return nil, err
			}
		}
		return c.Send(ctx, s.Addr, payload, SendOptions{Priority: Priority(s.Priority), Key: s.Key,
			Delay: s.Delay, TTL: s.TTL, Tags: s.Tags})
	case "fetch":
		ms, err := c.Fetch(ctx, s.Addr, FetchOptions{GroupName: s.Group, Deliver: s.Deliver,
			FromTime: s.FromTime, FromID: s.FromID, ForceDeliver: s.Force, NumMsgs: s.Num, MaxWaitMs: s.WaitMs})
		return messages(ms), err
	case "ack":
		return nil, c.Ack(ctx, s.Addr, s.Group, s.MsgID)
	case "consume":
		// the SDK's Consume loop with AutoAck: fetch, handle, ack each message; bounded here by a
		// message count and a deadline
		var got []Message
		deadline := time.Now().Add(time.Duration(s.TimeoutMs) * time.Millisecond)
		for len(got) < s.Count && time.Now().Before(deadline) {
			ms, err := c.Fetch(ctx, s.Addr, FetchOptions{GroupName: s.Group, Deliver: s.Deliver,
				NumMsgs: s.Num, MaxWaitMs: s.WaitMs})
			if err != nil {
				return messages(got), err
			}
			for _, m := range ms {
				got = append(got, m)
				if err := c.Ack(ctx, s.Addr, s.Group, m.MsgID); err != nil {
					return messages(got), err
				}
			}
		}
		return messages(got), nil
	case "query":
		var ms []Message
		var err error
		if len(s.Tags) > 0 {
			ms, err = c.QueryTags(ctx, s.Addr, s.Tags, s.Limit)
		} else {
			ms, err = c.Query(ctx, s.Addr, s.Key, s.Limit, s.Since)
		}
		return messages(ms), err
	case "delete":
		return nil, c.Delete(ctx, s.Addr, s.MsgID)
	case "register":
		return nil, c.AgentRegister(ctx, s.Card)
	case "unregister":
		return nil, c.AgentUnregister(ctx, s.Mailbox)
	case "report":
		return nil, c.AgentReport(ctx, s.Card)
	case "discover":
		return c.AgentDiscover(ctx, s.Text, s.Semantic, int(s.Limit), s.Page)
	case "sleep":
		time.Sleep(time.Duration(s.Ms) * time.Millisecond)
		return nil, nil
	}
	return nil, fmt.Errorf("unknown op %q", s.Op)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mq9-go-sdk-check <nats-url> '<json list of steps>'")
		os.Exit(2)
	}
	var raw []any
	if err := json.Unmarshal([]byte(os.Args[2]), &raw); err != nil {
		fmt.Fprintln(os.Stderr, "bad script:", err)
		os.Exit(2)
	}
	c, err := Connect(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	ctx := context.Background()
	results := make([]result, 0, len(raw))
	for _, r := range raw {
		var s step
		b, _ := json.Marshal(resolve(r, results))
		res := result{}
		if err := json.Unmarshal(b, &s); err != nil {
			res.Error = "bad step: " + err.Error()
		} else {
			res.Op = s.Op
			value, err := run(ctx, c, s)
			res.Value = value
			if err != nil {
				res.Error = err.Error()
			}
			if json.Valid(c.LastReply) {
				res.Raw = append(json.RawMessage(nil), c.LastReply...)
			}
			c.LastReply = nil
		}
		results = append(results, res)
	}
	out, _ := json.Marshal(results)
	fmt.Println(string(out))
}
