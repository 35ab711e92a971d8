"""The helper threads that run the parts of a split (notation/runtime/parallel.py), and the hand-offs to them.

A hand-off on queues alone costs 55-70 us on this VM: most of it is waking a sleeping thread (25-30
us each way).  Where the C flags are built (notation/runtime/fused.c), each hand-off is a flag in shared
memory: a helper done with its part watches for the next one for SPIN_NS, and the caller watches
for the helper's part for WAIT_NS, both spinning without the GIL (ctypes releases it); only after
that does either sleep on a queue, so an idle process does not keep a core busy.  A spinning wait
yields the core every few microseconds; a yield that lets another thread run means the machine is
busy, and then no wait spins for 100 ms (spinning beside two busy processes made a step 2-6x slower).
An empty hand-off takes about 19 us, against 70 on queues.
Without the library the queues carry every hand-off, as before.
"""
from __future__ import annotations

import collections
import queue
import threading

import numpy as np

from . import fused

SPIN_NS = 300_000  # a helper watches for its next part this long after one (a step's splits come closer)
WAIT_NS = 2_000_000  # the caller watches for a helper's part this long before it sleeps on its answer
# A helper that sees its part posted spins this much longer before it asks for the GIL: the caller
# holds it until its own part reaches numpy (a few us), and a thread that asks for a held GIL sleeps
# until it is handed over (25-30 us).  A step at batch 32: -0.5 ms in training, -0.1 ms in inference.
GRACE_NS = 10_000
POSTED, DONE, ASLEEP, AWAITED, WOKE = range(5)  # each helper's flags: its last part posted and done
# (numbered), whether it sleeps on its inbox, whether the caller sleeps on the answer queue, and
# whether the helper found the caller asleep (to wake it)

_PENDING = object()  # a helper's part not yet done


