"""The worker pool of the data stages (synthetic images, masks, HDF5), with a progress bar.

Every stage hands each job everything it needs (a seed, paths, annotations), so a result
does not depend on the process that computed it, nor on the number of workers.
"""
import multiprocessing
import signal

from tqdm import tqdm

from model.machine import usable_cpus


def _ignore_interrupts():
    """Pool worker start: Ctrl-C reaches the whole process group; the parent handles it (and
    terminates the pool), so the workers do not each print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_jobs(fn, jobs, workers=None, desc=None, ordered=True, chunksize=None, min_jobs=1,
             progress=True):
    """Yield fn(job) for every job, in job order when `ordered` (else as they finish).

    workers: processes (None: all cores), never more than there are jobs; fewer than
    `min_jobs` jobs, or one worker, run in this process, where a pool would cost more to
    start than it saves. chunksize: jobs per hand-over (None: about 8 per worker, 1 to 32)."""
    workers = max(1, min(int(workers or usable_cpus()), len(jobs) or 1))
    bar = dict(total=len(jobs), desc=desc, unit="img", mininterval=1.0, disable=not progress)
    if workers == 1 or len(jobs) < min_jobs:
        yield from tqdm(map(fn, jobs), **bar)
        return
    if chunksize is None:
        chunksize = max(1, min(32, len(jobs) // (8 * workers)))
    # spawn, not fork: callers (tests, notebooks) may run TensorFlow or torch threads that a
    # fork would copy in an undefined state.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_ignore_interrupts) as pool:
        mapper = pool.imap if ordered else pool.imap_unordered
        yield from tqdm(mapper(fn, jobs, chunksize=chunksize), **bar)
