"""Every -ERR text the NATS front-end sends, spelled as nats-server spells them."""

UNKNOWN_OP = "Unknown Protocol Operation"
MAX_PAYLOAD = "Maximum Payload Violation"
MAX_CONTROL_LINE = "maximum control line exceeded"  # nats-server 2.10+ spells it in lowercase
INVALID_SUBJECT = "Invalid Subject"
INVALID_PUB_SUBJECT = "Invalid Publish Subject"
AUTH_VIOLATION = "Authorization Violation"
AUTH_TIMEOUT = "Authentication Timeout"
STALE = "Stale Connection"
SLOW_CONSUMER = "Slow Consumer"
NO_RESPONDERS_REQUIRES_HEADERS = "no responders requires headers support"
BAD_CLIENT_PROTOCOL = "invalid client protocol"  # CONNECT with a protocol other than 0 or 1


# why nats-server closed a connection, as /connz?state=closed shows it (its ClosedState names),
# by the -ERR text the close was sent with; None (a silent close) is a parse error there too
CLOSE_REASONS = {
    STALE: "Stale Connection",
    AUTH_TIMEOUT: "Authentication Timeout",
    AUTH_VIOLATION: "Authentication Failure",
    MAX_PAYLOAD: "Maximum Message Payload Exceeded",
    MAX_CONTROL_LINE: "Maximum Control Line Exceeded",
    BAD_CLIENT_PROTOCOL: "Bad Client Protocol Version",
    UNKNOWN_OP: "Parse Error",
    None: "Parse Error",
}
CLOSED_BY_CLIENT = "Client Closed"
CLOSED_SLOW_CONSUMER = "Slow Consumer (Pending Bytes)"
CLOSED_OTHER = "Protocol Violation"


# Arguments nats-server cannot parse (PUB/HPUB/SUB/UNSUB with bad fields, unparsable CONNECT JSON)
# close the connection without an -ERR; we do the same so clients see identical behaviour.
SILENT_CLOSE = None


def permissions_sub(subject: str) -> str:
    return f'Permissions Violation for Subscription to "{subject}"'


def permissions_pub(subject: str) -> str:
    return f'Permissions Violation for Publish to "{subject}"'


def permissions_reply(reply: str) -> str:
    return f'Permissions Violation for Publish with Reply of "{reply}"'


def err_line(text: str) -> bytes:
    return f"-ERR '{text}'\r\n".encode()
