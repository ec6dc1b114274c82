"""Named points where a power cut is simulated, for the crash tests (tests/test_crash_recovery.py).

With `TPE_CRASH_AT=<name>` in its environment, the process kills itself with SIGKILL the
`TPE_CRASH_AFTER`-th time (default 1) it reaches the point `<name>`: nothing is flushed, no
handler runs, as when the battery dies. With `TPE_CRASH_TRACE=<file>`, every point reached is
appended to that file, one name per line, for the tests to learn which points a flow goes
through. Without the variables, `reach` does nothing.
"""

from __future__ import annotations

import os
import signal

ENV_POINT = "TPE_CRASH_AT"
ENV_COUNT = "TPE_CRASH_AFTER"
ENV_TRACE = "TPE_CRASH_TRACE"

# Every point, in the order a sale, its reversal and its forwarding go through them.
POINTS = (
    "payment.started",           # the payment committed, nothing sent
    "authorization.committed",   # the reversal committed held, the request not yet sent
    "authorization.sent",        # the request on the wire, no answer yet
    "authorization.answered",    # the answer committed, the card's second GENERATE AC next
    "card.completed",            # the card has finished, its result not yet committed
    "payment.completed",         # the result committed
    "ticket.journalled",         # the approved payment's ticket journalled, not yet recorded on it
    "item.committed",            # a queue item marked sent, not yet on the wire
    "item.sent",                 # a queue item (advice, reversal) on the wire, no answer yet
    "item.answered",             # the host's answer to it committed
    # a firmware flash (provisioning/slots.py)
    "flash.verified",            # the bundle verified, nothing written
    "flash.writing",             # one more file of the new slot written
    "flash.written",             # every file written and synced, not yet read back
    "flash.checked",             # read back and hashed again, the state not yet switched
    "flash.switched",            # the state names the new slot for its trial start
)

_reached: dict[str, int] = {}


def reach(name: str) -> None:
    trace = os.environ.get(ENV_TRACE)
    if trace:
        with open(trace, "a", encoding="ascii") as out:
            out.write(name + "\n")
    target = os.environ.get(ENV_POINT)
    if target is None or target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] >= int(os.environ.get(ENV_COUNT, "1")):
        os.kill(os.getpid(), signal.SIGKILL)
