"""Data parallelism across processes: MPI (mpi4py) on CPUs, NCCL (cupy.cuda.nccl) on GPUs.

Every rank holds a full copy of the model and computes the gradient of its share of the global
batch; summing the gradients over ranks gives the gradient of the whole batch, so after the
same optimizer step every copy stays equal. A `Communicator` offers what that needs:

    comm = tinyhw.distributed.world()            # 1 rank unless started by mpiexec
    comm.broadcast_parameters(model.state_dict().values())   # start equal (rank 0's)
    ...backward of the local loss, scaled by 1 / global batch...
    comm.allreduce_gradients(model.parameters())  # sum in place, in flat buckets
    loss = comm.allreduce(local_loss_sum)          # a global scalar, the same on every rank

Three backends move the numbers: none for a single process (every collective is the
identity, so one process is simply the 1-rank case), MPI for numpy arrays and Python
objects, and NCCL for cupy arrays once `use_device("gpu")` has created a NCCL communicator
(its unique id is broadcast over MPI, as ChainerMN and Horovod do).

mpi4py is optional (`pip install -e ".[dist]"`). `import tinyhw` never imports this module,
and `world()` imports mpi4py only when an MPI launcher started the process (it sets PMI_SIZE,
OMPI_COMM_WORLD_SIZE, ...): a plain `python -m train.lm` neither needs nor initialises MPI.
"""
import os
import time

import numpy as np

from .backend import _import_cupy, is_cupy_array

# Variables that MPI launchers set in every process they start: MPICH's Hydra and Intel MPI
# (PMI_SIZE, PMI_RANK), Open MPI (OMPI_COMM_WORLD_SIZE), PMIx-based launchers (PMIX_RANK).
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")

# Gradients travel in flat buffers of about this size. Fewer, larger calls are cheaper while
# the all-reduce is not overlapped with the backward pass: on 2 CPU ranks of one machine, the
# small LM's 20 MB took 34-43 ms in 4 MB buckets, 28-30 ms in 16 MB ones (bench/dist.py).
BUCKET_BYTES = 16 * 2**20

_world = None


def launched_by_mpi():
    """True when this process was started by mpiexec/mpirun (or srun with PMI)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _import_mpi():
    """mpi4py's MPI module. Imported on demand because importing it initialises MPI, which a
    single process does not need, and because mpi4py is an optional extra."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "?"
        raise SystemExit(f"error: started by an MPI launcher ({size} processes) but mpi4py "
                         f"cannot be imported ({e}): pip install -e \".[dist]\"") from None
    return MPI


def _import_nccl():
    """cupy's NCCL bindings, which `import cupy` does not load: needed only by several ranks
    on GPUs, so imported then."""
    import cupy.cuda.nccl as nccl
    return nccl


def world():
    """The communicator of this job (created once): MPI's COMM_WORLD under an MPI launcher,
    else the 1-rank communicator."""
    global _world
    if _world is None:
        _world = Communicator(_import_mpi().COMM_WORLD if launched_by_mpi() else None)
    return _world


