"""Every -ERR text the NATS front-end sends, spelled as nats-server spells them."""

UNKNOWN_OP = "Unknown Protocol Operation"
MAX_PAYLOAD = "Maximum Payload Violation"
MAX_CONTROL_LINE = "Maximum Control Line Exceeded"
INVALID_SUBJECT = "Invalid Subject"
INVALID_PUB_SUBJECT = "Invalid Publish Subject"
AUTH_VIOLATION = "Authorization Violation"
AUTH_TIMEOUT = "Authentication Timeout"
STALE = "Stale Connection"
SLOW_CONSUMER = "Slow Consumer"


def permissions_sub(subject: str) -> str:
    return f'Permissions Violation for Subscription to "{subject}"'


def permissions_pub(subject: str) -> str:
    return f'Permissions Violation for Publish to "{subject}"'


def err_line(text: str) -> bytes:
    return f"-ERR '{text}'\r\n".encode()
