"""What the entry points need to run as one rank of a data-parallel job.

    python -m train.lm ...                  # one process: the 1-rank case of the same code
    mpiexec -n 2 python -m train.lm ...     # two ranks, each with its share of every batch

Every rank runs the whole program on its share of each global batch (see tinyhw.distributed
for the communicator). Work that must happen once (writing files, scoring the val and test
splits) runs on rank 0 with `on_root`, which hands its result, or its way of failing, to every
rank. Output: ranks other than 0 print nothing (their stdout and stderr go to /dev/null), so
progress bars and messages appear once.

Ending the job: a rank that stops while the others carry on would leave them waiting forever
in their next collective call. So `launch` ends a rank normally only when every rank ends the
same way: a SystemExit that all ranks reach within EXIT_AGREEMENT_S seconds (a bad flag, an
agreed stop after the same step, a divergence seen through the all-reduced loss); any other
failure (an exception on one rank, an exit the others do not share) calls MPI_Abort, which
ends every rank. A rank killed outright (kill -9) is noticed by mpiexec, which ends the others.
"""
import os
import sys
import traceback

from tinyhw import distributed

RANKS_FLAG = "mpiexec -n"   # its key in a checkpoint's meta["flags"]: resume with as many ranks
EXIT_AGREEMENT_S = 60.0


def launch(main):
    """Run `main()` (an entry point's main) as this process's rank of the job."""
    comm = distributed.world()
    if comm.size == 1:
        return main()
    if not comm.is_root:
        quiet = open(os.devnull, "w")
        sys.stdout = sys.stderr = quiet
    try:
        return main()
    except SystemExit as e:
        if e.code in (None, 0) or comm.arrive_together(EXIT_AGREEMENT_S):
            raise   # every rank ends the same way; rank 0 has printed the reason
        code = e.code if isinstance(e.code, int) else 1
        print(f"rank {comm.rank}: {e.code}; ending every rank", file=sys.__stderr__, flush=True)
        comm.abort(code)
    except BaseException:
        text = traceback.format_exc()
        print(f"rank {comm.rank} failed; ending every rank:\n{text}", file=sys.__stderr__,
              flush=True)
        comm.abort(1)


def on_root(comm, compute):
    """`compute()` on rank 0 alone while the others wait; its value on every rank. If it
    raises (a SystemExit, or Interrupted by a signal during an evaluation pass), every rank
    raises the same, so that all of them stop at the same point."""
    if comm.size == 1:
        return compute()
    outcome = None
    if comm.is_root:
        try:
            outcome = (compute(), None)
        except (Exception, SystemExit) as e:   # handed to every rank, raised there
            outcome = (None, e)
    value, error = comm.bcast_object(outcome)
    if error is not None:
        raise error
    return value


def check_batch_split(batch_size, comm, what="--batch-size"):
    """Exit with one line unless the global batch splits evenly across the ranks."""
    if batch_size % comm.size:
        raise SystemExit(f"error: {what} {batch_size} does not split evenly across the "
                         f"{comm.size} ranks of {RANKS_FLAG} {comm.size}: each rank takes an "
                         f"equal share of the global batch")


def my_share(batch_size, comm):
    """The slice of a global batch that this rank computes: a contiguous block."""
    per = batch_size // comm.size
    return slice(comm.rank * per, (comm.rank + 1) * per)



def ranks_note(comm):
    """', 2 ranks' for the line an entry point prints before training ('' for one process)."""
    return f", {comm.size} ranks of {RANKS_FLAG} {comm.size}" if comm.size > 1 else ""