class Crew:
    """Helper threads; the calling thread runs the first part of every split itself.

    With the C flags, helper k's parts wait, numbered, in `parts[k]` (a deque: the caller may post
    again from inside its own part, a nested split); POSTED and DONE hold the numbers of the last
    part posted and done, so a part is done once DONE reaches its number.  Numbers are handed out,
    and sleeping callers listed, under a lock: two threads of a program may split at once."""

    def __init__(self, spin: bool = True):
        self.inboxes, self.flags, self.parts, self.numbers, self.sleepers = [], [], [], [], []
        self.local = threading.local()  # .helper is True on the crew's own threads
        self.lock = threading.Lock()
        self.c = fused.flags() if spin else None  # decided once, when the crew starts: flags or queues
        self.started = []  # (number, answer, outcomes) of each part start() handed to helper 0, in order

    def grow(self, helpers: int) -> None:
        """At least `helpers` helper threads (WORKERS - 1; more if WORKERS was raised since)."""
        while len(self.inboxes) < helpers:
            k = len(self.inboxes)
            flags = np.zeros(16, np.int32)  # 64 bytes: a cache line of its own per helper
            self.inboxes.append(queue.SimpleQueue())
            self.flags.append((flags, [flags.ctypes.data + 4 * f for f in range(5)]))
            self.parts.append(collections.deque())
            self.numbers.append(0)
            self.sleepers.append([])  # the answer queues of callers asleep on helper k
            threading.Thread(target=self._serve, args=(k,), name=f"notation-matmul-{k}", daemon=True).start()

    def _serve(self, k):
        self.local.helper = True
        inbox, (flags, flag), parts, c = self.inboxes[k], self.flags[k], self.parts[k], self.c
        if c is not None:
            c.pool_helper_here()  # while it watches its flags, it takes the pool's spans too (fused.c)
        woke = flag[WOKE]
        posted, came = 0, None  # the last POSTED seen; whether it changed in the last wait (None: not waited)
        while True:
            if c is None:
                number, job = 0, inbox.get()
            elif parts:
                number, job = parts.popleft()
            else:
                if came is None:
                    seen, posted = posted, c.flag_wait(flag[POSTED], posted, SPIN_NS, GRACE_NS)
                    came = posted != seen
                if not came:  # nothing came: sleep, unless a part was posted meanwhile
                    c.flag_exchange(flag[ASLEEP], 1)
                    if not parts:
                        inbox.get()  # a post's wake-up (or an old one: then look again)
                came = None
                continue
            fn, args, answer, outcomes, i = job
            try:
                fn(*args)
                outcomes[i] = None
            except BaseException as e:  # handed back to the caller, raised there
                outcomes[i] = e
            if c is None:
                answer.put(i)  # wakes the caller; the outcome is already in place
                continue
            seen = posted
            posted = c.flag_done_wait(flag[DONE], number, flag[AWAITED], woke, flag[POSTED], posted, SPIN_NS,
                                      GRACE_NS)
            came = posted != seen
            if flags[WOKE]:  # a caller sleeps on its answer queue: wake each to look again
                with self.lock:
                    sleepers, self.sleepers[k] = self.sleepers[k], []
                for answer in sleepers:
                    answer.put(i)

    def wake(self) -> None:
        """Each helper asleep on its inbox woken to watch its flags again, and the pool's spans with them."""
        for k, (flags, flag) in enumerate(self.flags):
            if flags[ASLEEP] and self.c.flag_exchange(flag[ASLEEP], 0):
                self.inboxes[k].put(None)

    def _post(self, k, job) -> int:
        """Hands the job to helper k; its number, done once helper k's DONE reaches it."""
        c = self.c
        if c is None:
            self.inboxes[k].put(job)
            return 0
        _, flag = self.flags[k]
        with self.lock:
            self.numbers[k] += 1  # first: a Ctrl-C before the append skips a number, never repeats one
            number = self.numbers[k]
            self.parts[k].append((number, job))
            c.flag_store(flag[POSTED], number)
        if c.flag_exchange(flag[ASLEEP], 0):
            self.inboxes[k].put(None)
        return number

    def _await(self, k, number, answer) -> None:
        """Until helper k's part `number` is done, or (without the C flags) an answer comes: watching
        its DONE flag for WAIT_NS, then sleeping on the answer queue until the helper wakes it."""
        c = self.c
        if c is None:
            answer.get()
            return
        _, flag = self.flags[k]
        done = c.flag_load(flag[DONE])
        while done < number:
            seen, done = done, c.flag_wait(flag[DONE], done, WAIT_NS, 0)
            if done == seen:
                break  # WAIT_NS passed without a change
        if done >= number:
            return
        with self.lock:
            self.sleepers[k].append(answer)
        c.flag_exchange(flag[AWAITED], 1)
        if c.flag_load(flag[DONE]) < number:
            answer.get()  # the helper's wake-up (after this part or an earlier one: look again)

    def run(self, calls) -> None:
        """fn(*args) for each (fn, args) of calls, the first here, the others on the helpers; raises the
        first error once all are done.  Inside a helper (a nested split), everything runs here.

        A Ctrl-C (KeyboardInterrupt, raised only on the main thread) is raised once every part handed
        to a helper is done.  It can land after `answer.get()` has taken a helper's wake-up and
        before it is kept, so the caller looks at the outcomes the helpers wrote, never counts the
        wake-ups: counting those hung a training run hit by several Ctrl-Cs."""
        if getattr(self.local, "helper", False) or self.busy():
            for fn, args in calls:  # the same parts, one after another: the same bits
                fn(*args)
            return
        answer, handed = queue.SimpleQueue(), calls[1:1 + len(self.inboxes)]
        outcomes, numbers, errors = [_PENDING] * len(handed), [], []
        try:
            for k, (fn, args) in enumerate(handed):
                numbers.append(self._post(k, (fn, args, answer, outcomes, k)))
                # a Ctrl-C before that append leaves that part unwaited for, never a hang
            for fn, args in calls[:1] + calls[1 + len(handed):]:
                try:
                    fn(*args)
                except BaseException as e:
                    errors.append(e)
        except BaseException as interrupt:  # a Ctrl-C between the hand-offs
            errors.insert(0, interrupt)
        for k, number in enumerate(numbers):  # every helper finishes before the caller moves on
            while outcomes[k] is _PENDING:
                try:
                    self._await(k, number, answer)
                except BaseException as interrupt:  # raised once the helpers are done
                    errors.insert(0, interrupt)
        errors += [o for o in outcomes[:len(numbers)] if o is not None]
        if errors:
            raise errors[0]

    def start(self, fn, args) -> None:
        """fn(*args) on helper 0 while the caller goes on, until finish().  Meanwhile the caller's own
        splits run whole here (run()): a part queued behind this one would only wait."""
        answer, outcomes = queue.SimpleQueue(), [_PENDING]
        self.grow(1)
        number = self._post(0, (fn, args, answer, outcomes, 0))
        self.started.append((number, answer, outcomes))

    def busy(self) -> bool:
        """Whether helper 0 still works on a part of start() (they are done in the order posted)."""
        return bool(self.started) and self.started[-1][2][0] is _PENDING

    def finish(self) -> None:
        """Once every part of start() is done: raises the first error of one (or a Ctrl-C meanwhile)."""
        started, errors = self.started, []
        for number, answer, outcomes in started:
            while outcomes[0] is _PENDING:
                try:
                    self._await(0, number, answer)
                except BaseException as interrupt:  # raised once the parts are done
                    errors.insert(0, interrupt)
            if outcomes[0] is not None:
                errors.append(outcomes[0])
        self.started = []
        if errors:
            raise errors[0]