def rank_seed(seed, rank):
    """A seed for `rank`'s own random stream (dropout), derived from (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


# ---- backends: in-place sum and broadcast of one contiguous array ------------------------
class _Single:
    """One process: the sum over ranks of an array is the array itself."""

    def allreduce_(self, buffer):
        pass

    def broadcast_(self, buffer):
        pass


class _MPI:
    """numpy arrays over MPI. mpi4py reads and writes the array's memory directly (upper-case
    methods: no pickling), and IN_PLACE needs no second buffer."""

    def __init__(self, mpi, comm):
        self.mpi, self.comm = mpi, comm

    def allreduce_(self, buffer):
        self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)

    def broadcast_(self, buffer):
        self.comm.Bcast(buffer, root=0)


class _NCCL:
    """cupy arrays over NCCL, on the current stream (so no host synchronisation is needed:
    later kernels on the stream see the sum)."""

    def __init__(self, mpi_comm, rank, size):
        cupy, nccl = _import_cupy(), _import_nccl()
        if not nccl.available:
            raise SystemExit("error: --device gpu with several ranks needs NCCL, which this "
                             "cupy cannot load")
        self.cupy, self.nccl = cupy, nccl
        uid = nccl.get_unique_id() if rank == 0 else None
        self.comm = nccl.NcclCommunicator(size, mpi_comm.bcast(uid, root=0), rank)
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16,
                      np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64,
                      np.dtype(np.int32): nccl.NCCL_INT32,
                      np.dtype(np.int64): nccl.NCCL_INT64,
                      np.dtype(np.uint8): nccl.NCCL_UINT8}

    def _args(self, buffer):
        return buffer.data.ptr, buffer.size, self.types[np.dtype(buffer.dtype)]

    def allreduce_(self, buffer):
        ptr, count, dtype = self._args(buffer)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(ptr, ptr, count, dtype, self.nccl.NCCL_SUM, stream)

    def broadcast_(self, buffer):
        ptr, count, dtype = self._args(buffer)
        self.comm.bcast(ptr, count, dtype, 0, self.cupy.cuda.get_current_stream().ptr)


# ---- flat gradient buckets ----------------------------------------------------------------
class _Bucket:
    """Consecutive parameters of one device and dtype sharing one flat buffer: one collective
    call moves all their gradients (instead of one call per parameter, each paying latency)."""

    def __init__(self, params):
        self.params = params
        sizes = [int(np.prod(p.shape)) for p in params]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        xp = _import_cupy() if is_cupy_array(params[0].data) else np
        self.buffer = xp.empty(self.bounds[-1], dtype=params[0].dtype)

    def pack(self):
        for p, lo, hi in zip(self.params, self.bounds, self.bounds[1:]):
            if p.grad is None:
                self.buffer[lo:hi] = 0   # no gradient on this rank: it adds nothing to the sum
            else:
                self.buffer[lo:hi] = p.grad.reshape(-1)

    def unpack(self):
        for p, lo, hi in zip(self.params, self.bounds, self.bounds[1:]):
            summed = self.buffer[lo:hi].reshape(p.shape)
            if p.grad is None:
                p.grad = summed.copy()
            else:
                p.grad[...] = summed


def make_buckets(params, bucket_bytes=BUCKET_BYTES):
    """Split `params` (in order) into buckets of at most `bucket_bytes` (a larger parameter
    gets a bucket of its own), each of one device and dtype."""
    buckets, current, size, kind = [], [], 0, None
    for p in params:
        p_kind = (is_cupy_array(p.data), np.dtype(p.dtype))
        nbytes = int(np.prod(p.shape)) * p_kind[1].itemsize
        if current and (p_kind != kind or size + nbytes > bucket_bytes):
            buckets.append(_Bucket(current))
            current, size = [], 0
        current.append(p)
        size, kind = size + nbytes, p_kind
    if current:
        buckets.append(_Bucket(current))
    return buckets


# ---- the communicator ---------------------------------------------------------------------
class Communicator:
    """rank and size of the job, and the collectives data-parallel training needs.

    `mpi_comm`: an mpi4py communicator, or None for a single process (then every collective
    returns its input). `seconds` and `calls` add up the time spent in `allreduce_gradients`
    (packing, the collective and waiting for the slowest rank, unpacking), for benchmarks; on
    GPUs only the time to enqueue the work, which NCCL does on the stream."""

    def __init__(self, mpi_comm=None, bucket_bytes=BUCKET_BYTES):
        self.mpi_comm, self.bucket_bytes = mpi_comm, bucket_bytes
        self.rank, self.size, self.local_rank, self.local_size = 0, 1, 0, 1
        self._cpu, self._gpu = _Single(), None
        if mpi_comm is not None:
            mpi = _import_mpi()
            self._mpi = mpi
            self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
            node = mpi_comm.Split_type(mpi.COMM_TYPE_SHARED)   # the ranks on this machine
            self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
            node.Free()
            self._exit_comm = mpi_comm.Dup()   # for arrive_together, apart from the training's calls
            self._cpu = _MPI(mpi, mpi_comm) if self.size > 1 else _Single()
        self._buckets, self._bucket_key = [], None
        self.seconds, self.calls = 0.0, 0

    @property
    def is_root(self):
        return self.rank == 0

    def use_device(self, device):
        """Call once, on every rank, before the model goes to `device`: with 'gpu', rank r
        takes GPU local_rank % (GPUs on its machine), and several ranks get a NCCL
        communicator for their cupy arrays."""
        if device != "gpu":
            return
        cupy = _import_cupy()
        cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        self._gpu = _NCCL(self.mpi_comm, self.rank, self.size) if self.size > 1 else _Single()

    def _backend(self, array):
        if not is_cupy_array(array):
            return self._cpu
        if self._gpu is None:
            raise RuntimeError("Communicator: call use_device('gpu') before reducing GPU arrays")
        return self._gpu

    # ---- arrays ----
    def broadcast_parameters(self, params):
        """Overwrite, in place, every array (or Tensor's data) of `params` with rank 0's, so
        that all ranks start from the same model. Pass `model.state_dict().values()` to include
        buffers such as batch norm's running statistics."""
        for p in params:
            data = p if isinstance(p, np.ndarray) or is_cupy_array(p) else p.data   # Tensor
            if self.size > 1:
                if not data.flags.c_contiguous:
                    raise ValueError("broadcast_parameters: arrays must be C-contiguous")
                self._backend(data).broadcast_(data.reshape(-1))

    def allreduce_gradients(self, params):
        """Replace each parameter's .grad by its sum over ranks, in place, a bucket of about
        `bucket_bytes` per collective call. Every parameter that requires a gradient takes
        part (all ranks must pass the same list); one whose .grad is None on this rank adds
        zeros and gets the sum (so one that no rank gave a gradient gets zeros, where a single
        process would leave None: the nets here give every parameter a gradient at every
        step). Nothing happens on a single rank."""
        if self.size == 1:
            return
        start = time.perf_counter()
        params = [p for p in params if p.requires_grad]
        key = [(id(p), p.shape, p.dtype, is_cupy_array(p.data)) for p in params]
        if key != self._bucket_key:   # the buffers are made once per parameter list
            self._buckets, self._bucket_key = make_buckets(params, self.bucket_bytes), key
        for bucket in self._buckets:
            bucket.pack()
            self._backend(bucket.buffer).allreduce_(bucket.buffer)
            bucket.unpack()
        self.seconds += time.perf_counter() - start
        self.calls += 1

    # ---- Python values ----
    def allreduce(self, *values, op="sum"):
        """The sum (op='sum') or maximum (op='max') over ranks of each float, as float64 on
        the host: a float for one value, a tuple for several."""
        array = np.array(values, dtype=np.float64)
        if self.size > 1:
            self.mpi_comm.Allreduce(self._mpi.IN_PLACE, array,
                                    op=self._mpi.SUM if op == "sum" else self._mpi.MAX)
        result = tuple(float(v) for v in array)
        return result[0] if len(result) == 1 else result

    def any(self, flag):
        """True on every rank when `flag` is true on at least one."""
        return self.allreduce(float(bool(flag)), op="max") > 0

    def bcast_object(self, obj):
        """Rank 0's `obj` (any picklable value) on every rank."""
        return obj if self.size == 1 else self.mpi_comm.bcast(obj, root=0)

    def gather_object(self, obj):
        """On rank 0 the list of every rank's `obj`, in rank order; None on the others."""
        return [obj] if self.size == 1 else self.mpi_comm.gather(obj, root=0)

    def barrier(self):
        if self.size > 1:
            self.mpi_comm.Barrier()

    def arrive_together(self, timeout_s):
        """True when every rank calls this within `timeout_s` seconds of this rank's call:
        they are all ending the same way. Runs on a communicator of its own, so that it can
        never be matched with a collective call another rank is waiting in."""
        if self.size == 1:
            return True
        request = self._exit_comm.Ibarrier()
        deadline = time.monotonic() + timeout_s
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def abort(self, code=1):
        """End every rank of the job now (after a failure on this rank alone, which would
        otherwise leave the others waiting forever in their next collective)."""
        if self.size > 1:
            self.mpi_comm.Abort(code)
        raise SystemExit(code)
