"""The one-command demo: a broker, the platform simulator, the service, and a scripted shift of commands.

`campaign-fsm demo` starts a bundled Kafka-protocol broker (by PID, stopped at the end), serves the
simulator with a realistic tenant (twelve campaigns on three dialers: predictive, progressive,
power), runs the real service in-process against both, and publishes a scenario of signed
commands onto the commands topic, one step at a time. Each step waits for what it caused to be
*observed* on the results and events topics (never for a fixed time), with a timeout that names
what did not happen. The steps, in order:

1. shift start: eight campaigns started at once (STANDARD: the dialers' stagger shows);
2. an unsigned command is refused (the demo's key signs everything else);
3. pause and resume of a predictive campaign;
4. a start refused with TRANSITION_IN_FLIGHT because the previous stop has not finished;
5. a locked contact list defers a start (CONTACT_LIST_NOT_READY); released, the start proceeds;
6. a call surge takes a dialer over 80 % of its capacity: a STANDARD start is deferred
   (DIALER_OVER_CAPACITY) while a HIGH one proceeds; the surge subsides and the STANDARD one goes;
7. a predictive stop stalls for 140 s: past any uniform 60 s timeout, still inside its 180 s
   window, so it is not FAILED;
8. a start fails on the platform (FAILED with errors); the fault is cleared and a reset returns
   the campaign to its last stable state; the start is then retried;
9. a stop storm: every campaign still dialing is stopped at once.

Then everything is stopped, the three topics are read back, and `check_situations` decides from
those records alone whether each situation happened; the audit replays `campaign.events` (hash
chain, sequences, last events against `campaign.state`) and writes the HTML report. Exit code 0
only when every situation was seen and the audit is clean.

Profiles (`profile`): `guide` (default) or `genesys`, the platform API the simulator serves and the
service speaks. A step needing an action the running client does not support is skipped with the
reason printed, and its situation is reported not applicable instead of judged (none is today:
genesys pauses and resumes with `off` and `on`). On genesys the failing transition of step 8 is a stop:
Genesys shows no starting status, so a start is `on` at once and its failure only a later observation.

Time is scaled (`speed`): the service and the simulator share the factor, so a 90 s predictive
drain takes 4.5 s at the default speed 20.

Modules: `scenario` (the tenant and the demo's constants), `steps` (the scripted steps), `feed`
(what happens, as it is seen on the topics), `view` (the live view's model; `adapters.devtools.tui`
draws it), `situations` (the judging), `run` (`run_demo`), `command` (`main`: broker, signals, logs).
"""

from .command import main
from .run import DEFAULT_SPEED, DemoOptions, DemoOutcome, run_demo
from .scenario import DEMO_TENANT, PRINCIPAL, demo_tenant
from .situations import SITUATIONS, Situation, check_situations
from .steps import STEPS, StepFailed

__all__ = [
    "DEFAULT_SPEED",
    "DEMO_TENANT",
    "PRINCIPAL",
    "SITUATIONS",
    "STEPS",
    "DemoOptions",
    "DemoOutcome",
    "Situation",
    "StepFailed",
    "check_situations",
    "demo_tenant",
    "main",
    "run_demo",
]
